"""The teacher's pseudo-labels for the student's strong views.

The teacher (eval mode, no grad) sees the weak views: RPN with the train-time proposal settings,
ROI head with test-time post-processing, detections above ``PSEUDO_SCORE_THRESH`` kept. Per
branch of the student's loss:

| branch | pseudo-boxes |
|---|---|
| RPN (objectness + boxes) | score > ``RPN_PSEUDO_THRESH`` |
| ROI classification (soft teacher) | score > ``CLS_PSEUDO_THRESH`` |
| ROI box regression (box jitter) | jitter reliability < ``REG_UNCERTAINTY_THRESH`` |

Opt-in (``SEMI.ADAPTIVE_SCORE_THRESH``, ``SEMI.ADAPTIVE_REG_THRESH``): per-class score thresholds
and a reliability threshold that follow the teacher (:mod:`.adaptive_thresholds`). Opt-in
(``SEMI.IGNORE_UNCERTAIN``): detections above ``IGNORE_MIN_SCORE`` that miss the RPN or
classification threshold are ignored regions (class ``IGNORE``) for that branch instead of
background, unless they overlap a kept pseudo-box (IoU >= 0.5: the same object).

Boxes are mapped into the strong view with each image's recorded weak -> strong matrix. The
teacher's features stay cached for the step, so that the student's sampled boxes can be mapped
back and scored for their background probability without another backbone pass.
"""

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.structures import Boxes, Instances, pairwise_iou

from ..data.augmentations import map_boxes
from .adaptive_thresholds import ReliabilityQuantileThreshold, ScoreMixtureThresholds
from .box_jitter import jitter_reliability
from .rpn import IGNORE

BRANCHES = ("rpn", "cls", "reg")


@contextlib.contextmanager
def train_time_proposals(rpn):
    """Make an eval-mode RPN keep as many proposals as in training (as the original teacher)."""
    saved = rpn.pre_nms_topk, rpn.post_nms_topk
    rpn.pre_nms_topk = dict.fromkeys((True, False), saved[0][True])
    rpn.post_nms_topk = dict.fromkeys((True, False), saved[1][True])
    try:
        yield
    finally:
        rpn.pre_nms_topk, rpn.post_nms_topk = saved


class TeacherBoxHead:
    """The teacher's ROI box head applied to given boxes on cached weak-view features."""

    def __init__(self, roi_heads, features, image_sizes):
        self.roi_heads = roi_heads
        self.features = features
        self.image_sizes = image_sizes

    def refine(self, boxes_per_image, classes_per_image):
        """Class-specific refinement of every box, clipped to its image (one ROI-head call)."""
        _, deltas = self.roi_heads.box_predictions(self.features, [Boxes(b) for b in boxes_per_image])
        boxes, classes = cat(boxes_per_image), cat(classes_per_image)
        if deltas.shape[1] > 4:  # class-specific regression
            deltas = deltas.view(len(boxes), deltas.shape[1] // 4, 4)[
                torch.arange(len(boxes), device=boxes.device), classes
            ]
        refined = self.roi_heads.box_predictor.box2box_transform.apply_deltas(deltas.float(), boxes)
        out = []
        for part, size in zip(refined.split([len(b) for b in boxes_per_image]), self.image_sizes):
            part = Boxes(part)
            part.clip(size)
            out.append(part.tensor)
        return out

    def background_probs(self, boxes_per_image):
        scores, _ = self.roi_heads.box_predictions(self.features, [Boxes(b) for b in boxes_per_image])
        return F.softmax(scores.float(), dim=-1)[:, -1]


def _targets(boxes, classes, image_size):
    targets = Instances(image_size)
    targets.gt_boxes = Boxes(boxes)
    targets.gt_classes = classes
    return targets


def with_ignored(targets, uncertain_boxes, same_object_iou=0.5):
    """``targets`` plus the uncertain boxes that do not overlap one of its boxes by
    ``same_object_iou``, as class ``IGNORE``."""
    if len(uncertain_boxes) == 0:
        return targets
    if len(targets):
        overlap = pairwise_iou(Boxes(uncertain_boxes), targets.gt_boxes).max(dim=1).values
        uncertain_boxes = uncertain_boxes[overlap < same_object_iou]
    ignored = _targets(uncertain_boxes, targets.gt_classes.new_full((len(uncertain_boxes),), IGNORE),
                       targets.image_size)
    return Instances.cat([targets, ignored])


