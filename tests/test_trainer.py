"""The teacher-student step, checkpoints and AMP, on tiny data."""

import json
import math
import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.engine import hooks
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from softteacher import SoftTeacherTrainer, load_config
from softteacher.config_checks import check_initial_weights
from softteacher.data import build_labeled_unlabeled_loader
from softteacher.engine import EMATeacherHook
from softteacher.modeling import PseudoLabeler, jitter_uncertainty
from softteacher.modeling.pseudo_label_stats import as_scalars
from softteacher.structures import map_boxes

from conftest import EVERY_DETECTION_IS_A_PSEUDO_BOX, config_path, soft_teacher_cfg


def one_batch(cfg):
    return next(iter(build_labeled_unlabeled_loader(cfg)))


def student_and_labeler(cfg):
    torch.manual_seed(0)
    student = build_model(cfg)
    teacher = SoftTeacherTrainer.build_teacher(cfg)
    teacher.load_state_dict(student.state_dict())
    return student, PseudoLabeler(cfg, teacher)


def test_a_step_without_pseudo_boxes_gives_zero_finite_unsupervised_losses(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path)  # a random teacher is never 0.5 sure
    student, labeler = student_and_labeler(cfg)
    labeled, unlabeled = one_batch(cfg)
    with EventStorage(0):
        inputs, stats = labeler(unlabeled)
        losses = student(labeled, unlabeled=inputs)
    stats = as_scalars(stats)
    assert stats["semi/pseudo_boxes_rpn"] == stats["semi/pseudo_boxes_cls"] == 0
    unsup = {k: v for k, v in losses.items() if k.startswith("unsup_")}
    assert set(unsup) == {"unsup_loss_rpn_cls", "unsup_loss_rpn_loc", "unsup_loss_cls", "unsup_loss_box_reg"}
    assert all(v.item() == 0.0 for v in unsup.values())
    assert all(math.isfinite(v.item()) and v.item() > 0 for k, v in losses.items() if k.startswith("loss_cls"))


def test_the_student_learns_only_from_teacher_boxes_mapped_into_its_view(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **EVERY_DETECTION_IS_A_PSEUDO_BOX)
    student, labeler = student_and_labeler(cfg)
    labeled, unlabeled = one_batch(cfg)
    seen = {}
    original = student.roi_heads.unsupervised_losses

    def spy(features, proposals, cls_targets, reg_targets, *rest):
        seen.update(cls=cls_targets, reg=reg_targets)
        return original(features, proposals, cls_targets, reg_targets, *rest)

    student.roi_heads.unsupervised_losses = spy
    with EventStorage(0):
        inputs, _ = labeler(unlabeled)
        losses = student(labeled, unlabeled=inputs)
        detections, _ = labeler.detect([u["weak"] for u in unlabeled])
    assert all("instances" not in view for view in inputs["images"])
    assert all(losses[k].item() > 0 for k in ("unsup_loss_rpn_cls", "unsup_loss_cls"))
    for u, d, targets, rpn in zip(unlabeled, detections, seen["cls"], inputs["rpn_targets"]):
        h, w = u["strong"]["image"].shape[1:]
        expected = map_boxes(u["weak_to_strong"], d.pred_boxes.tensor.double(), h, w).float()
        visible = (expected[:, 2] > expected[:, 0]) & (expected[:, 3] > expected[:, 1])
        torch.testing.assert_close(targets.gt_boxes.tensor, expected[visible])
        torch.testing.assert_close(targets.gt_classes, d.pred_classes[visible])
        torch.testing.assert_close(rpn.gt_boxes.tensor, expected[visible])
        gt = u["unlabeled_gt_instances"].gt_boxes.tensor
        assert not torch.equal(targets.gt_boxes.tensor[: len(gt)], gt)


