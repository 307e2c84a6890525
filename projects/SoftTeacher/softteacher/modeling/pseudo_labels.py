"""The teacher's pseudo-labels for the student's strong views.

The teacher (eval mode, no grad) sees the weak views: RPN with the train-time proposal settings,
ROI head with test-time post-processing. Which detections train which branch of the student's
loss is the threshold policy's (:mod:`.pseudo_label_thresholds`); how uncertain the teacher
is of a box's place is box jitter's (:mod:`.box_jitter`); what is logged about them is in
:mod:`.pseudo_label_stats`.

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
from detectron2.structures import Boxes

from ..structures import image_index, map_boxes, turned, where_per_group
from .box_jitter import jitter_uncertainty
from .pseudo_label_stats import pseudo_label_statistics
from .pseudo_label_thresholds import BRANCHES, PseudoLabelThresholds, box_targets, ignored_regions, with_ignored
from .pseudo_mixing import PseudoLabelMixer


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
        counts = [len(b) for b in boxes_per_image]
        # clipped to each box's image in one clamp (Boxes.clip would read back a finiteness check per image)
        sizes = torch.as_tensor(self.image_sizes, device=refined.device, dtype=refined.dtype)
        limits = sizes[image_index(counts, refined.device)].flip(1).repeat(1, 2)  # (w, h, w, h)
        return list(torch.minimum(refined.clamp(min=0), limits).split(counts))

    def background_probs(self, boxes_per_image):
        scores, _ = self.roi_heads.box_predictions(self.features, [Boxes(b) for b in boxes_per_image])
        return F.softmax(scores.float(), dim=-1)[:, -1]

    def predict(self, boxes_per_image):
        """Class probabilities (R, K + 1) of every box, and the box refined for its most probable
        object class (one ROI-head call)."""
        scores, deltas = self.roi_heads.box_predictions(self.features, [Boxes(b) for b in boxes_per_image])
        probs = F.softmax(scores.float(), dim=-1)
        boxes = cat(boxes_per_image)
        if deltas.shape[1] > 4:  # class-specific regression
            rows = torch.arange(len(boxes), device=boxes.device)
            deltas = deltas.view(len(boxes), deltas.shape[1] // 4, 4)[rows, probs[:, :-1].argmax(dim=1)]
        return probs, self.roi_heads.box_predictor.box2box_transform.apply_deltas(deltas.float(), boxes)


class PseudoLabeler:
    """Turns a batch of weak/strong pairs into the student's unlabeled inputs and targets."""

    @configurable
    def __init__(self, teacher, *, thresholds, jitter_times, jitter_scale, box_jitter=True, class_names=None,
                 mixer=None):
        """
        Args:
            teacher: the EMA teacher (a :class:`SemiSupervisedRCNN` in eval mode).
            thresholds: a :class:`PseudoLabelThresholds`. From a config, its arguments can be
                given here to override the config's (e.g. ``ignore_uncertain=False``).
            jitter_times, jitter_scale: box jitter's copies per box and their offset scale.
            box_jitter: measure jitter uncertainty and train box regression on pseudo-boxes.
            mixer: a :class:`PseudoLabelMixer` that also gives the student mixed views, or None.
        """
        self.teacher = teacher
        self.thresholds = thresholds
        self.jitter_times = jitter_times
        self.jitter_scale = jitter_scale
        self.box_jitter = box_jitter
        self.class_names = class_names
        self.mixer = mixer
        self.last_teacher_scores = None

    @classmethod
    def from_config(cls, cfg, teacher, **threshold_overrides):
        from ..datasets import dataset_class_names

        return {
            "teacher": teacher,
            "thresholds": PseudoLabelThresholds(cfg, **threshold_overrides),
            "jitter_times": cfg.SEMI.JITTER_TIMES,
            "jitter_scale": cfg.SEMI.JITTER_SCALE,
            "box_jitter": cfg.SEMI.BOX_JITTER,
            "class_names": dataset_class_names(cfg),
            "mixer": PseudoLabelMixer.from_config(cfg),
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
        return [d[d.scores > self.thresholds.score_thresh] for d in detections], head

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
        # every score of the last batch, before any threshold: per-image tensors kept on the device,
        # joined and read only when a drought of pseudo-boxes is reported
        self.last_teacher_scores = [d.scores for d in detections]
        if adapt and self.thresholds.adaptive_scores is not None:  # fitted to every detection
            self.thresholds.adaptive_scores.update(
                cat([d.scores for d in detections]), cat([d.pred_classes for d in detections]), len(detections)
            )
        lowest = self.thresholds.lowest_score
        detections = [d[i] for d, i in zip(detections, where_per_group([d.scores > lowest for d in detections]))]
        pseudo_boxes = self.thresholds.mark_score_branches(detections)
        if self.box_jitter:
            # only pseudo-boxes are jittered; ignored-only detections keep an infinite uncertainty
            jittered = where_per_group(pseudo_boxes)
            uncertainties = jitter_uncertainty(
                head.refine, [d.pred_boxes.tensor[j] for d, j in zip(detections, jittered)],
                [d.pred_classes[j] for d, j in zip(detections, jittered)], self.jitter_times, self.jitter_scale,
            )
            for d, j, u in zip(detections, jittered, uncertainties):
                d.uncertainty = d.scores.new_full((len(d),), float("inf"), dtype=u.dtype)
                d.uncertainty[j] = u
            self.thresholds.mark_regression(detections, pseudo_boxes, adapt=adapt)
        return detections, head

    def state_dict(self):
        """The adaptive thresholds' state (saved in checkpoints as "pseudo_labeler")."""
        return self.thresholds.state_dict()

    def load_state_dict(self, state):
        self.thresholds.load_state_dict(state)

    @property
    def branches(self):
        return BRANCHES if self.box_jitter else BRANCHES[:2]

    @torch.no_grad()
    def __call__(self, unlabeled, statistics=True):
        """
        Args:
            unlabeled: mapped weak/strong pairs (see :mod:`softteacher.data.mappers`).
            statistics: also compute the statistics to log (the trainer asks on logging steps).
        Returns:
            (inputs for ``SemiSupervisedRCNN(..., unlabeled=inputs)``, the statistics to log as
            (sum, weight) pairs: :mod:`.pseudo_label_stats`)
        """
        detections, head = self.label([u["weak"] for u in unlabeled], adapt=True)
        boxes = cat([d.pred_boxes.tensor for d in detections])
        counts = [len(d) for d in detections]
        box_image = image_index(counts, boxes.device)
        weak_to_strong = torch.as_tensor(
            np.stack([u["weak_to_strong"] for u in unlabeled]), device=boxes.device
        )
        strong_sizes = torch.as_tensor(
            [u["strong"]["image"].shape[1:] for u in unlabeled], device=boxes.device, dtype=torch.float64
        )
        heights, widths = strong_sizes[box_image].unbind(1)
        strong_boxes = map_boxes(weak_to_strong[box_image], boxes.double(), heights, widths).float()
        visible = (strong_boxes[:, 2] > strong_boxes[:, 0]) & (strong_boxes[:, 3] > strong_boxes[:, 1])
        if self.box_jitter and self.thresholds.reg_skip_turned_views:  # before the statistics, which count it
            for d, is_turned in zip(detections, turned(weak_to_strong).tolist()):
                d.keep_reg = d.keep_reg & (not is_turned)
        boxes_per_image, visible_per_image = strong_boxes.split(counts), visible.split(counts)
        masks = {}  # (branch, "kept" or "ignored") -> one mask per image
        for branch in self.branches:
            masks[branch, "kept"] = [d.get(f"keep_{branch}") & v for d, v in zip(detections, visible_per_image)]
            if self.thresholds.ignore_uncertain and branch != "reg":
                masks[branch, "ignored"] = [
                    ignored_regions(b, k, v & ~k)
                    for b, k, v in zip(boxes_per_image, masks[branch, "kept"], visible_per_image)
                ]
        # every selection of every branch and image at once: two host synchronisations
        selected = iter(where_per_group([m for image_masks in masks.values() for m in image_masks]))
        selected = {key: [next(selected) for _ in image_masks] for key, image_masks in masks.items()}
        targets = {}
        for branch in self.branches:
            targets[branch] = [
                box_targets(b[i], d.pred_classes[i], tuple(u["strong"]["image"].shape[1:]))
                for b, i, d, u in zip(boxes_per_image, selected[branch, "kept"], detections, unlabeled)
            ]
            if (branch, "ignored") in selected:
                ignored = selected[branch, "ignored"]
                targets[branch] = [with_ignored(t, b[i]) for t, b, i in zip(targets[branch], boxes_per_image, ignored)]
        strong_to_weak = torch.linalg.inv(weak_to_strong)
        weak_sizes = torch.as_tensor(head.image_sizes, device=boxes.device, dtype=torch.float64)

        def to_weak(boxes_per_image):
            counts = [len(b) for b in boxes_per_image]
            index = image_index(counts, boxes.device)
            heights, widths = weak_sizes[index].unbind(1)
            return map_boxes(strong_to_weak[index], cat(boxes_per_image).double(), heights, widths).float(), index

        def background_probs(samples):
            """Teacher background probability of the student's sampled (strong-view) boxes."""
            weak_boxes, _ = to_weak([s.proposal_boxes.tensor for s in samples])
            return head.background_probs(weak_boxes.split([len(s) for s in samples]))

        def teacher_predictions(boxes_per_image):
            """The teacher's class probabilities of strong-view boxes, and its refined boxes mapped
            back into the strong view."""
            weak_boxes, index = to_weak(boxes_per_image)
            probs, refined = head.predict(weak_boxes.split([len(b) for b in boxes_per_image]))
            heights, widths = strong_sizes[index].unbind(1)
            return probs, map_boxes(weak_to_strong[index], refined.double(), heights, widths).float()

        inputs = {
            "images": [u["strong"] for u in unlabeled],
            "rpn_targets": targets["rpn"],
            "cls_targets": targets["cls"],
            "reg_targets": targets.get("reg"),
            "background_probs": background_probs,
            "teacher_predictions": teacher_predictions,
            "statistics": {} if statistics else None,
        }
        if self.mixer is not None:
            inputs["mixed"] = self.mixer([u["strong"]["image"] for u in unlabeled], targets)
        if not statistics:
            return inputs, {}
        stats = pseudo_label_statistics(
            self.thresholds, self.branches, self.class_names, unlabeled, detections, targets["cls"]
        )
        return inputs, stats
