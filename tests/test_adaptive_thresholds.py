"""Adaptive pseudo-label thresholds: the mixture fit, the windows, the labeller's use of them, the
config checks, logging and resuming."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from test_trainer import one_batch, student_and_labeler

from softteacher import SoftTeacherTrainer
from softteacher.annotation import saved_labeler_state
from softteacher.config_checks import validate_softteacher_config
from softteacher.modeling import PseudoLabeler, pseudo_labels
from softteacher.modeling.adaptive_thresholds import (
    LabelDistributionThresholds,
    ScoreMixtureThresholds,
    UncertaintyQuantileThreshold,
    fit_two_gaussians,
)
from softteacher.modeling.pseudo_label_stats import as_scalars

from conftest import soft_teacher_cfg


def two_populations(generator, low=(0.2, 0.05, 600), high=(0.85, 0.04, 400)):
    parts = [torch.randn(n, generator=generator) * std + mean for mean, std, n in (low, high)]
    return torch.cat(parts).clamp(0, 1)


def test_mixture_recovers_two_known_populations():
    g = torch.Generator().manual_seed(0)
    values = two_populations(g)
    means, variances, weights = fit_two_gaussians(values[None], torch.ones(1, len(values), dtype=torch.bool))
    assert means[0].tolist() == pytest.approx([0.2, 0.85], abs=0.01)
    assert variances[0].sqrt().tolist() == pytest.approx([0.05, 0.04], abs=0.01)
    assert weights[0].tolist() == pytest.approx([0.6, 0.4], abs=0.02)


def test_mixture_ignores_entries_outside_the_mask():
    g = torch.Generator().manual_seed(1)
    values = two_populations(g)
    padded = torch.cat([values, torch.full((500,), 0.5)])
    valid = torch.arange(len(padded)) < len(values)
    alone, _, _ = fit_two_gaussians(values[None], torch.ones(1, len(values), dtype=torch.bool))
    masked, _, _ = fit_two_gaussians(padded[None], valid[None])
    torch.testing.assert_close(alone, masked)


def test_score_thresholds_per_class_follow_the_high_component_and_the_range():
    g = torch.Generator().manual_seed(2)
    thresholds = ScoreMixtureThresholds(num_classes=3, fixed=0.9, window=1000, min_scores=100, value_range=(0.5, 0.8))
    easy = two_populations(g, high=(0.7, 0.04, 400))   # high mean 0.7: inside the range
    hard = two_populations(g, high=(0.95, 0.02, 400))  # 0.95: clamped to 0.8
    few = torch.full((50,), 0.6)                       # under MIN_SCORES: the fixed 0.9
    scores = torch.cat([easy, hard, few])
    classes = torch.cat([torch.zeros(1000), torch.ones(1000), torch.full((50,), 2)]).long()
    out = thresholds.update(scores, classes)
    assert out[0].item() == pytest.approx(0.7, abs=0.01)
    assert out[1].item() == pytest.approx(0.8)
    assert out[2].item() == pytest.approx(0.9)


def test_score_window_keeps_the_most_recent_scores():
    thresholds = ScoreMixtureThresholds(num_classes=1, fixed=0.9, window=4, min_scores=1, value_range=(0, 1))
    thresholds.update(torch.tensor([0.1, 0.2, 0.3]), torch.zeros(3, dtype=torch.long))
    thresholds.update(torch.tensor([0.4, 0.5, 0.6]), torch.zeros(3, dtype=torch.long))
    window = thresholds.window
    assert int(window.count[0]) == 6 and int(window.filled()[0]) == 4
    assert sorted(window.values[0].tolist()) == pytest.approx([0.3, 0.4, 0.5, 0.6])


def test_uncertainty_threshold_is_the_quantile_of_the_window():
    threshold = UncertaintyQuantileThreshold(pass_fraction=0.25, window=8)
    assert threshold.update(torch.tensor([0.01, 0.02, 0.03, 0.04, 0.05])) == pytest.approx(0.02)
    # 8 most recent: 0.02 .. 0.05 and 0.10 .. 0.40 (0.01 dropped); 25 % quantile by linear interpolation
    value = threshold.update(torch.tensor([0.10, 0.20, 0.30, 0.40]))
    recent = torch.tensor([0.02, 0.03, 0.04, 0.05, 0.10, 0.20, 0.30, 0.40])
    assert value == pytest.approx(float(torch.quantile(recent, 0.25)))
    assert value == pytest.approx(0.0375)


def _detections(scores, classes, size=(64, 64)):
    d = Instances(size)
    n = len(scores)
    d.pred_boxes = Boxes(torch.tensor([[4.0, 4.0, 30.0, 30.0]]).repeat(n, 1))
    d.scores = torch.tensor(scores)
    d.pred_classes = torch.tensor(classes)
    return d


def test_labeler_keeps_by_each_class_threshold_and_adapts_only_on_training_steps(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **{
        "SEMI.ADAPTIVE_SCORE_THRESH.ENABLED": "True", "SEMI.ADAPTIVE_SCORE_THRESH.MIN_SCORES": "2",
        "SEMI.ADAPTIVE_SCORE_THRESH.WINDOW": "10", "SEMI.ADAPTIVE_SCORE_THRESH.RANGE": "(0.5, 0.9)",
        "SEMI.BOX_JITTER": "False",
    })
    _, labeler = student_and_labeler(cfg)
    labeler.thresholds.adaptive_scores.thresholds[:] = torch.tensor([0.6, 0.8, 0.9, 0.9, 0.9])
    raw = [_detections([0.7, 0.7, 0.85, 0.3], [0, 1, 1, 0])]
    labeler.teacher_detections = lambda weak: (raw, None)
    detections, _ = labeler.label([None])  # not a training step: thresholds as they are
    d = detections[0]
    assert d.scores.tolist() == pytest.approx([0.7, 0.7, 0.85])  # 0.3 under PSEUDO_SCORE_THRESH
    assert d.keep_rpn.tolist() == d.keep_cls.tolist() == [True, False, True]
    assert labeler.thresholds.adaptive_scores.window.count.sum() == 0
    labeler.label([None], adapt=True)  # a training step: every detection's score enters the window
    assert labeler.thresholds.adaptive_scores.window.count.tolist() == [2, 2, 0, 0, 0]


def test_labeler_passes_the_least_uncertain_fraction_for_regression(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **{
        "SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH.ENABLED": "True",
        "SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH.PASS_FRACTION": "0.5",
        "SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH.MIN_SCORE": "0.0", "SEMI.PSEUDO_SCORE_THRESH": "0.0",
    })
    _, labeler = student_and_labeler(cfg)
    _, unlabeled = one_batch(cfg)
    torch.manual_seed(0)
    with EventStorage(0):
        _, pairs = labeler(unlabeled)
        stats = as_scalars(pairs)
        detections, _ = labeler.label([u["weak"] for u in unlabeled])
    uncertainty = torch.cat([d.uncertainty for d in detections])
    assert len(uncertainty) > 10
    threshold = labeler.thresholds.current_reg_uncertainty_thresh
    assert stats["semi/reg_uncertainty_thresh"] == pytest.approx(threshold)
    # the threshold is the median of the training step's uncertainties: about half pass
    assert 0.3 < stats["semi/jitter_pass_fraction"] < 0.7
    assert torch.equal(torch.cat([d.keep_reg for d in detections]), uncertainty < threshold)


def test_adaptive_regression_boxes_are_the_less_uncertain_half_of_those_above_the_minimum_score(
    tiny_semi, tmp_path, monkeypatch
):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **{
        "SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH.ENABLED": "True",
        "SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH.MIN_SCORE": "0.5",
        "SEMI.PSEUDO_SCORE_THRESH": "0.0",
    })
    _, labeler = student_and_labeler(cfg)
    scores = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3]
    raw = [_detections(scores, [0] * 6)]
    labeler.teacher_detections = lambda weak: (raw, SimpleNamespace(refine=None))
    uncertainties = torch.tensor([0.05, 0.01, 0.04, 0.02, 0.001, 0.002])  # the two lowest score <= 0.5
    monkeypatch.setattr(pseudo_labels, "jitter_uncertainty", lambda *args: [uncertainties])
    detections, _ = labeler.label([None], adapt=True)
    # the window holds the 4 boxes above 0.5: median of 0.01, 0.02, 0.04, 0.05 = 0.03
    assert labeler.thresholds.current_reg_uncertainty_thresh == pytest.approx(0.03)
    assert detections[0].keep_reg.tolist() == [False, True, False, True, False, False]


def test_adaptive_thresholds_are_logged_per_class_and_resume(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, max_iter=2, **{
        "SEMI.ADAPTIVE_SCORE_THRESH.ENABLED": "True", "SEMI.ADAPTIVE_SCORE_THRESH.MIN_SCORES": "1",
        "SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH.ENABLED": "True", "SEMI.PSEUDO_SCORE_THRESH": "0.0",
        "SEMI.VIS_PERIOD": "0", "TEST.EVAL_PERIOD": "0",
    })
    trainer = SoftTeacherTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    thresholds = trainer.pseudo_labeler.thresholds
    history = trainer.storage.histories()
    for name, value in zip(("disk", "triangle", "rectangle", "star", "cross"), thresholds.adaptive_scores.thresholds):
        assert history[f"semi/score_thresh/{name}"].latest() == pytest.approx(float(value))
    reached = thresholds.current_reg_uncertainty_thresh
    assert history["semi/reg_uncertainty_thresh"].latest() == pytest.approx(reached)
    saved = torch.load(tmp_path / "model_final.pth", weights_only=False)["pseudo_labeler"]
    resumed = SoftTeacherTrainer(cfg)
    resumed.resume_or_load(resume=True)
    state = resumed.pseudo_labeler.state_dict()
    saved_window = saved["score_thresholds"]["window"]["values"]
    torch.testing.assert_close(state["score_thresholds"]["window"]["values"], saved_window)
    torch.testing.assert_close(state["score_thresholds"]["thresholds"], thresholds.adaptive_scores.thresholds)
    assert resumed.pseudo_labeler.thresholds.current_reg_uncertainty_thresh == pytest.approx(reached)
    assert math.isfinite(reached)
    # the tools label with the thresholds training reached; a labeller that saw nothing uses the fixed ones
    fresh = PseudoLabeler(cfg, trainer.teacher)
    assert fresh.thresholds.current_reg_uncertainty_thresh == cfg.SEMI.REG_UNCERTAINTY_THRESH
    assert fresh.thresholds.adaptive_scores.thresholds.tolist() == pytest.approx([cfg.SEMI.CLS_PSEUDO_THRESH] * 5)
    fresh.load_state_dict(saved_labeler_state(str(tmp_path / "model_final.pth")))
    assert fresh.thresholds.current_reg_uncertainty_thresh == pytest.approx(reached)
    torch.testing.assert_close(fresh.thresholds.adaptive_scores.thresholds, thresholds.adaptive_scores.thresholds)


@pytest.mark.parametrize("key, value, words", [
    ("SEMI.ADAPTIVE_SCORE_THRESH.RANGE", "(0.9, 0.5)", "low <= high"),
    ("SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH.PASS_FRACTION", "0.0", "a fraction in (0, 1]"),
    ("SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH.MIN_SCORE", "1.5", "a score threshold in [0, 1]"),
    ("SEMI.ADAPTIVE_SCORE_THRESH.MIN_SCORES", "5000", "at most WINDOW"),
])
def test_bad_adaptive_values_stop_at_start_naming_the_key(tiny_semi, tmp_path, key, value, words):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **{key: value})
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as error:
        validate_softteacher_config(cfg)
    assert words in str(error.value)


@pytest.mark.parametrize("skip", [True, False])
def test_regression_pseudo_boxes_skip_rotated_and_sheared_strong_views(tiny_semi, tmp_path, skip):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **{"SEMI.REG_SKIP_TURNED_VIEWS": str(skip)})
    _, labeler = student_and_labeler(cfg)
    angle = math.radians(15)
    flip = np.array([[-1.0, 0, 64], [0, 1, 0], [0, 0, 1]])  # flips keep boxes exact
    rotate = np.array([[math.cos(angle), -math.sin(angle), 20], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    shear = np.array([[1.0, 0.3, 0], [0, 1, 0], [0, 0, 1]])
    detections = []
    for _ in range(3):
        d = _detections([0.95, 0.95], [1, 2])
        d.pred_boxes = Boxes(torch.tensor([[10.0, 10.0, 30.0, 30.0], [34.0, 20.0, 50.0, 44.0]]))
        for branch in ("rpn", "cls", "reg"):
            d.set(f"keep_{branch}", torch.ones(2, dtype=torch.bool))
        d.uncertainty = torch.zeros(2)
        detections.append(d)
    labeler.label = lambda weak, adapt: (detections, SimpleNamespace(image_sizes=[(64, 64)] * 3))
    unlabeled = [{"weak": {}, "strong": {"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}, "weak_to_strong": m}
                 for m in (flip, rotate, shear)]
    with EventStorage(0):
        inputs, stats = labeler(unlabeled)
    assert [len(t) for t in inputs["cls_targets"]] == [2, 2, 2]  # classification keeps every view
    assert as_scalars(stats)["semi/pseudo_boxes_reg"] == pytest.approx(2 / 3 if skip else 2.0)  # per image
    assert [len(t) for t in inputs["reg_targets"]] == ([2, 0, 0] if skip else [2, 2, 2])
    # in the flipped view the regression target is the exact mirrored box
    assert inputs["reg_targets"][0].gt_boxes.tensor[0].tolist() == pytest.approx([34.0, 10.0, 54.0, 30.0])


def label_distribution(fraction=1.0, window_images=4):
    # labeled: 10 images, class 0 on 20 boxes, class 1 on 5: 2.0 and 0.5 boxes an image
    dicts = [{"annotations": [{"category_id": 0}] * 2 + ([{"category_id": 1}] if i % 2 else [])} for i in range(10)]
    return LabelDistributionThresholds.from_dataset_dicts(dicts, 2, fixed=0.9, fraction=fraction,
                                                          window_images=window_images, value_range=(0.5, 0.965))


def test_label_distribution_thresholds_pass_as_many_boxes_as_the_labeled_classes_expect():
    scores = torch.tensor([0.99 - 0.01 * i for i in range(10)] + [0.97, 0.6, 0.55])
    classes = torch.tensor([0] * 10 + [1] * 3)
    t = label_distribution()
    assert t.update(scores[:5], classes[:5], num_images=2).tolist() == pytest.approx([0.9, 0.9])  # 2 of 4: fixed
    t = label_distribution()
    # 4 images: class 0 expects 8 objects -> its 8th score 0.92; class 1 expects 2 -> 0.6
    assert t.update(scores, classes, num_images=4).tolist() == pytest.approx([0.92, 0.6])
    half = label_distribution(fraction=0.5)
    # half the expected: class 0's 4th score 0.96; class 1's 1st, 0.97, clamped to 0.965
    assert half.update(scores, classes, num_images=4).tolist() == pytest.approx([0.96, 0.965])


def test_label_distribution_thresholds_follow_a_window_of_recent_images_and_resume():
    t = label_distribution(window_images=4)
    t.update(torch.tensor([0.99] * 8), torch.zeros(8, dtype=torch.long), num_images=4)
    # a later step of 4 images replaces the first: only its scores count
    later = t.update(torch.tensor([0.7] * 8 + [0.8, 0.8]), torch.tensor([0] * 8 + [1, 1]), num_images=4)
    assert later.tolist() == pytest.approx([0.7, 0.8])
    assert len(t.steps) == 1
    restored = label_distribution(window_images=4)
    restored.load_state_dict(t.state_dict())
    assert restored.thresholds.tolist() == pytest.approx([0.7, 0.8]) and len(restored.steps) == 1
    # a class with fewer detections than expected: all pass, down to the range's floor
    few = label_distribution().update(torch.tensor([0.99, 0.97]), torch.tensor([0, 1]), num_images=4)
    assert few.tolist() == pytest.approx([0.5, 0.5])