def test_background_probability_is_the_teachers_background_column_on_boxes_mapped_back_to_the_weak_view(
    tiny_semi, tmp_path
):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **EVERY_DETECTION_IS_A_PSEUDO_BOX)
    _, labeler = student_and_labeler(cfg)
    _, unlabeled = one_batch(cfg)
    # a weak -> strong map that is far from the identity: flipped, halved and shifted
    for u in unlabeled:
        h, w = u["weak"]["image"].shape[1:]
        u["weak_to_strong"] = np.array([[-0.5, 0.0, w / 2 + 3], [0.0, 0.5, 5.0], [0.0, 0.0, 1.0]])
    with EventStorage(0):
        inputs, _ = labeler(unlabeled)
    samples = []
    for u in unlabeled:  # boxes in the strong view, as the student samples them
        sample = Instances(tuple(u["strong"]["image"].shape[1:]))
        sample.proposal_boxes = Boxes(torch.tensor([[3.0, 5.0, 20.0, 30.0], [10.0, 8.0, 14.0, 40.0],
                                                    [0.0, 0.0, 8.0, 8.0]]))
        samples.append(sample)
    got = inputs["background_probs"](samples)

    teacher = labeler.teacher
    weak = teacher.preprocess_image([u["weak"] for u in unlabeled])
    features = teacher.backbone(weak.tensor)
    expected_boxes = []
    for u, s, size in zip(unlabeled, samples, weak.image_sizes):
        # inverse of the map above: x_weak = (w / 2 + 3 - x) * 2, y_weak = (y - 5) * 2, clipped
        b = s.proposal_boxes.tensor
        h, w = size
        x0, x1 = (w / 2 + 3 - b[:, 2]) * 2, (w / 2 + 3 - b[:, 0]) * 2
        y0, y1 = (b[:, 1] - 5) * 2, (b[:, 3] - 5) * 2
        mapped = torch.stack([x0.clamp(0, w), y0.clamp(0, h), x1.clamp(0, w), y1.clamp(0, h)], 1)
        expected_boxes.append(Boxes(mapped))
    with torch.no_grad():
        scores, _ = teacher.roi_heads.box_predictions(features, expected_boxes)
    probs = torch.softmax(scores.float(), dim=-1)
    assert probs.shape[1] == cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1
    torch.testing.assert_close(got, probs[:, cfg.MODEL.ROI_HEADS.NUM_CLASSES], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, probs[:, 0], atol=1e-3)  # another column would differ


def test_background_samples_are_weighted_by_the_teachers_probability_foreground_by_one(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **EVERY_DETECTION_IS_A_PSEUDO_BOX)
    student, labeler = student_and_labeler(cfg)
    labeled, unlabeled = one_batch(cfg)
    seen = {}
    predictor = student.roi_heads.box_predictor
    weighted = predictor.weighted_cls_loss

    def spy(scores, gt_classes, weights):
        seen.update(gt_classes=gt_classes, weights=weights)
        return weighted(scores, gt_classes, weights)

    predictor.weighted_cls_loss = spy
    with EventStorage(0):
        inputs, _ = labeler(unlabeled)
        asked = {}

        def background_probs(samples):  # a known probability per sample: 0.01, 0.02, ...
            asked["n"] = sum(len(s) for s in samples)
            return torch.arange(1, asked["n"] + 1, dtype=torch.float32) / 100

        inputs["background_probs"] = background_probs
        student(labeled, unlabeled=inputs)
    logged = as_scalars(inputs["statistics"])["semi/bg_weight_mean"]
    gt_classes, weights = seen["gt_classes"], seen["weights"]
    assert len(weights) == asked["n"]
    background = gt_classes == cfg.MODEL.ROI_HEADS.NUM_CLASSES
    assert background.any() and (~background).any()
    expected = torch.arange(1, asked["n"] + 1, dtype=torch.float32) / 100
    torch.testing.assert_close(weights[background], expected[background])
    assert (weights[~background] == 1).all()
    assert logged == pytest.approx(float(expected[background].mean()))


def train(cfg, resume=False):
    trainer = SoftTeacherTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def test_gradients_reach_only_the_student(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, max_iter=1, **EVERY_DETECTION_IS_A_PSEUDO_BOX,
                           **{"TEST.EVAL_PERIOD": "0", "SEMI.EVAL_MODELS": "()"})
    trainer = train(cfg)
    assert all(p.grad is None and not p.requires_grad for p in trainer.teacher.parameters())
    assert all(p.grad is not None for p in trainer.student.parameters() if p.requires_grad)


