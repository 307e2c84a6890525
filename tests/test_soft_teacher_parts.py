"""The numbers of Soft Teacher's parts: weighted classification loss, box jitter, EMA."""

import math

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from torch import nn

from softteacher.engine import EMATeacherHook, ema_momentum, ema_update
from softteacher.modeling import jitter_boxes, jitter_uncertainty
from softteacher.modeling.pseudo_label_stats import as_scalars, jitter_filter_iou
from softteacher.modeling.roi_heads import weighted_cross_entropy

from conftest import soft_teacher_cfg


def test_weighted_classification_loss_matches_a_hand_computation():
    scores = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [0.0, 1.0, 3.0]])
    gt = torch.tensor([0, 2, 2])  # class 2 is background (2 classes)
    weights = torch.tensor([1.0, 0.3, 0.8])
    ce = [
        -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1))),
        -math.log(1 / 3),
        -math.log(math.exp(3) / (1 + math.exp(1) + math.exp(3))),
    ]
    expected = (1.0 * ce[0] + 0.3 * ce[1] + 0.8 * ce[2]) / max(2.1, 1.0)
    loss = weighted_cross_entropy(scores, gt, weights)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_weighted_loss_normalises_by_at_least_one():
    scores = torch.tensor([[0.0, 0.0]])
    loss = weighted_cross_entropy(scores, torch.tensor([1]), torch.tensor([0.25]))
    assert loss.item() == pytest.approx(0.25 * math.log(2), rel=1e-6)


def test_focal_weighted_loss_matches_a_hand_computation():
    scores = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 3.0]])
    gt = torch.tensor([0, 1])
    weights = torch.tensor([1.0, 0.5])
    p = [math.exp(2) / (math.exp(2) + 1 + math.exp(-1)), math.exp(1) / (1 + math.exp(1) + math.exp(3))]
    focal = [(1 - q) ** 1.5 * -math.log(q) for q in p]
    expected = (1.0 * focal[0] + 0.5 * focal[1]) / 1.5
    assert weighted_cross_entropy(scores, gt, weights, focal_gamma=1.5).item() == pytest.approx(expected, rel=1e-6)


def test_the_roi_heads_give_the_configured_gamma_to_the_unlabeled_loss(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **{"SEMI.UNSUP_CLS_FOCAL_GAMMA": "1.5"})
    predictor = build_model(cfg).roi_heads.box_predictor
    scores, gt, weights = torch.tensor([[0.0, 1.0, 3.0, 0.0, 0.0, 0.0]]), torch.tensor([1]), torch.tensor([1.0])
    assert predictor.weighted_cls_loss(scores, gt, weights).item() == pytest.approx(
        weighted_cross_entropy(scores, gt, weights, focal_gamma=1.5).item())
    assert predictor.weighted_cls_loss(scores, gt, weights) < weighted_cross_entropy(scores, gt, weights)


def test_jitter_offsets_are_normal_scaled_by_box_size_with_sizes_clamped():
    torch.manual_seed(0)
    boxes = torch.tensor([[10.0, 20.0, 110.0, 70.0], [5.0, 5.0, 5.2, 5.0]])  # 100x50, degenerate
    jittered = jitter_boxes(boxes, 20000, 0.06)
    offsets = jittered - boxes[:, None, :]
    std = offsets.std(dim=1)
    torch.testing.assert_close(std[0], torch.tensor([6.0, 3.0, 6.0, 3.0]), rtol=0.03, atol=0)
    torch.testing.assert_close(std[1], torch.full((4,), 0.06), rtol=0.03, atol=0)  # sizes >= 1
    assert offsets.mean(dim=1).abs().max() < 0.1


def test_jitter_uncertainty_matches_a_hand_computation_with_one_refine_call():
    boxes = [torch.tensor([[10.0, 20.0, 60.0, 50.0]]), torch.tensor([[0.0, 0.0, 30.0, 40.0], [5.0, 5.0, 25.0, 15.0]])]
    classes = [torch.tensor([1]), torch.tensor([0, 2])]
    times = 10
    calls = []

    def refine(jittered, jittered_classes):
        """Ignores the jitter: copy k of a box moves x0 by k and y1 by 2k."""
        calls.append(([len(j) for j in jittered], [c.tolist() for c in jittered_classes]))
        k = torch.arange(times, dtype=torch.float32)
        offsets = torch.stack([k, torch.zeros(times), torch.zeros(times), 2 * k], 1)
        return [(b[:, None, :] + offsets).reshape(-1, 4) for b in boxes]

    result = jitter_uncertainty(refine, boxes, classes, times, 0.06)
    assert calls == [([10, 20], [[1] * 10, [0] * 10 + [2] * 10])]
    std_k = math.sqrt(sum((k - 4.5) ** 2 for k in range(times)) / (times - 1))  # Bessel
    for got, image_boxes in zip(result, boxes):
        for value, (x0, y0, x1, y1) in zip(got.tolist(), image_boxes.tolist()):
            width, height = max(x1 - x0 - 4.5, 1.0), max(y1 + 9.0 - y0, 1.0)
            assert value == pytest.approx((std_k / width + 2 * std_k / height) / 4, rel=1e-5)


