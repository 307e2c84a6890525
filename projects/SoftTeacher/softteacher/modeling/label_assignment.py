"""PseCo's ROI label assignment for pseudo-boxes (Li et al., "PseCo: Pseudo Labeling and
Consistency Training for Semi-Supervised Object Detection", ECCV 2022, section 3.2), opt-in with
``SEMI.PREDICTION_GUIDED_ASSIGNMENT.ENABLED``.

Prediction-guided label assignment: a proposal's overlap with a noisy pseudo-box says little about
whether it sees the object; the teacher's prediction on the proposal says more. A proposal is a
candidate of the pseudo-box that its teacher-refined box overlaps most, by at least ``iou_thresh``;
each pseudo-box keeps as foreground its ``k`` best candidates by sqrt(IoU * teacher score of the
pseudo-box's class), with ``k`` = the sum of its ``candidate_topk`` largest candidate IoUs (at
least 1, as OTA's dynamic k); every other proposal is background.

Positive-proposal consistency voting: a pseudo-box on which the student's foreground samples
agree is a reliable regression target; each foreground sample's box regression is weighted by the
mean IoU of the student's boxes of that pseudo-box's samples with it.
"""

import torch
from detectron2.structures import Boxes, pairwise_iou
from detectron2.structures.boxes import matched_pairwise_iou


def prediction_guided_labels(teacher_iou, teacher_scores, ignored_rows, matched_idxs, matched_labels,
                             iou_thresh=0.4, candidate_topk=12):
    """One image's proposal labels from the teacher's predictions on them.

    Args:
        teacher_iou: (G, N) IoU of each proposal's teacher-refined box with each target box.
        teacher_scores: (G, N) the teacher's probability of each target's class on each proposal.
        ignored_rows: (G,) bool: targets that are ignored regions (they guide nothing).
        matched_idxs, matched_labels: (N,) the IoU matching of the proposals (``Matcher``'s
            output), which decides only what stays ignored (label -1, or matched to an ignored row).
    Returns:
        (matched_idxs, matched_labels): 1 for the chosen foreground (matched to its pseudo-box),
        -1 for ignored, 0 for background.
    """
    num_targets, num_proposals = teacher_iou.shape
    iou = teacher_iou.masked_fill(ignored_rows[:, None], 0.0)
    best_iou, best = iou.max(dim=0)
    candidate = (torch.arange(num_targets, device=iou.device)[:, None] == best[None, :]) & (best_iou >= iou_thresh)
    candidate_iou = torch.where(candidate, iou, torch.zeros_like(iou))
    topk = min(candidate_topk, num_proposals)
    dynamic_k = candidate_iou.topk(topk, dim=1).values.sum(dim=1).int().clamp(min=1)
    cost = torch.where(candidate, (iou * teacher_scores).clamp(min=0).sqrt(), torch.full_like(iou, -1.0))
    order = cost.sort(dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(num_proposals, device=iou.device).expand_as(order))
    foreground = (candidate & (rank < dynamic_k[:, None])).any(dim=0)
    ignored = (matched_labels == -1) | ((matched_labels == 1) & ignored_rows[matched_idxs])
    labels = torch.where(foreground, 1, torch.where(ignored, matched_labels, 0)).to(matched_labels.dtype)
    return torch.where(foreground, best, matched_idxs), labels


class TeacherGuide:
    """The teacher's predictions on the student's proposals, made once and shared by the step's
    samplings; each sampling adds the predictions on the targets it appends as proposals.

    Args:
        teacher_predictions: callable(per-image (N, 4) box tensors) -> (probabilities (R, K + 1),
            teacher-refined boxes (R, 4)) for all boxes in order, in the boxes' own coordinates.
        proposals: per image ``Instances`` with ``proposal_boxes``.
    """

    def __init__(self, teacher_predictions, proposals):
        self.teacher_predictions = teacher_predictions
        counts = [len(p) for p in proposals]
        probs, refined = teacher_predictions([p.proposal_boxes.tensor for p in proposals])
        self.proposal_predictions = list(zip(probs.split(counts), refined.split(counts)))

    def guides(self, targets, appended):
        """Per image, the (teacher IoU, teacher score) matrices of ``prediction_guided_labels`` for
        the proposals followed, when ``appended``, by the targets."""
        predictions = self.proposal_predictions
        if appended:
            counts = [len(t) for t in targets]
            probs, refined = self.teacher_predictions([t.gt_boxes.tensor for t in targets])
            predictions = [(torch.cat([p, tp]), torch.cat([r, tr])) for (p, r), tp, tr
                           in zip(predictions, probs.split(counts), refined.split(counts))]
        guides = []
        for t, (probs, refined) in zip(targets, predictions):
            classes = t.gt_classes.clamp(min=0)  # ignored regions' rows are masked out anyway
            guides.append((pairwise_iou(t.gt_boxes, Boxes(refined)), probs[:, classes].T))
        return guides


def consistency_weights(predicted_boxes, gt_boxes, image_of_sample):
    """Positive-proposal consistency voting: each foreground sample's regression weight, the mean
    IoU with its pseudo-box of the predicted boxes of all samples of that pseudo-box (same image,
    same target box).

    Args:
        predicted_boxes, gt_boxes: (F, 4) the student's decoded boxes and their targets.
        image_of_sample: (F,) the image each sample comes from.
    """
    ious = matched_pairwise_iou(Boxes(predicted_boxes), Boxes(gt_boxes))
    same_box = (gt_boxes[:, None, :] == gt_boxes[None, :, :]).all(dim=-1)
    same = (same_box & (image_of_sample[:, None] == image_of_sample[None, :])).to(ious.dtype)
    return (same @ ious) / same.sum(dim=1)