def turned(matrices, eps=1e-6):
    """Which (N, 3, 3) affine maps rotate or shear (move a box off the axes)."""
    return (matrices[:, 0, 1].abs() > eps) | (matrices[:, 1, 0].abs() > eps)


def _image_index(counts, device):
    """The image each box of a concatenation belongs to, from the per-image box counts."""
    return torch.repeat_interleave(torch.arange(len(counts), device=device), torch.as_tensor(counts, device=device))


def match_counts(pred_boxes, pred_classes, gt_boxes, gt_classes, iou_thresh=0.5):
    """(true positives, predictions, ground truths found, ground truths) at an IoU, class-aware."""
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return 0, len(pred_boxes), 0, len(gt_boxes)
    hit = (pairwise_iou(Boxes(pred_boxes), Boxes(gt_boxes)) >= iou_thresh) & (
        pred_classes[:, None] == gt_classes[None, :]
    )
    return int(hit.any(1).sum()), len(pred_boxes), int(hit.any(0).sum()), len(gt_boxes)


class PseudoLabeler:
    """Turns a batch of weak/strong pairs into the student's unlabeled inputs and targets."""

    @configurable
    def __init__(
        self,
        teacher,
        *,
        score_thresh,
        rpn_thresh,
        cls_thresh,
        reg_uncertainty_thresh,
        jitter_times,
        jitter_scale,
        box_jitter=True,
        score_thresholds=None,
        reliability_threshold=None,
        reg_min_score=0.0,
        reg_skip_turned_views=False,
        ignore_uncertain=False,
        ignore_min_score=0.5,
        class_names=None,
    ):
        """
        Args:
            score_thresholds: a :class:`ScoreMixtureThresholds` whose per-class thresholds replace
                ``rpn_thresh`` and ``cls_thresh`` (None: the fixed ones).
            reliability_threshold: a :class:`ReliabilityQuantileThreshold` replacing
                ``reg_uncertainty_thresh`` (None: the fixed one).
            reg_min_score: regression pseudo-boxes must also score above this (with the adaptive
                reliability threshold, whose window then holds only such boxes).
            reg_skip_turned_views: no regression pseudo-boxes in strong views that are rotated or
                sheared against the weak view (there a box maps to a loose hull).
            ignore_uncertain: detections that miss the RPN or classification threshold are ignored
                regions for that branch, not background (needs a :class:`PseudoLabelRPN`).
            ignore_min_score: ... down to this score (below ``score_thresh`` they are ignored
                regions only, never pseudo-boxes).
            Both adapt only on training steps (``__call__``), not when ``label`` is called alone.
        """
        self.teacher = teacher
        self.score_thresh = score_thresh
        self.thresholds = {"rpn": rpn_thresh, "cls": cls_thresh}
        self.reg_uncertainty_thresh = reg_uncertainty_thresh
        self.jitter_times = jitter_times
        self.jitter_scale = jitter_scale
        self.box_jitter = box_jitter
        self.score_thresholds = score_thresholds
        self.reliability_threshold = reliability_threshold
        self.reg_min_score = reg_min_score
        self.reg_skip_turned_views = reg_skip_turned_views
        self.ignore_uncertain = ignore_uncertain
        self.ignore_min_score = ignore_min_score
        self.class_names = class_names

    @classmethod
    def from_config(cls, cfg, teacher):
        from ..data.datasets import dataset_class_names

        semi = cfg.SEMI
        adaptive_score, adaptive_reg = semi.ADAPTIVE_SCORE_THRESH, semi.ADAPTIVE_REG_THRESH
        return {
            "teacher": teacher,
            "score_thresh": semi.PSEUDO_SCORE_THRESH,
            "rpn_thresh": semi.RPN_PSEUDO_THRESH,
            "cls_thresh": semi.CLS_PSEUDO_THRESH,
            "reg_uncertainty_thresh": semi.REG_UNCERTAINTY_THRESH,
            "jitter_times": semi.JITTER_TIMES,
            "jitter_scale": semi.JITTER_SCALE,
            "box_jitter": semi.BOX_JITTER,
            "score_thresholds": ScoreMixtureThresholds(
                cfg.MODEL.ROI_HEADS.NUM_CLASSES, semi.CLS_PSEUDO_THRESH, adaptive_score.WINDOW,
                adaptive_score.MIN_SCORES, adaptive_score.RANGE,
            ) if adaptive_score.ENABLED else None,
            "reliability_threshold": ReliabilityQuantileThreshold(
                adaptive_reg.PASS_FRACTION, adaptive_reg.WINDOW
            ) if adaptive_reg.ENABLED and semi.BOX_JITTER else None,
            "reg_min_score": adaptive_reg.MIN_SCORE if adaptive_reg.ENABLED else 0.0,
            "reg_skip_turned_views": semi.REG_SKIP_TURNED_VIEWS,
            "ignore_uncertain": semi.IGNORE_UNCERTAIN,
            "ignore_min_score": semi.IGNORE_MIN_SCORE,
            "class_names": dataset_class_names(cfg),
        }

    @torch.no_grad()
    def teacher_detections(self, weak_inputs):
        """Every teacher detection (test-time score threshold, weak-view coordinates), and its
        head on these views' features."""
        teacher = self.teacher
        images = teacher.preprocess_image(weak_inputs)
        features = teacher.backbone(images.tensor)
        with train_time_proposals(teacher.proposal_generator):
            proposals, _ = teacher.proposal_generator(images, features, None)
        detections, _ = teacher.roi_heads(images, features, proposals)
        return detections, TeacherBoxHead(teacher.roi_heads, features, images.image_sizes)

    @torch.no_grad()
    def detect(self, weak_inputs):
        """Teacher detections above the score threshold (weak-view coordinates), and its head."""
        detections, head = self.teacher_detections(weak_inputs)
        return [d[d.scores > self.score_thresh] for d in detections], head

    @property
    def reg_threshold(self):
        """The reliability under which a pseudo-box trains box regression: the adaptive one once
        it has seen pseudo-boxes, else ``reg_uncertainty_thresh``."""
        adaptive = self.reliability_threshold
        if adaptive is not None and adaptive.window.filled()[0] > 0:
            return adaptive.threshold
        return self.reg_uncertainty_thresh

    @torch.no_grad()
    def label(self, weak_inputs, adapt=False):
        """The teacher's pseudo-boxes of weak views, in weak-view coordinates.

        Args:
            adapt: first update the adaptive thresholds (if any) with this batch (training steps).
        Returns:
            per image, ``Instances`` with ``pred_boxes``, ``pred_classes``, ``scores`` and a
            boolean ``keep_{branch}`` per loss branch (and ``uncertainty`` with box jitter);
            and the teacher's box head on these views' features.
        """
        detections, head = self.teacher_detections(weak_inputs)
        if adapt and self.score_thresholds is not None:
            self.score_thresholds.update(cat([d.scores for d in detections]), cat([d.pred_classes for d in detections]))
        lowest = min(self.score_thresh, self.ignore_min_score) if self.ignore_uncertain else self.score_thresh
        detections = [d[d.scores > lowest] for d in detections]
        per_class = None if self.score_thresholds is None else self.score_thresholds.thresholds
        pseudo_boxes = [d.scores > self.score_thresh for d in detections]  # the rest: ignored regions only
        for d, confident in zip(detections, pseudo_boxes):
            if per_class is not None:  # one threshold per class, for the RPN and classification alike
                keep = confident & (d.scores > per_class.to(d.scores.device)[d.pred_classes])
            for branch, thresh in self.thresholds.items():
                d.set(f"keep_{branch}", keep if per_class is not None else confident & (d.scores > thresh))
        if self.box_jitter:
            # only pseudo-boxes are jittered; ignored-only detections keep an infinite uncertainty
            reliabilities = jitter_reliability(
                head.refine, [d.pred_boxes.tensor[j] for d, j in zip(detections, pseudo_boxes)],
                [d.pred_classes[j] for d, j in zip(detections, pseudo_boxes)], self.jitter_times, self.jitter_scale,
            )
            for d, j, r in zip(detections, pseudo_boxes, reliabilities):
                d.uncertainty = r.new_full((len(d),), float("inf"))
                d.uncertainty[j] = r
            candidates = [(d.scores > self.reg_min_score) & j for d, j in zip(detections, pseudo_boxes)]
            if adapt and self.reliability_threshold is not None:
                self.reliability_threshold.update(cat([d.uncertainty[c] for d, c in zip(detections, candidates)]))
            for d, c in zip(detections, candidates):
                d.keep_reg = (d.uncertainty < self.reg_threshold) & c
        return detections, head

    def state_dict(self):
        """The adaptive thresholds' state (saved in checkpoints as "pseudo_labeler")."""
        return {name: part.state_dict() for name, part in self._adaptive_parts().items()}

    def load_state_dict(self, state):
        for name, part in self._adaptive_parts().items():
            if name in state:
                part.load_state_dict(state[name])

    def _adaptive_parts(self):
        parts = {"score_thresholds": self.score_thresholds, "reliability_threshold": self.reliability_threshold}
        return {name: part for name, part in parts.items() if part is not None}

    @property
    def branches(self):
        return BRANCHES if self.box_jitter else BRANCHES[:2]

    @torch.no_grad()
    def __call__(self, unlabeled):
        """
        Args:
            unlabeled: mapped weak/strong pairs (see :mod:`softteacher.data.mappers`).
        Returns:
            (inputs for ``SemiSupervisedRCNN(..., unlabeled=inputs)``, dict of scalars to log)
        """
        detections, head = self.label([u["weak"] for u in unlabeled], adapt=True)
        boxes = cat([d.pred_boxes.tensor for d in detections])
        counts = [len(d) for d in detections]
        image_index = _image_index(counts, boxes.device)
        weak_to_strong = torch.as_tensor(
            np.stack([u["weak_to_strong"] for u in unlabeled]), device=boxes.device
        )
        strong_sizes = torch.as_tensor(
            [u["strong"]["image"].shape[1:] for u in unlabeled], device=boxes.device, dtype=torch.float64
        )
        heights, widths = strong_sizes[image_index].unbind(1)
        strong_boxes = map_boxes(weak_to_strong[image_index], boxes.double(), heights, widths).float()
        visible = (strong_boxes[:, 2] > strong_boxes[:, 0]) & (strong_boxes[:, 3] > strong_boxes[:, 1])
        if self.box_jitter and self.reg_skip_turned_views:  # before the statistics, which count it
            for d, is_turned in zip(detections, turned(weak_to_strong).tolist()):
                d.keep_reg = d.keep_reg & (not is_turned)
        targets = {}
        boxes_per_image = strong_boxes.split(counts)
        for branch in self.branches:
            keep = cat([d.get(f"keep_{branch}") for d in detections]) & visible
            targets[branch] = [
                _targets(b[k], d.pred_classes[k], tuple(u["strong"]["image"].shape[1:]))
                for b, k, d, u in zip(boxes_per_image, keep.split(counts), detections, unlabeled)
            ]
            if self.ignore_uncertain and branch != "reg":
                uncertain = (visible & ~keep).split(counts)
                targets[branch] = [
                    with_ignored(t, b[u]) for t, b, u in zip(targets[branch], boxes_per_image, uncertain)
                ]
        strong_to_weak = torch.linalg.inv(weak_to_strong)
        weak_sizes = torch.as_tensor(head.image_sizes, device=boxes.device, dtype=torch.float64)

        def background_probs(samples):
            """Teacher background probability of the student's sampled (strong-view) boxes."""
            sample_boxes = cat([s.proposal_boxes.tensor for s in samples])
            sample_counts = [len(s) for s in samples]
            index = _image_index(sample_counts, boxes.device)
            heights, widths = weak_sizes[index].unbind(1)
            weak_boxes = map_boxes(strong_to_weak[index], sample_boxes.double(), heights, widths).float()
            return head.background_probs(weak_boxes.split(sample_counts))

        inputs = {
            "images": [u["strong"] for u in unlabeled],
            "rpn_targets": targets["rpn"],
            "cls_targets": targets["cls"],
            "reg_targets": targets.get("reg"),
            "background_probs": background_probs,
        }
        stats = self._statistics(unlabeled, detections)
        if self.ignore_uncertain:
            ignored = sum(int((t.gt_classes == IGNORE).sum()) for t in targets["cls"])
            stats["semi/ignored_boxes_cls"] = ignored / max(len(unlabeled), 1)
        return inputs, stats

    def _statistics(self, unlabeled, detections):
        stats = {}
        if self.score_thresholds is not None:
            for name, thresh in zip(self.class_names, self.score_thresholds.thresholds.tolist()):
                stats[f"semi/score_thresh/{name}"] = thresh
        num_images = max(len(unlabeled), 1)
        has_gt = all("unlabeled_gt_instances" in u for u in unlabeled)
        for branch in self.branches:
            kept = sum(int(d.get(f"keep_{branch}").sum()) for d in detections)
            stats[f"semi/pseudo_boxes_{branch}"] = kept / num_images
            if not has_gt:
                continue
            tp, predicted, found, total = pseudo_label_quality(
                detections, [u["unlabeled_gt_instances"] for u in unlabeled], branch
            )
            if predicted > 0:
                stats[f"semi/precision_{branch}"] = tp / predicted
            if total > 0:
                stats[f"semi/recall_{branch}"] = found / total
        if self.box_jitter:
            uncertainty = cat([d.uncertainty for d in detections])
            jittered = uncertainty.isfinite()
            if jittered.any():
                passed = cat([d.keep_reg for d in detections])[jittered]
                stats["semi/jitter_pass_fraction"] = passed.float().mean().item()
                stats["semi/jitter_uncertainty_median"] = uncertainty[jittered].median().item()
            if self.reliability_threshold is not None:
                stats["semi/reg_uncertainty_thresh"] = self.reg_threshold
            if has_gt:
                stats.update(jitter_filter_iou(detections, [u["unlabeled_gt_instances"] for u in unlabeled]))
        return stats


