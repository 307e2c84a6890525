"""Uncertain teacher detections as ignored regions (SEMI.IGNORE_UNCERTAIN): the targets the
labeller builds, the RPN anchors and ROI samples they take out of the loss, the config check."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils.events import EventStorage
from test_adaptive_thresholds import _detections
from test_trainer import one_batch, student_and_labeler

from softteacher import SoftTeacherTrainer
from softteacher.modeling import IGNORE
from softteacher.modeling.pseudo_label_stats import as_scalars
from softteacher.modeling.pseudo_label_thresholds import box_targets, ignored_regions, with_ignored

from conftest import soft_teacher_cfg

PLUS_RPN = {"MODEL.PROPOSAL_GENERATOR.NAME": "PseudoLabelRPN"}


def test_uncertain_boxes_are_ignored_regions_unless_they_are_a_kept_object():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    kept = torch.tensor([True, False, False])
    uncertain = torch.tensor([False, True, True])  # the first overlaps the kept box by 0.81, the second by 0
    assert ignored_regions(boxes, kept, uncertain).tolist() == [False, False, True]
    assert ignored_regions(boxes, torch.zeros(3, dtype=torch.bool), uncertain).tolist() == [False, True, True]
    targets = with_ignored(box_targets(boxes[:1], torch.tensor([2]), (64, 64)), boxes[2:])
    assert targets.gt_classes.tolist() == [2, IGNORE]
    assert targets.gt_boxes.tensor.tolist() == [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]


FLIP_AND_HALVE = np.array([[-0.5, 0.0, 32.0], [0.0, 0.5, 0.0], [0.0, 0.0, 1.0]])  # 64 px weak -> 32 px strong


@pytest.mark.parametrize("weak_to_strong", [np.eye(3), FLIP_AND_HALVE], ids=["identity", "flip_and_halve"])
def test_labeler_turns_detections_under_a_branch_threshold_into_ignored_regions(tiny_semi, tmp_path, weak_to_strong):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **PLUS_RPN, **{
        "SEMI.IGNORE_UNCERTAIN": "True", "SEMI.RPN_PSEUDO_THRESH": "0.9", "SEMI.CLS_PSEUDO_THRESH": "0.7",
    })
    _, labeler = student_and_labeler(cfg)
    d = _detections([0.95, 0.8, 0.6], [1, 2, 0])
    d.pred_boxes = Boxes(torch.tensor([[4.0, 4.0, 20.0, 20.0], [30.0, 4.0, 50.0, 20.0], [4.0, 30.0, 20.0, 50.0]]))
    d.keep_rpn, d.keep_cls, d.keep_reg = d.scores > 0.9, d.scores > 0.7, d.scores > 2
    d.uncertainty = torch.zeros(3)
    labeler.label = lambda weak, adapt: ([d], SimpleNamespace(image_sizes=[(64, 64)]))
    side = 64 if weak_to_strong is not FLIP_AND_HALVE else 32
    strong = {"image": torch.zeros(3, side, side)}
    with EventStorage(0):
        inputs, stats = labeler([{"weak": {}, "strong": strong, "weak_to_strong": weak_to_strong}])
    assert inputs["rpn_targets"][0].gt_classes.tolist() == [1, IGNORE, IGNORE]
    assert inputs["cls_targets"][0].gt_classes.tolist() == [1, 2, IGNORE]
    # the ignored region is where the strong view shows the weak view's [4, 30, 20, 50]
    expected = [4.0, 30.0, 20.0, 50.0] if side == 64 else [22.0, 15.0, 30.0, 25.0]
    assert inputs["cls_targets"][0].gt_boxes.tensor[2].tolist() == expected
    assert inputs["rpn_targets"][0].gt_boxes.tensor[2].tolist() == expected
    assert len(inputs["reg_targets"][0]) == 0  # regression never gets ignored regions
    assert as_scalars(stats)["semi/ignored_boxes_cls"] == 1.0


@pytest.mark.parametrize("ignore", [False, True])
def test_ignored_regions_reach_down_to_their_own_score_but_pseudo_boxes_do_not(tiny_semi, tmp_path, ignore):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **PLUS_RPN, **{
        "SEMI.IGNORE_UNCERTAIN": str(ignore), "SEMI.IGNORE_MIN_SCORE": "0.3", "SEMI.PSEUDO_SCORE_THRESH": "0.5",
        "SEMI.RPN_PSEUDO_THRESH": "0.9", "SEMI.CLS_PSEUDO_THRESH": "0.9",
    })
    _, labeler = student_and_labeler(cfg)
    raw = _detections([0.95, 0.6, 0.4, 0.2], [1, 2, 0, 3])
    box = raw.pred_boxes.tensor[:1]  # every detection's; the head refines each jitter back to it
    refined = []  # how many boxes the head was asked to refine (each jittered JITTER_TIMES times)
    steady = SimpleNamespace(refine=lambda boxes, classes: refined.append(len(boxes[0])) or
                             [box.expand(len(b), 4) for b in boxes])
    labeler.teacher_detections = lambda weak: ([raw], steady)
    d = labeler.label([{}])[0][0]
    assert refined == [2 * cfg.SEMI.JITTER_TIMES]  # only pseudo-boxes (above 0.5) are jittered
    assert d.uncertainty.tolist() == [0.0, 0.0] + [float("inf")] * (len(d) - 2)
    if ignore:  # 0.6 and 0.4 become ignored regions of the RPN and classification; 0.2 is background
        assert d.scores.tolist() == pytest.approx([0.95, 0.6, 0.4])
    else:
        assert d.scores.tolist() == pytest.approx([0.95, 0.6])
    assert d.keep_cls.tolist() == d.keep_rpn.tolist() == [True] + [False] * (len(d) - 1)
    assert d.keep_reg.tolist() == [True, True] + [False] * (len(d) - 2)  # box regression: above 0.5 only


def _rpn_and_anchors(tiny_semi, tmp_path, name, budget=1000000):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **{
        "MODEL.PROPOSAL_GENERATOR.NAME": name, "MODEL.RPN.BATCH_SIZE_PER_IMAGE": str(budget),
    })
    rpn = build_model(cfg).proposal_generator
    features = {f: torch.zeros(1, 1, 64 // s, 64 // s) for f, s in zip(rpn.in_features, (4, 8, 16, 32, 64))}
    return rpn, rpn.anchor_generator([features[f] for f in rpn.in_features])


@pytest.mark.parametrize("budget", [1000000, 32], ids=["every_anchor", "sampled"])
def test_rpn_leaves_anchors_near_an_ignored_region_out_and_keeps_the_rest(tiny_semi, tmp_path, budget):
    rpn, anchors = _rpn_and_anchors(tiny_semi, tmp_path, "PseudoLabelRPN", budget)
    obj, ignored = [8.0, 8.0, 28.0, 28.0], [36.0, 36.0, 60.0, 60.0]
    targets = box_targets(torch.tensor([obj, ignored]), torch.tensor([0, IGNORE]), (64, 64))
    torch.manual_seed(0)  # the same draw of the sampled anchors for both
    labels, _ = rpn.label_and_sample_anchors(anchors, [targets])
    torch.manual_seed(0)
    plain, _ = rpn.label_and_sample_anchors(anchors, [targets[:1]])
    near = pairwise_iou(Boxes(torch.tensor([ignored])), Boxes.cat(anchors))[0] >= 0.3
    assert near.sum() > 0
    assert (labels[0][near] == -1).all()  # neither object nor background
    assert (plain[0][near] == 0).any()  # which would have made them background
    assert ((plain[0][near] == 0) | (plain[0][near] == -1)).all()
    if budget < len(labels[0]):  # the budget bites: it is spent whole, none of it near the region
        assert (labels[0] >= 0).sum() == (plain[0] >= 0).sum() == budget
        assert (labels[0] == 1).sum() == (plain[0] == 1).sum() > 0  # every positive kept
    else:
        assert torch.equal(labels[0][~near], plain[0][~near])  # elsewhere as with the object alone


def test_roi_sampling_skips_proposals_on_an_ignored_region(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **{"MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": "512"})
    heads = build_model(cfg).roi_heads
    proposals = Instances((64, 64))
    obj, ignored, far = [8.0, 8.0, 28.0, 28.0], [36.0, 36.0, 60.0, 60.0], [0.0, 40.0, 20.0, 60.0]
    proposals.proposal_boxes = Boxes(torch.tensor([[8.0, 8.0, 28.0, 29.0], [36.0, 36.0, 60.0, 61.0], far]))
    proposals.objectness_logits = torch.zeros(3)
    targets = box_targets(torch.tensor([obj, ignored]), torch.tensor([3, IGNORE]), (64, 64))
    with EventStorage(0):
        (samples,) = heads.label_and_sample_proposals([proposals], [targets])
    # the object's proposal and the object itself (appended): class 3; the far one: background;
    # the ignored region and its proposal: not sampled
    assert sorted(samples.gt_classes.tolist()) == [3, 3, heads.num_classes]


def test_roi_sampling_under_a_small_budget_spends_none_of_it_on_an_ignored_region(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **{
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": "16", "MODEL.ROI_HEADS.POSITIVE_FRACTION": "0.25",
    })
    heads = build_model(cfg).roi_heads
    obj, ignored = [8.0, 8.0, 28.0, 28.0], [36.0, 36.0, 60.0, 60.0]
    on_ignored = torch.tensor([[36.0, 36.0, 60.0, 60.0 + k] for k in range(40)])  # IoU >= 0.6 with it
    background = torch.tensor([[0.0, 40.0 + k % 4, 20.0, 60.0] for k in range(20)])  # IoU 0 with both
    proposals = Instances((64, 64))
    proposals.proposal_boxes = Boxes(torch.cat([on_ignored, background]))
    proposals.objectness_logits = torch.zeros(60)
    targets = box_targets(torch.tensor([obj, ignored]), torch.tensor([3, IGNORE]), (64, 64))
    torch.manual_seed(0)
    with EventStorage(0):
        (samples,) = heads.label_and_sample_proposals([proposals], [targets])
    # 16 samples: the object (added as its own proposal) and 15 background ones; none on the
    # ignored region, though it has twice as many proposals as the background
    assert len(samples) == 16
    assert sorted(samples.gt_classes.tolist()) == [3] + [heads.num_classes] * 15
    overlap = pairwise_iou(samples.proposal_boxes, Boxes(torch.tensor([ignored])))[:, 0]
    assert (overlap < 0.5).all()


def test_a_proposal_on_both_a_pseudo_box_and_an_ignored_region_stays_a_foreground_sample(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **{"MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": "512"})
    heads = build_model(cfg).roi_heads
    # the region overlaps the pseudo-box by 0.43 (by 0.5 or more it would be the same object)
    kept, ignored = [0.0, 0.0, 20.0, 20.0], [8.0, 0.0, 28.0, 20.0]
    both = [5.0, 0.0, 24.0, 20.0]  # IoU 0.625 with the pseudo-box, 0.696 with the ignored region
    only_ignored = [12.0, 0.0, 30.0, 20.0]  # IoU 0.27 with the pseudo-box, 0.727 with the region
    proposals = Instances((64, 64))
    proposals.proposal_boxes = Boxes(torch.tensor([both, only_ignored]))
    proposals.objectness_logits = torch.zeros(2)
    targets = box_targets(torch.tensor([kept, ignored]), torch.tensor([4, IGNORE]), (64, 64))
    iou = pairwise_iou(proposals.proposal_boxes, targets.gt_boxes)
    assert iou[0, 0] >= 0.5 and iou[0, 1] > iou[0, 0] and iou[1, 0] < 0.5 <= iou[1, 1]
    with EventStorage(0):
        (samples,) = heads.label_and_sample_proposals([proposals], [targets])
    by_box = {tuple(b.tolist()): int(c) for b, c in zip(samples.proposal_boxes.tensor, samples.gt_classes)}
    assert by_box[tuple(both)] == 4  # matched to the pseudo-box, not dropped with the region
    assert tuple(only_ignored) not in by_box and tuple(ignored) not in by_box  # still ignored
    assert by_box[tuple(kept)] == 4  # the pseudo-box itself, appended as a proposal


def test_ignoring_without_the_rpn_that_can_stops_at_start_naming_the_key(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **{"SEMI.IGNORE_UNCERTAIN": "True"})
    with pytest.raises(ValueError, match=r"MODEL\.PROPOSAL_GENERATOR\.NAME = 'RPN'.*SEMI\.IGNORE_UNCERTAIN"):
        SoftTeacherTrainer(cfg)


def test_a_step_where_every_detection_is_uncertain_trains_on_background_only(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **PLUS_RPN, **{
        "SEMI.IGNORE_UNCERTAIN": "True", "SEMI.PSEUDO_SCORE_THRESH": "0.0",  # a random teacher's
        "SEMI.RPN_PSEUDO_THRESH": "1.0", "SEMI.CLS_PSEUDO_THRESH": "1.0",  # detections: all uncertain
    })
    student, labeler = student_and_labeler(cfg)
    labeled, unlabeled = one_batch(cfg)
    with EventStorage(0):
        inputs, stats = labeler(unlabeled)
        losses = student(labeled, unlabeled=inputs)
    assert as_scalars(stats)["semi/ignored_boxes_cls"] > 0
    assert all((t.gt_classes == IGNORE).all() for t in inputs["cls_targets"])
    assert losses["unsup_loss_rpn_cls"] > 0 and losses["unsup_loss_cls"] > 0  # background still teaches
    assert losses["unsup_loss_rpn_loc"] == 0  # no object, no box to learn
    assert all(torch.isfinite(v) for v in losses.values())


def test_a_model_trained_with_the_ignoring_rpn_exports_to_detectron2s_own(tiny_semi, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling.proposal_generator import RPN

    from softteacher.export import export_plain_model

    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **PLUS_RPN)
    trained = build_model(cfg)
    torch.save({"model": trained.state_dict()}, tmp_path / "ckpt.pth")
    _, config = export_plain_model(cfg, str(tmp_path / "ckpt.pth"), "student", str(tmp_path / "exported"))
    plain_cfg = get_cfg()
    plain_cfg.merge_from_file(config)
    plain = build_model(plain_cfg)
    assert type(plain.proposal_generator) is RPN
    DetectionCheckpointer(plain).load(plain_cfg.MODEL.WEIGHTS)
    for name, value in trained.proposal_generator.state_dict().items():
        assert torch.equal(plain.proposal_generator.state_dict()[name], value)
