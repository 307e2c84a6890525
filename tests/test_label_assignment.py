"""PseCo's prediction-guided label assignment and consistency voting (opt-in), against hand
computations."""

import math

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from softteacher import SoftTeacherTrainer
from softteacher.data import build_labeled_unlabeled_loader
from softteacher.modeling import PseudoLabeler
from softteacher.modeling.label_assignment import TeacherGuide, consistency_weights, prediction_guided_labels

from conftest import EVERY_DETECTION_IS_A_PSEUDO_BOX, soft_teacher_cfg

PLA = {"SEMI.PREDICTION_GUIDED_ASSIGNMENT.ENABLED": "True"}


def test_each_pseudo_box_keeps_its_dynamic_k_best_candidates_by_teacher_score_and_iou():
    # rows 0, 1: pseudo-boxes; row 2: an ignored region. Columns: six proposals.
    teacher_iou = torch.tensor([[0.9, 0.8, 0.5, 0.3, 0.0, 0.45],
                                [0.1, 0.0, 0.6, 0.0, 0.7, 0.42],
                                [0.95, 0.0, 0.0, 0.9, 0.0, 0.0]])
    teacher_scores = torch.tensor([[0.2, 0.9, 0.5, 0.9, 0.5, 0.95],
                                   [0.5, 0.5, 0.9, 0.5, 0.1, 0.5],
                                   [0.9, 0.9, 0.9, 0.9, 0.9, 0.9]])
    ignored_rows = torch.tensor([False, False, True])
    # the IoU matching: proposals 0 and 3 on the ignored region, 4 background
    matched_idxs = torch.tensor([2, 0, 1, 2, 1, 0])
    matched_labels = torch.tensor([1, 1, 1, 1, 0, 1], dtype=torch.int8)

    idxs, labels = prediction_guided_labels(teacher_iou, teacher_scores, ignored_rows, matched_idxs,
                                            matched_labels, iou_thresh=0.4, candidate_topk=12)
    # pseudo-box 0: candidates 0, 1, 5 (IoU >= 0.4, it is their best); k = int(0.9 + 0.8 + 0.45) = 2;
    #   sqrt(IoU * score): 0.42, 0.85, 0.65 -> proposals 1 and 5, not 0 (the highest IoU)
    # pseudo-box 1: candidates 2, 4; k = int(0.6 + 0.7) = 1; sqrt: 0.73, 0.26 -> proposal 2
    # proposal 3: no candidate (0.3), matched to the ignored region -> stays ignored; so does 0
    assert labels.tolist() == [1, 1, 1, 1, 0, 1]
    assert labels.dtype == matched_labels.dtype
    foreground = torch.tensor([False, True, True, False, False, True])
    assert idxs[foreground].tolist() == [0, 1, 0]
    assert idxs[[0, 3]].tolist() == [2, 2]  # the ignored ones keep their ignored match

    no_ignored = torch.tensor([False, False, False])
    teacher_iou[2] = 0.0
    idxs, labels = prediction_guided_labels(teacher_iou, teacher_scores, no_ignored, torch.tensor([0, 0, 1, 0, 1, 0]),
                                            matched_labels, 0.4, 12)
    assert labels.tolist() == [0, 1, 1, 0, 0, 1]  # proposal 0 (IoU 0.9 with pseudo-box 0) is background


def test_a_pseudo_box_with_little_overlap_still_keeps_one_proposal_and_topk_bounds_k():
    teacher_iou = torch.tensor([[0.45, 0.41, 0.9, 0.9, 0.9]])
    teacher_scores = torch.tensor([[0.9, 0.5, 0.8, 0.7, 0.6]])
    matched = torch.zeros(5, dtype=torch.int64), torch.ones(5, dtype=torch.int8)
    # top-2 IoUs sum to 1.8 -> k = 1 (all five would give 3.56 -> 3): the best sqrt(IoU * score), proposal 2
    _, labels = prediction_guided_labels(teacher_iou, teacher_scores, torch.tensor([False]), *matched, 0.4, 2)
    assert labels.tolist() == [0, 0, 1, 0, 0]
    _, labels = prediction_guided_labels(teacher_iou[:, :2], teacher_scores[:, :2], torch.tensor([False]),
                                         matched[0][:2], matched[1][:2], 0.4, 12)
    assert labels.tolist() == [1, 0]  # 0.45 + 0.41 < 1 -> k = 1, not 0