def pseudo_label_quality(detections, ground_truth, branch, iou_thresh=0.5):
    """Summed (true positives, pseudo-boxes, ground truths found, ground truths) of one branch's
    pseudo-boxes over images, class-aware, at an IoU."""
    counts = np.zeros(4, dtype=np.int64)
    for d, gt in zip(detections, ground_truth):
        keep = d.get(f"keep_{branch}")
        counts += match_counts(
            d.pred_boxes.tensor[keep], d.pred_classes[keep],
            gt.gt_boxes.tensor.to(keep.device), gt.gt_classes.to(keep.device), iou_thresh,
        )
    return tuple(int(c) for c in counts)


def jitter_filter_iou(detections, ground_truth):
    """Mean IoU with the best same-class ground-truth box (0 when none) of the jittered
    pseudo-boxes box jitter passes for regression and of those it rejects: whether the filter keeps
    the boxes that are better placed. Keys are left out when a group is empty."""
    ious = {True: [], False: []}
    for d, gt in zip(detections, ground_truth):
        if len(d) == 0:
            continue
        gt_boxes = gt.gt_boxes.tensor.to(d.pred_boxes.tensor.device)
        iou = pairwise_iou(d.pred_boxes, Boxes(gt_boxes)) if len(gt_boxes) else d.scores.new_zeros(len(d), 0)
        same_class = d.pred_classes[:, None] == gt.gt_classes.to(d.pred_classes.device)[None, :]
        best = (iou * same_class).max(dim=1).values if iou.shape[1] else d.scores.new_zeros(len(d))
        jittered = d.uncertainty.isfinite()
        for passed in (True, False):
            ious[passed].append(best[(d.keep_reg == passed) & jittered])
    out = {}
    for passed, name in ((True, "passing"), (False, "rejected")):
        values = torch.cat(ious[passed]) if ious[passed] else torch.zeros(0)
        if len(values):
            out[f"semi/jitter_iou_{name}"] = values.float().mean().item()
    return out
