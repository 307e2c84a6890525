"""ROI heads that learn from pseudo-labels: soft-teacher classification, jitter-filtered regression.

On labeled images they are detectron2's ``StandardROIHeads``. On unlabeled (strong-view) images:

- classification: the student's proposals are sampled against the high-score pseudo-boxes as
  usual; background samples are weighted by the teacher's background probability, foreground
  samples by 1, and loss = sum(w_i * CE_i) / max(sum(w_i), 1);
- regression: the proposals are sampled against the pseudo-boxes of low jitter uncertainty; only the
  foreground samples' box features are computed, normalised by all samples as detectron2 does.

Opt-in (:mod:`.label_assignment`, PseCo's): both samplings label the proposals by the teacher's
predictions on them instead of their IoU, and regression is weighted by consistency voting.
"""

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.proposal_generator.proposal_utils import add_ground_truth_to_proposals
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from fvcore.nn import smooth_l1_loss

from ..structures import image_index, where_per_group
from .label_assignment import TeacherGuide, consistency_weights, prediction_guided_labels
from .rpn import IGNORE


def weighted_cross_entropy(scores, gt_classes, weights, focal_gamma=0.0):
    """sum(w_i * (1 - p_i)^gamma * CE_i) / max(sum(w_i), 1), p_i the softmax probability of the
    target class (gamma 0: weighted cross-entropy; detectron2's own loss is a plain mean)."""
    if scores.numel() == 0:
        return scores.sum() * 0.0
    ce = F.cross_entropy(scores.float(), gt_classes, reduction="none")
    if focal_gamma:
        ce = (1.0 - torch.exp(-ce)) ** focal_gamma * ce
    return (weights * ce).sum() / weights.sum().clamp(min=1.0)


class WeightedFastRCNNOutputLayers(FastRCNNOutputLayers):
    """``FastRCNNOutputLayers`` with a per-sample weighted classification loss."""

    @configurable
    def __init__(self, input_shape, *, focal_gamma=0.0, **kwargs):
        """
        Args:
            focal_gamma: focal loss's gamma for the weighted (unlabeled) loss (0: cross-entropy, as
                published; Unbiased Teacher's pseudo-label loss uses 1.5).
        """
        super().__init__(input_shape, **kwargs)
        self.focal_gamma = focal_gamma

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {**super().from_config(cfg, input_shape), "focal_gamma": cfg.SEMI.UNSUP_CLS_FOCAL_GAMMA}

    def weighted_cls_loss(self, scores, gt_classes, weights):
        return weighted_cross_entropy(scores, gt_classes, weights, self.focal_gamma)


class PseudoBoxesFirstMatcher:
    """The ROI heads' ``Matcher``, told which target rows of the next image are ignored regions
    (class ``IGNORE``): a proposal that overlaps some kept pseudo-box by the foreground IoU is
    matched among the kept boxes even where an ignored region overlaps it more, so it stays a
    foreground sample (the RPN keeps objects over ignored regions the same way). Elsewhere it is
    detectron2's matching, ignored regions included. Given the next image's teacher guides, the
    foreground is then chosen by :func:`.label_assignment.prediction_guided_labels`."""

    def __init__(self, matcher, iou_thresh=0.4, candidate_topk=12):
        self.matcher = matcher
        self.iou_thresh, self.candidate_topk = iou_thresh, candidate_topk
        self.ignored_rows = []  # one (G,) mask per image, consumed in order
        self.guides = []  # one (teacher IoU, teacher scores) pair per image, or none

    def __call__(self, quality):
        ignored = self.ignored_rows.pop(0) if self.ignored_rows else None
        guide = self.guides.pop(0) if self.guides else None
        if ignored is not None and len(quality):
            foreground = ((quality >= self.matcher.thresholds[-2]) & ~ignored[:, None]).any(0)
            quality = torch.where(ignored[:, None] & foreground[None, :], torch.zeros_like(quality), quality)
        matched_idxs, matched_labels = self.matcher(quality)
        if guide is None or not len(quality):
            return matched_idxs, matched_labels
        return prediction_guided_labels(*guide, ignored, matched_idxs, matched_labels,
                                        self.iou_thresh, self.candidate_topk)