def test_consistency_weight_is_the_mean_iou_of_the_predictions_of_one_pseudo_box_in_one_image():
    gt_a, gt_b = [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]
    gt_boxes = torch.tensor([gt_a, gt_a, gt_b, gt_a])
    predicted = torch.tensor([[0.0, 0.0, 10.0, 10.0],  # IoU 1
                              [0.0, 0.0, 10.0, 5.0],  # 0.5
                              [20.0, 20.0, 25.0, 30.0],  # 0.5
                              [0.0, 0.0, 5.0, 10.0]])  # 0.5, same box as a's but another image
    weights = consistency_weights(predicted, gt_boxes, torch.tensor([0, 0, 0, 1]))
    torch.testing.assert_close(weights, torch.tensor([0.75, 0.75, 0.5, 0.5]))


def roi_heads_and_targets(tmp_path, tiny_semi, **overrides):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **{"MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": "512",
                                                   "MODEL.ROI_HEADS.POSITIVE_FRACTION": "1.0", **overrides})
    torch.manual_seed(0)
    heads = build_model(cfg).roi_heads
    target = Instances((100, 100))
    target.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 50.0, 50.0]]))
    target.gt_classes = torch.tensor([2])
    proposals = Instances((100, 100))
    proposals.proposal_boxes = Boxes(torch.tensor([[10.0, 10.0, 50.0, 50.0],  # on the pseudo-box
                                                   [12.0, 12.0, 48.0, 48.0],
                                                   [60.0, 60.0, 90.0, 90.0]]))
    proposals.objectness_logits = torch.zeros(3)
    return heads, [target], [proposals]


def test_the_roi_sample_follows_the_teachers_predictions_appended_pseudo_box_included(tiny_semi, tmp_path):
    asked = []

    def teacher_predictions(boxes_per_image):  # the teacher sees nothing at proposal 0
        asked.append(torch.cat(boxes_per_image))
        refined = {3: [[60.0, 60.0, 90.0, 90.0], [10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 90.0, 90.0]],
                   1: [[10.0, 10.0, 50.0, 50.0]]}[len(asked[-1])]
        return torch.full((len(refined), 5), 0.1), torch.tensor(refined)

    heads, targets, proposals = roi_heads_and_targets(tmp_path, tiny_semi, **PLA)
    guide = TeacherGuide(teacher_predictions, proposals)
    with EventStorage(0):
        samples = heads.sample_unlabeled(proposals, targets, guide)[0]
        again = heads.sample_unlabeled(proposals, targets, guide)[0]
    # the proposals predicted once, then each sampling's appended pseudo-box
    assert [a.tolist() for a in asked] == [proposals[0].proposal_boxes.tensor.tolist(), [[10.0, 10.0, 50.0, 50.0]],
                                           [[10.0, 10.0, 50.0, 50.0]]]
    background = heads.num_classes
    for s in (samples, again):
        by_box = {tuple(b.tolist()): c.item() for b, c in zip(s.proposal_boxes.tensor, s.gt_classes)}
        # candidates: proposal 1 and the appended box (teacher IoU 1 each), k = 2; proposal 0: background
        assert len(s) == 4 and sorted(s.gt_classes.tolist()) == [2, 2, background, background]
        assert by_box[(12.0, 12.0, 48.0, 48.0)] == 2 and by_box[(60.0, 60.0, 90.0, 90.0)] == background
        on_box = s.gt_classes[(s.proposal_boxes.tensor == torch.tensor([10.0, 10.0, 50.0, 50.0])).all(1)]
        assert sorted(on_box.tolist()) == [2, background]  # the appended box foreground, proposal 0 background
    assert heads.proposal_append_gt and not heads.proposal_matcher.guides  # left as found

    iou_heads, targets, proposals = roi_heads_and_targets(tmp_path, tiny_semi)  # the published IoU sampling
    with EventStorage(0):
        iou_samples = iou_heads.sample_unlabeled(proposals, targets, guide)[0]
    assert len(asked) == 3  # not asked
    assert sorted(iou_samples.gt_classes.tolist()) == [2, 2, 2, background]