def test_resume_restores_teacher_student_optimizer_and_ema_step(tiny_semi, tmp_path):
    overrides = {"TEST.EVAL_PERIOD": "0", "SEMI.EVAL_MODELS": "()", "SEMI.EMA_MOMENTUM": "0.9"}
    overrides.update(EVERY_DETECTION_IS_A_PSEUDO_BOX)
    first = train(soft_teacher_cfg(*tiny_semi, tmp_path, max_iter=3, **overrides))
    ema = next(h for h in first._hooks if isinstance(h, EMATeacherHook))
    assert ema.step == 3
    # the teacher moved away from the student (momentum 0.5, then 0.9 after the first copy)
    assert not torch.equal(first.teacher.roi_heads.box_predictor.cls_score.weight,
                           first.student.roi_heads.box_predictor.cls_score.weight)

    second = SoftTeacherTrainer(soft_teacher_cfg(*tiny_semi, tmp_path, max_iter=5, **overrides))
    second.resume_or_load(resume=True)
    assert second.start_iter == 3
    for a, b in [(first.teacher, second.teacher), (first.student, second.student)]:
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name
    saved_opt, loaded_opt = first.optimizer.state_dict(), second.optimizer.state_dict()
    assert saved_opt["param_groups"] == loaded_opt["param_groups"]
    for key, state in saved_opt["state"].items():
        assert torch.equal(state["momentum_buffer"], loaded_opt["state"][key]["momentum_buffer"])
    assert next(h for h in second._hooks if isinstance(h, EMATeacherHook)).step == 3
    assert second.scheduler.state_dict() == first.scheduler.state_dict()
    second.train()
    assert second.iter == 5  # ran iterations 3 and 4
    assert next(h for h in second._hooks if isinstance(h, EMATeacherHook)).step == 5


@pytest.mark.parametrize("averaging", [False, True])
def test_the_teacher_averages_the_student_during_burn_in_only_with_ema_during_burn_in(averaging, tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, max_iter=2, **{
        "TEST.EVAL_PERIOD": "0", "SEMI.EVAL_MODELS": "()", "SEMI.BURN_IN_ITERS": "2",
        "SEMI.EMA_MOMENTUM": "0.5", "SEMI.EMA_DURING_BURN_IN": str(averaging),
    })
    trainer = SoftTeacherTrainer(cfg)
    weight = lambda model: model.roi_heads.box_predictor.cls_score.weight.detach().clone()  # noqa: E731
    students = []  # after each step (this hook runs after the EMA hook)
    trainer.register_hooks([hooks.CallbackHook(after_step=lambda t: students.append(weight(t.student)))])
    trainer.train()
    assert not torch.equal(students[0], students[1])
    # averaging: m = min(0.5, t / (t + 1)) from the first step: a copy, then half and half
    expected = 0.5 * students[0] + 0.5 * students[1] if averaging else students[1]
    torch.testing.assert_close(weight(trainer.teacher), expected)
    assert next(h for h in trainer._hooks if isinstance(h, EMATeacherHook)).step == (2 if averaging else 0)


def test_amp_runs_the_step_in_bfloat16_on_the_cpu(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, max_iter=2, **EVERY_DETECTION_IS_A_PSEUDO_BOX,
                           **{"SOLVER.AMP.ENABLED": "True", "TEST.EVAL_PERIOD": "0", "SEMI.EVAL_MODELS": "()"})
    trainer = SoftTeacherTrainer(cfg)
    dtypes = []
    trainer.student.roi_heads.box_head.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    trainer.train()
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert trainer._trainer.grad_scaler is None  # bfloat16 needs no loss scaling
    losses = trainer.storage.history("total_loss").values()
    assert losses and all(math.isfinite(v) for v, _ in losses)


def test_box_jitter_refines_every_copy_of_every_image_in_one_box_head_call(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **EVERY_DETECTION_IS_A_PSEUDO_BOX)
    _, labeler = student_and_labeler(cfg)
    _, unlabeled = one_batch(cfg)
    calls = []
    labeler.teacher.roi_heads.box_head.register_forward_hook(lambda m, i, o: calls.append(len(o)))
    with EventStorage(0):
        detections, head = labeler.detect([u["weak"] for u in unlabeled])
        calls.clear()
        uncertainty = jitter_uncertainty(
            head.refine, [d.pred_boxes.tensor for d in detections], [d.pred_classes for d in detections], 10, 0.06
        )
    assert calls == [10 * sum(len(d) for d in detections)]
    assert [len(u) for u in uncertainty] == [len(d) for d in detections] and sum(calls) > 0
    assert all(torch.isfinite(u).all() and (u >= 0).all() for u in uncertainty)