def test_each_boxs_uncertainty_comes_from_its_own_jittered_copies():
    """With a head that returns the jittered copies as they are, a box's uncertainty is the spread of
    its own copies: boxes of very different sizes tell apart copies given back in another order."""
    boxes = [torch.tensor([[0.0, 0.0, 100.0, 100.0], [50.0, 50.0, 54.0, 54.0]]),
             torch.tensor([[10.0, 10.0, 30.0, 70.0]])]
    classes = [torch.tensor([1, 0]), torch.tensor([2])]
    times, scale = 8, 0.06
    torch.manual_seed(3)
    copies = [jitter_boxes(b, times, scale) for b in boxes]  # what jitter_uncertainty will draw
    torch.manual_seed(3)
    seen_classes = []

    def unchanged(jittered, jittered_classes):
        seen_classes.extend(c.tolist() for c in jittered_classes)
        return jittered

    result = jitter_uncertainty(unchanged, boxes, classes, times, scale)
    assert seen_classes == [[1] * times + [0] * times, [2] * times]  # each copy asks for its box's class
    for got, image_copies in zip(result, copies):
        for value, box_copies in zip(got.tolist(), image_copies):
            mean = box_copies.mean(0)
            sizes = (mean[2:] - mean[:2]).clamp(min=1.0).repeat(2)
            expected = (box_copies.std(0) / sizes).mean()
            assert value == pytest.approx(float(expected), rel=1e-5)
    # the copies' spread is the jitter's own: about 0.06 of the box size, whatever the size
    assert result[0].tolist() == pytest.approx([0.06, 0.06], rel=0.5)


def test_jitter_uncertainty_of_no_boxes_is_empty():
    result = jitter_uncertainty(lambda b, c: b, [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)], 10, 0.06)
    assert result[0].shape == (0,)


class _Storage:
    def __init__(self):
        self.scalars = []

    def put_scalar(self, name, value, smoothing_hint=True):
        self.scalars.append((name, value))


class _Trainer:
    def __init__(self):
        self.iter = self.start_iter = 0
        self.storage = _Storage()


def _net(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    net[1].running_mean.fill_(float(seed))
    return net


def test_ema_hook_follows_its_formula_over_steps_for_parameters_and_buffers():
    student, teacher = _net(1), _net(2)
    hook = EMATeacherHook(teacher, student, max_momentum=0.6)
    hook.trainer = _Trainer()
    hook.before_train()  # a fresh run: the teacher starts as the student
    for name, p in teacher.state_dict().items():
        torch.testing.assert_close(p, student.state_dict()[name])
    expected = {n: p.clone() for n, p in teacher.named_parameters()}
    expected_mean = torch.full((4,), 7.0)
    teacher[1].running_mean.fill_(7.0)
    for step in range(6):
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn_like(p))
            student[1].running_mean.fill_(float(step))  # as if batch norm had seen a batch
        hook.trainer.iter = step
        hook.after_step()
        m = min(0.6, step / (step + 1))
        for n, p in student.named_parameters():
            expected[n] = m * expected[n] + (1 - m) * p.detach()
        expected_mean = m * expected_mean + (1 - m) * step
    for n, p in teacher.named_parameters():
        torch.testing.assert_close(p, expected[n])
    assert [v for _, v in hook.trainer.storage.scalars] == [0.0, 0.5, 0.6, 0.6, 0.6, 0.6]
    torch.testing.assert_close(teacher[1].running_mean, expected_mean)
    assert hook.state_dict() == {"step": 6}


def test_ema_hook_copies_the_student_during_burn_in_and_counts_from_its_end():
    student, teacher = _net(1), _net(2)
    hook = EMATeacherHook(teacher, student, max_momentum=0.999, burn_in_iters=3)
    hook.trainer = _Trainer()
    for it in range(4):
        hook.trainer.iter = it
        with torch.no_grad():
            student[0].weight.add_(1.0)
        hook.after_step()
    torch.testing.assert_close(teacher[0].weight, student[0].weight)  # step 0 after burn-in: m=0
    assert hook.step == 1


def test_a_resumed_run_keeps_its_loaded_teacher():
    student, teacher = _net(1), _net(2)
    hook = EMATeacherHook(teacher, student)
    hook.trainer = _Trainer()
    hook.trainer.start_iter = hook.trainer.iter = 10
    before = teacher[0].weight.clone()
    hook.before_train()
    torch.testing.assert_close(teacher[0].weight, before)