def test_consistency_voting_weights_each_foreground_samples_l1_loss(tiny_semi, tmp_path):
    cfg_heads, _, _ = roi_heads_and_targets(tmp_path, tiny_semi, **{"SEMI.CONSISTENCY_VOTING": "True"})
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])  # proposal = pseudo-box: target 0
    k = cfg_heads.num_classes
    deltas = torch.zeros(2, 4 * k)
    deltas[0, 4 * 1] = 0.1  # class 1, dx: shifted by 0.1 * 10 / 10 = 0.1 px -> IoU 9.9 / 10.1
    deltas[1, 4 * 1 + 2] = 0.2  # dw: width 10 * e^(0.2 / 5) -> IoU 10 / 10.408
    wx, _, ww, _ = cfg_heads.box_predictor.box2box_transform.weights
    assert (wx, ww) == (10.0, 5.0) and cfg_heads.box_predictor.smooth_l1_beta == 0.0
    weight = ((10 - 0.1) / (10 + 0.1) + 10 / (10 * math.exp(0.2 / 5))) / 2
    loss = cfg_heads._consistency_weighted_box_loss(box, box, deltas, torch.tensor([1, 1]), torch.tensor([0, 0]), 8)
    assert loss.item() == pytest.approx(weight * (0.1 + 0.2) / 8, rel=1e-5)
    no_boxes = torch.zeros(0, 4)
    empty = cfg_heads._consistency_weighted_box_loss(no_boxes, no_boxes, deltas[:0], torch.zeros(0, dtype=torch.long),
                                                     torch.zeros(0, dtype=torch.long), 8)
    assert empty.item() == 0.0  # no foreground sample


def test_teacher_predictions_are_its_probabilities_and_boxes_refined_for_its_best_class_mapped_back(
    tiny_semi, tmp_path
):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **EVERY_DETECTION_IS_A_PSEUDO_BOX)
    torch.manual_seed(0)
    teacher = SoftTeacherTrainer.build_teacher(cfg)
    labeler = PseudoLabeler(cfg, teacher)
    unlabeled = next(iter(build_labeled_unlabeled_loader(cfg)))[1]
    for u in unlabeled:  # strong = weak shifted by (+4, +6)
        u["weak_to_strong"] = torch.tensor([[1.0, 0.0, 4.0], [0.0, 1.0, 6.0], [0.0, 0.0, 1.0]],
                                           dtype=torch.float64).numpy()
    with EventStorage(0):
        inputs, _ = labeler(unlabeled)
    strong = [torch.tensor([[14.0, 16.0, 40.0, 50.0], [30.0, 20.0, 60.0, 44.0]]) for _ in unlabeled]
    probs, refined = inputs["teacher_predictions"](strong)

    weak = teacher.preprocess_image([u["weak"] for u in unlabeled])
    features = teacher.backbone(weak.tensor)
    weak_boxes = [b - torch.tensor([4.0, 6.0, 4.0, 6.0]) for b in strong]
    with torch.no_grad():
        scores, deltas = teacher.roi_heads.box_predictions(features, [Boxes(b) for b in weak_boxes])
    expected_probs = torch.softmax(scores, dim=-1)
    torch.testing.assert_close(probs, expected_probs, rtol=1e-4, atol=1e-5)
    best = expected_probs[:, :-1].argmax(1)
    deltas = deltas.view(len(best), -1, 4)[torch.arange(len(best)), best]
    expected = teacher.roi_heads.box_predictor.box2box_transform.apply_deltas(deltas, torch.cat(weak_boxes))
    heights_widths = torch.tensor([u["strong"]["image"].shape[1:] for u in unlabeled]).repeat_interleave(2, 0)
    expected = expected + torch.tensor([4.0, 6.0, 4.0, 6.0])
    expected = torch.minimum(expected.clamp(min=0), heights_widths.flip(1).repeat(1, 2).float())
    torch.testing.assert_close(refined, expected, rtol=1e-4, atol=1e-3)
    probs, refined = inputs["teacher_predictions"]([torch.zeros(0, 4) for _ in unlabeled])  # images without boxes
    assert probs.shape == (0, cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1) and refined.shape == (0, 4)


def test_a_step_with_the_prediction_guided_assignment_and_voting_trains_on_pseudo_boxes(tiny_semi, tmp_path):
    """Smoke test of the opt-ins together: finite, non-zero unlabeled losses."""
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, **EVERY_DETECTION_IS_A_PSEUDO_BOX, **PLA,
                           **{"SEMI.CONSISTENCY_VOTING": "True"})
    torch.manual_seed(0)
    student = build_model(cfg)
    teacher = SoftTeacherTrainer.build_teacher(cfg)
    teacher.load_state_dict(student.state_dict())
    labeled, unlabeled = next(iter(build_labeled_unlabeled_loader(cfg)))
    with EventStorage(0):
        inputs, _ = PseudoLabeler(cfg, teacher)(unlabeled)
        losses = student(labeled, unlabeled=inputs)
    for name in ("unsup_loss_cls", "unsup_loss_box_reg"):
        assert math.isfinite(losses[name].item()) and losses[name].item() > 0