def test_a_plain_detectron2_checkpoint_initialises_student_and_teacher(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path / "out")
    torch.manual_seed(7)
    plain = build_model(cfg)  # a GeneralizedRCNN-compatible state, saved the model-zoo way
    torch.save({"model": plain.state_dict()}, tmp_path / "plain.pth")
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(tmp_path / "plain.pth")
    trainer = SoftTeacherTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.before_train()  # the EMA hook starts the teacher as the student
    for name, value in plain.state_dict().items():
        assert torch.equal(trainer.student.state_dict()[name], value), name
        assert torch.equal(trainer.teacher.state_dict()[name], value), name


def c2_name(key):
    """detectron2's ResNet parameter name -> its name in an MSRA ImageNet .pkl (Caffe2 style)."""
    key = key.replace("backbone.bottom_up.", "")
    if key.startswith("stem.conv1"):
        return {"stem.conv1.weight": "conv1_w", "stem.conv1.norm.weight": "res_conv1_bn_s",
                "stem.conv1.norm.bias": "res_conv1_bn_b"}.get(key)
    stage, block, layer, *rest = key.split(".")
    branch = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}[layer]
    suffix = {("weight",): "_w", ("norm", "weight"): "_bn_s", ("norm", "bias"): "_bn_b"}.get(tuple(rest))
    return f"{stage}_{block}_{branch}{suffix}" if suffix else None


def test_an_imagenet_pkl_loads_into_student_and_teacher_by_detectron2s_name_mapping(tiny_semi, tmp_path):
    # the COCO configs' backbone (R50, frozen batch norm), narrowed so that the file stays small
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path / "out", **{
        "MODEL.BACKBONE.NAME": "build_resnet_fpn_backbone", "MODEL.RESNETS.DEPTH": "50",
        "MODEL.RESNETS.NORM": "FrozenBN", "MODEL.RESNETS.STEM_OUT_CHANNELS": "16",
        "MODEL.RESNETS.RES2_OUT_CHANNELS": "32", "MODEL.RESNETS.WIDTH_PER_GROUP": "8",
        "MODEL.BACKBONE.FREEZE_AT": "2",
    })
    shapes = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items() if k.startswith("backbone.bottom_up")}
    rng = np.random.default_rng(0)
    blobs = {c2_name(k): rng.standard_normal(s).astype(np.float32) for k, s in shapes.items() if c2_name(k)}
    blobs["fc1000_w"] = rng.standard_normal((1000, 16)).astype(np.float32)  # the classifier: not used
    assert len(blobs) == 3 + 16 * 3 * 3 + 4 * 3 + 1  # (conv, scale, bias): stem, 16 bottlenecks of 3, 4 shortcuts; fc
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps(blobs))
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(path)
    trainer = SoftTeacherTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.before_train()
    student, teacher = trainer.student.state_dict(), trainer.teacher.state_dict()
    loaded = 0
    for key in shapes:
        name = c2_name(key)
        if name:
            expected = torch.from_numpy(blobs[name])
            assert torch.equal(student[key], expected) and torch.equal(teacher[key], expected), key
            loaded += 1
    assert loaded == len(blobs) - 1


def test_missing_initial_weights_stop_at_start_naming_the_path_and_where_to_get_them(tmp_path):
    cfg = load_config(config_path("COCO-SemiSupervised", "soft_teacher_R_50_FPN_10pct_180k.yaml"),
                      ["MODEL.WEIGHTS", str(tmp_path / "R-50.pkl"), "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match=r"R-50.pkl' does not exist.*ImageNetPretrained/MSRA/R-50.pkl"):
        check_initial_weights(cfg)
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    check_initial_weights(cfg, resume=True)  # resuming reads the checkpoint, not MODEL.WEIGHTS


@pytest.mark.parametrize("thresh, expected", [(0.001, 0.001), (-1.0, 0.05)])
def test_evaluation_scores_detections_down_to_its_own_threshold_and_leaves_the_teachers(
    tiny_semi, tmp_path, thresh, expected
):
    from softteacher.engine.trainer import SupervisedTrainer

    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **{"TEST.EVAL_SCORE_THRESH": str(thresh)})
    model = build_model(cfg)
    model.eval()
    seen = []
    inference = model.roi_heads.box_predictor.inference
    model.roi_heads.box_predictor.inference = lambda *a: seen.append(
        model.roi_heads.box_predictor.test_score_thresh) or inference(*a)
    SupervisedTrainer.test(cfg, model)
    assert seen and set(seen) == {expected}  # every evaluated image
    assert model.roi_heads.box_predictor.test_score_thresh == 0.05  # pseudo-labelling's, restored


def three_step_losses(tiny_semi, tmp_path, **overrides):
    """The loss terms of three training steps on the tiny data, every detection a pseudo-box."""
    from detectron2.utils.env import seed_all_rng

    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, max_iter=3, **{
        **EVERY_DETECTION_IS_A_PSEUDO_BOX, "TEST.EVAL_PERIOD": "0", "SEMI.EVAL_MODELS": "()", "SEMI.VIS_PERIOD": "0",
        "SEMI.JITTER_TIMES": "4", **overrides})
    seed_all_rng(0)
    trainer = SoftTeacherTrainer(cfg)
    forward, losses = trainer.student.forward, []

    def recorded(*args, **kwargs):
        out = forward(*args, **kwargs)
        losses.append({name: float(value) for name, value in sorted(out.items())})
        return out

    trainer.student.forward = recorded
    trainer.resume_or_load(resume=False)
    trainer.train()
    return losses