def test_ema_update_and_momentum_formula():
    assert [ema_momentum(t, 0.999) for t in (0, 1, 3, 5000)] == [0.0, 0.5, 0.75, 0.999]
    student, teacher = nn.Linear(2, 1), nn.Linear(2, 1)
    expected = 0.9 * teacher.weight.detach() + 0.1 * student.weight.detach()
    ema_update(teacher, student, 0.9)
    torch.testing.assert_close(teacher.weight.detach(), expected)


def test_ema_averages_trainable_batch_norm_statistics_and_copies_the_batch_count():
    student, teacher = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    student.train()
    student(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))  # running mean 0.1 * (2, 4), count 1
    ema_update(teacher, student, 0.75)
    torch.testing.assert_close(teacher.running_mean, torch.tensor([0.05, 0.1]))  # 0.75 * 0 + 0.25 * (0.2, 0.4)
    # variance: unbiased (2, 8) -> 0.9 * 1 + 0.1 * (2, 8) = (1.1, 1.7); teacher 0.75 * 1 + 0.25 * that
    torch.testing.assert_close(teacher.running_var, torch.tensor([1.025, 1.175]))
    assert teacher.num_batches_tracked.item() == 1


def test_ema_leaves_frozen_batch_norm_statistics_as_they_are():
    from detectron2.layers import FrozenBatchNorm2d

    student, teacher = FrozenBatchNorm2d(3), FrozenBatchNorm2d(3)
    for m in (student, teacher):
        m.running_mean.copy_(torch.tensor([0.3, -1.7, 2.9]))
        m.running_var.copy_(torch.tensor([0.11, 5.3, 7.7]))
    expected = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 0.999)
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_unsupervised_weight_is_zero_in_burn_in_then_alpha_then_decays_linearly():
    from detectron2.config import get_cfg

    from softteacher import add_softteacher_config
    from softteacher.engine import unsup_weight_at

    cfg = get_cfg()
    add_softteacher_config(cfg)
    cfg.SOLVER.MAX_ITER, cfg.SEMI.BURN_IN_ITERS, cfg.SEMI.UNSUP_WEIGHT = 100, 10, 4.0
    assert [unsup_weight_at(cfg, i) for i in (0, 9, 10, 99)] == [0.0, 0.0, 4.0, 4.0]
    cfg.SEMI.UNSUP_WEIGHT_DECAY_ITERS = 20
    assert [unsup_weight_at(cfg, i) for i in (79, 80, 90, 99)] == [4.0, 4.0, 2.0, 0.2]


def test_jitter_filter_iou_compares_passing_and_rejected_boxes_with_the_ground_truth():
    det = Instances((50, 50))
    det.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [20.0, 20.0, 30.0, 30.0],
                                         [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]]))
    det.pred_classes = torch.tensor([1, 1, 2, 0, 1])
    det.scores = torch.ones(5)
    det.keep_reg = torch.tensor([True, False, True, False, False])
    det.uncertainty = torch.tensor([0.01, 0.05, 0.01, 0.05, float("inf")])
    gt = Instances((50, 50))
    gt.gt_boxes = Boxes(torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    gt.gt_classes = torch.tensor([1])
    # passing: IoU 1 (box 0) and 0 (box 2, no class-2 truth); rejected: IoU 0.5 (box 1) and 0 (box 3,
    # wrong class); box 4 (an ignored region, never jittered) is neither
    stats = as_scalars(jitter_filter_iou([det], [gt]))
    assert stats == {"semi/jitter_iou_passing": 0.5, "semi/jitter_iou_rejected": 0.25}
    empty = Instances((50, 50))
    empty.gt_boxes, empty.gt_classes = Boxes(torch.zeros(0, 4)), torch.zeros(0, dtype=torch.long)
    no_objects = as_scalars(jitter_filter_iou([det], [empty]))
    assert no_objects == {"semi/jitter_iou_passing": 0.0, "semi/jitter_iou_rejected": 0.0}


def test_device_scalars_pool_each_statistic_over_what_was_added_and_read_once():
    from softteacher.engine.step import DeviceScalars

    period = DeviceScalars()
    period.add({"semi/precision_cls": (torch.tensor(3), torch.tensor(4)),
                "semi/bg_weight_mean": (torch.tensor(0.0), 0)})
    period.add({"semi/precision_cls": (torch.tensor(1), torch.tensor(4)), "semi/reg_uncertainty_thresh": (0.03, 1)})
    # pooled: (3 + 1) / (4 + 4); a statistic with no weight in the period is left out
    assert period.read() == {"semi/precision_cls": pytest.approx(0.5),
                             "semi/reg_uncertainty_thresh": pytest.approx(0.03)}
    assert period.read() == {}  # read resets the period