@ROI_HEADS_REGISTRY.register()
class SoftTeacherROIHeads(StandardROIHeads):
    @configurable
    def __init__(self, *, soft_background_weight=True, prediction_guided=False, pla_iou_thresh=0.4,
                 pla_candidate_topk=12, consistency_voting=False, **kwargs):
        """
        Args:
            soft_background_weight: weight background samples by the teacher's background
                probability (False: weight 1, a plain pseudo-label loss, for ablations).
            prediction_guided, pla_iou_thresh, pla_candidate_topk: label the unlabeled samples
                by the teacher's predictions on them (:mod:`.label_assignment`).
            consistency_voting: weight the unlabeled box regression by consistency voting.
        """
        super().__init__(**kwargs)
        self.soft_background_weight = soft_background_weight
        self.prediction_guided = prediction_guided
        self.consistency_voting = consistency_voting
        self.proposal_matcher = PseudoBoxesFirstMatcher(self.proposal_matcher, pla_iou_thresh, pla_candidate_topk)

    def label_and_sample_proposals(self, proposals, targets):
        self.proposal_matcher.ignored_rows = [t.gt_classes == IGNORE for t in targets]
        try:
            return super().label_and_sample_proposals(proposals, targets)
        finally:
            self.proposal_matcher.ignored_rows = []

    def sample_unlabeled(self, proposals, targets, guide=None):
        """``label_and_sample_proposals`` against pseudo-boxes, labelled by the teacher's
        predictions (a :class:`.label_assignment.TeacherGuide`) where that is enabled."""
        if not self.prediction_guided or guide is None:
            return self.label_and_sample_proposals(proposals, targets)
        append_gt = self.proposal_append_gt
        if append_gt:  # appended here so that the teacher also predicts on the appended boxes
            proposals = add_ground_truth_to_proposals(targets, proposals)
        self.proposal_matcher.guides = guide.guides(targets, append_gt)
        self.proposal_append_gt = False
        try:
            return self.label_and_sample_proposals(proposals, targets)
        finally:
            self.proposal_append_gt = append_gt
            self.proposal_matcher.guides = []

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        pla = cfg.SEMI.PREDICTION_GUIDED_ASSIGNMENT
        ret.update(soft_background_weight=cfg.SEMI.SOFT_BG_WEIGHT, prediction_guided=pla.ENABLED,
                   pla_iou_thresh=pla.IOU_THRESH, pla_candidate_topk=pla.CANDIDATE_TOPK,
                   consistency_voting=cfg.SEMI.CONSISTENCY_VOTING)
        return ret

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = WeightedFastRCNNOutputLayers(cfg, ret["box_head"].output_shape)
        return ret

    def box_predictions(self, features, boxes):
        """(class scores, box deltas) of the box head for per-image ``Boxes``."""
        pooled = self.box_pooler([features[f] for f in self.box_in_features], boxes)
        return self.box_predictor(self.box_head(pooled))

    def unsupervised_losses(self, features, proposals, cls_targets, reg_targets, background_probs, statistics=None,
                            teacher_predictions=None):
        """Losses of the student's strong-view proposals against pseudo-labels.

        Args:
            features: the student's backbone features of the strong views.
            proposals: the student's RPN proposals per image.
            cls_targets, reg_targets: per-image ``Instances`` of pseudo-boxes (``gt_boxes``,
                ``gt_classes``) for classification and for regression; ``reg_targets`` None
                leaves regression out (no box jitter).
            background_probs: callable(list of sampled ``Instances``) -> (R,) teacher background
                probability of every sample, in order.
            statistics: a dict that gets ``semi/bg_weight_mean`` as a (sum, count) pair of tensors
                (see :mod:`.pseudo_label_stats`), or None.
            teacher_predictions: callable(per-image box tensors) -> (class probabilities, refined
                boxes) of the teacher on them, for the prediction-guided assignment.
        """
        guide = None
        if self.prediction_guided and teacher_predictions is not None:
            guide = TeacherGuide(teacher_predictions, proposals)
        samples = self.sample_unlabeled(proposals, cls_targets, guide)
        scores, _ = self.box_predictions(features, [p.proposal_boxes for p in samples])
        gt_classes = cat([p.gt_classes for p in samples])
        weights = torch.ones_like(gt_classes, dtype=torch.float32)
        background = gt_classes == self.num_classes
        if self.soft_background_weight:
            weights = torch.where(background, background_probs(samples).float(), weights)
        if statistics is not None:
            statistics["semi/bg_weight_mean"] = ((weights * background).sum(), background.sum())
        losses = {"loss_cls": self.box_predictor.weighted_cls_loss(scores, gt_classes, weights)}
        if reg_targets is not None:
            losses["loss_box_reg"] = self._pseudo_box_regression_loss(features, proposals, reg_targets, guide)
        # as FastRCNNOutputLayers.losses weighs the supervised ones (MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT)
        return {name: value * self.box_predictor.loss_weight.get(name, 1.0) for name, value in losses.items()}

    def _pseudo_box_regression_loss(self, features, proposals, reg_targets, guide=None):
        # A sampling of its own, as the original code does: the regression targets (low jitter
        # uncertainty) are another set of boxes than the classification ones (score > 0.9), so the
        # classification sample's matches and foreground/background split do not serve here.
        samples = self.sample_unlabeled(proposals, reg_targets, guide)
        num_samples = sum(len(p) for p in samples)
        foreground = where_per_group([(p.gt_classes >= 0) & (p.gt_classes < self.num_classes) for p in samples])
        foreground = [p[i] for p, i in zip(samples, foreground)]
        num_foreground = sum(len(p) for p in foreground)
        _, deltas = self.box_predictions(features, [p.proposal_boxes for p in foreground])
        gt_boxes = [p.gt_boxes.tensor if p.has("gt_boxes") else p.proposal_boxes.tensor for p in foreground]
        proposal_boxes = cat([p.proposal_boxes.tensor for p in foreground])
        gt_boxes = cat(gt_boxes) if gt_boxes else deltas.new_zeros(0, 4)
        classes = cat([p.gt_classes for p in foreground])
        if self.consistency_voting:
            images = image_index([len(p) for p in foreground], deltas.device)
            return self._consistency_weighted_box_loss(proposal_boxes, gt_boxes, deltas, classes, images, num_samples)
        loss = self.box_predictor.box_reg_loss(proposal_boxes, gt_boxes, deltas, classes)
        # box_reg_loss averages over the samples it was given; detectron2 averages over all
        return loss * max(num_foreground, 1) / max(num_samples, 1)

    def _consistency_weighted_box_loss(self, proposal_boxes, gt_boxes, deltas, classes, images, num_samples):
        """sum_i w_i * smooth_l1_i / num_samples over the foreground samples, w_i their consistency
        voting weight (:func:`.label_assignment.consistency_weights`)."""
        predictor = self.box_predictor
        if deltas.shape[1] > 4:  # class-specific regression
            rows = torch.arange(len(deltas), device=deltas.device)
            deltas = deltas.view(len(deltas), deltas.shape[1] // 4, 4)[rows, classes]
        predicted = predictor.box2box_transform.apply_deltas(deltas.detach().float(), proposal_boxes)
        weights = consistency_weights(predicted, gt_boxes, images)
        target_deltas = predictor.box2box_transform.get_deltas(proposal_boxes, gt_boxes)
        per_sample = smooth_l1_loss(deltas.float(), target_deltas, predictor.smooth_l1_beta, reduction="none").sum(1)
        return (weights * per_sample).sum() / max(num_samples, 1)