@pytest.mark.parametrize("recipe, overrides", [
    ("published", {}),
    ("ignore_uncertain", {"SEMI.IGNORE_UNCERTAIN": "True", "MODEL.PROPOSAL_GENERATOR.NAME": "PseudoLabelRPN",
                          "SEMI.CLS_PSEUDO_THRESH": "0.185", "SEMI.RPN_PSEUDO_THRESH": "0.185"}),
])
def test_the_step_trains_to_the_same_losses_as_before_its_host_synchronisations_were_cut(
    tiny_semi, tmp_path, recipe, overrides
):
    with open(os.path.join(os.path.dirname(__file__), "data", "faithful_losses.json")) as f:
        expected = json.load(f)[recipe]
    got = three_step_losses(tiny_semi, tmp_path, **overrides)
    assert [sorted(step) for step in got] == [sorted(step) for step in expected]
    for step_got, step_expected in zip(got, expected):
        for name, value in step_expected.items():
            assert step_got[name] == pytest.approx(value, rel=1e-3, abs=1e-4), name


def test_a_run_whose_teacher_passes_no_pseudo_box_warns_once_with_its_scores(tiny_semi, tmp_path, caplog):
    # a random teacher is never 0.9 sure; burn-in 2: two silent periods, then four dry ones
    overrides = {"TEST.EVAL_PERIOD": "0", "SEMI.EVAL_MODELS": "()", "SEMI.LOG_PERIOD": "1",
                 "SEMI.BURN_IN_ITERS": "2", "SEMI.DROUGHT_WARN_PERIODS": "3"}
    with caplog.at_level("WARNING", logger="softteacher.engine.pseudo_label_drought"):
        trainer = train(soft_teacher_cfg(*tiny_semi, tmp_path, max_iter=6, **overrides))
    warnings = [r.getMessage() for r in caplog.records if r.name == "softteacher.engine.pseudo_label_drought"]
    assert len(warnings) == 1
    assert warnings[0].startswith("iteration 5: no pseudo-box reached the classification branch for 3 logging "
                                  "periods (3 iterations)")
    assert trainer.storage.history("semi/pseudo_boxes_cls").values()[-1][0] == 0


def test_the_unlabeled_box_loss_is_weighted_by_bbox_reg_loss_weight_as_the_labeled_one(tiny_semi, tmp_path):
    losses = {}
    batch = None
    for weight in (1.0, 2.5):
        cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **EVERY_DETECTION_IS_A_PSEUDO_BOX,
                               **{"MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT": str(weight)})
        student, labeler = student_and_labeler(cfg)
        batch = batch or one_batch(cfg)
        labeled, unlabeled = batch
        torch.manual_seed(1)  # the same proposals sampled in both
        with EventStorage(0):
            inputs, _ = labeler(unlabeled)
            losses[weight] = {k: v.item() for k, v in student(labeled, unlabeled=inputs).items()}
    assert losses[1.0]["unsup_loss_box_reg"] > 0
    for name in ("loss_box_reg", "unsup_loss_box_reg"):
        assert losses[2.5][name] == pytest.approx(2.5 * losses[1.0][name], rel=1e-5)
    for name in ("loss_cls", "unsup_loss_cls"):
        assert losses[2.5][name] == pytest.approx(losses[1.0][name], rel=1e-5)
