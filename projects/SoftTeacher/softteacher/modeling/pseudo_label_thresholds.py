"""Which teacher detections train which loss branch of the student: the threshold policy.

| branch | pseudo-boxes |
|---|---|
| RPN (objectness + boxes) | score > ``RPN_PSEUDO_THRESH`` |
| ROI classification (soft teacher) | score > ``CLS_PSEUDO_THRESH`` |
| ROI box regression (box jitter) | score > ``PSEUDO_SCORE_THRESH``, jitter uncertainty < ``REG_UNCERTAINTY_THRESH`` |

Opt-in (``SEMI.ADAPTIVE_SCORE_THRESH``, ``SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH``): per-class score
thresholds and an uncertainty threshold that follow the teacher (:mod:`.adaptive_thresholds`).
Opt-in (``SEMI.IGNORE_UNCERTAIN``): detections above ``IGNORE_MIN_SCORE`` that miss the RPN or
classification threshold are ignored regions (class ``IGNORE``) for that branch instead of
background, unless they overlap a kept pseudo-box (IoU >= 0.5: the same object).
"""

from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.structures import Boxes, Instances, pairwise_iou

from .adaptive_thresholds import LabelDistributionThresholds, ScoreMixtureThresholds, UncertaintyQuantileThreshold
from .rpn import IGNORE

BRANCHES = ("rpn", "cls", "reg")
LEGACY_STATE_NAMES = {"reliability_threshold": "uncertainty_threshold"}  # checkpoints of release 0.1


def box_targets(boxes, classes, image_size):
    """``Instances`` with ``gt_boxes`` and ``gt_classes``, as the student's heads take them."""
    targets = Instances(image_size)
    targets.gt_boxes = Boxes(boxes)
    targets.gt_classes = classes
    return targets


def ignored_regions(boxes, kept, uncertain, same_object_iou=0.5):
    """Which of one image's boxes are ignored regions: the ``uncertain`` ones that do not overlap a
    ``kept`` one by ``same_object_iou`` (then they are the same object). Masks in, mask out, all on
    the device."""
    same_object = (pairwise_iou(Boxes(boxes), Boxes(boxes)) >= same_object_iou) & kept[None, :]
    return uncertain & ~same_object.any(dim=1)


def with_ignored(targets, ignored_boxes):
    """``targets`` followed by ``ignored_boxes`` as class ``IGNORE``."""
    ignored = box_targets(ignored_boxes, targets.gt_classes.new_full((len(ignored_boxes),), IGNORE),
                          targets.image_size)
    return Instances.cat([targets, ignored])


def label_distribution_thresholds(cfg):
    """SEMI.LABEL_DISTRIBUTION_THRESH's thresholds, from the labeled datasets' boxes, or None."""
    from detectron2.data import DatasetCatalog

    node = cfg.SEMI.LABEL_DISTRIBUTION_THRESH
    if not node.ENABLED:
        return None
    dicts = [d for name in cfg.DATASETS.TRAIN_LABELED for d in DatasetCatalog.get(name)]
    return LabelDistributionThresholds.from_dataset_dicts(
        dicts, cfg.MODEL.ROI_HEADS.NUM_CLASSES, fixed=cfg.SEMI.CLS_PSEUDO_THRESH, fraction=node.FRACTION,
        window_images=node.WINDOW_IMAGES, value_range=node.RANGE)


class PseudoLabelThresholds:
    """Marks each teacher detection with a boolean ``keep_{branch}`` per loss branch."""

    @configurable
    def __init__(
        self,
        *,
        score_thresh,
        rpn_thresh,
        cls_thresh,
        reg_uncertainty_thresh,
        adaptive_scores=None,
        adaptive_uncertainty=None,
        reg_min_score=0.0,
        reg_skip_turned_views=False,
        ignore_uncertain=False,
        ignore_min_score=0.5,
    ):
        """
        Args:
            score_thresh: detections above it are pseudo-boxes at all.
            rpn_thresh, cls_thresh: ... and above these for the RPN and classification branches.
            reg_uncertainty_thresh: jitter uncertainty under which a pseudo-box trains regression.
            adaptive_scores: a :class:`ScoreMixtureThresholds` or :class:`LabelDistributionThresholds`
                whose per-class thresholds replace ``rpn_thresh`` and ``cls_thresh`` (None: the
                fixed ones).
            adaptive_uncertainty: a :class:`UncertaintyQuantileThreshold` replacing
                ``reg_uncertainty_thresh`` (None: the fixed one).
            reg_min_score: regression pseudo-boxes must also score above this (with the adaptive
                uncertainty threshold, whose window then holds only such boxes).
            reg_skip_turned_views: no regression pseudo-boxes in strong views that are rotated or
                sheared against the weak view (there a box maps to a loose hull).
            ignore_uncertain: detections that miss the RPN or classification threshold are ignored
                regions for that branch, not background (needs a :class:`PseudoLabelRPN`).
            ignore_min_score: ... down to this score (below ``score_thresh`` they are ignored
                regions only, never pseudo-boxes).
        """
        self.score_thresh = score_thresh
        self.branch_thresh = {"rpn": rpn_thresh, "cls": cls_thresh}
        self.reg_uncertainty_thresh = reg_uncertainty_thresh
        self.adaptive_scores = adaptive_scores
        self.adaptive_uncertainty = adaptive_uncertainty
        self.reg_min_score = reg_min_score
        self.reg_skip_turned_views = reg_skip_turned_views
        self.ignore_uncertain = ignore_uncertain
        self.ignore_min_score = ignore_min_score

    @classmethod
    def from_config(cls, cfg):
        semi = cfg.SEMI
        adaptive_score, adaptive_reg = semi.ADAPTIVE_SCORE_THRESH, semi.ADAPTIVE_REG_UNCERTAINTY_THRESH
        return {
            "score_thresh": semi.PSEUDO_SCORE_THRESH,
            "rpn_thresh": semi.RPN_PSEUDO_THRESH,
            "cls_thresh": semi.CLS_PSEUDO_THRESH,
            "reg_uncertainty_thresh": semi.REG_UNCERTAINTY_THRESH,
            "adaptive_scores": ScoreMixtureThresholds(
                cfg.MODEL.ROI_HEADS.NUM_CLASSES, semi.CLS_PSEUDO_THRESH, adaptive_score.WINDOW,
                adaptive_score.MIN_SCORES, adaptive_score.RANGE,
            ) if adaptive_score.ENABLED else label_distribution_thresholds(cfg),
            "adaptive_uncertainty": UncertaintyQuantileThreshold(
                adaptive_reg.PASS_FRACTION, adaptive_reg.WINDOW
            ) if adaptive_reg.ENABLED and semi.BOX_JITTER else None,
            "reg_min_score": adaptive_reg.MIN_SCORE if adaptive_reg.ENABLED else 0.0,
            "reg_skip_turned_views": semi.REG_SKIP_TURNED_VIEWS,
            "ignore_uncertain": semi.IGNORE_UNCERTAIN,
            "ignore_min_score": semi.IGNORE_MIN_SCORE,
        }

    @property
    def lowest_score(self):
        """Detections under this score play no part (neither pseudo-box nor ignored region)."""
        return min(self.score_thresh, self.ignore_min_score) if self.ignore_uncertain else self.score_thresh

    def mark_score_branches(self, detections):
        """Set ``keep_rpn`` and ``keep_cls`` of every detection; returns, per image, which
        detections are pseudo-boxes at all (the rest can only be ignored regions)."""
        per_class = None if self.adaptive_scores is None else self.adaptive_scores.thresholds
        pseudo_boxes = [d.scores > self.score_thresh for d in detections]
        for d, confident in zip(detections, pseudo_boxes):
            if per_class is not None:  # one threshold per class, for the RPN and classification alike
                keep = confident & (d.scores > per_class.to(d.scores.device)[d.pred_classes])
            for branch, thresh in self.branch_thresh.items():
                d.set(f"keep_{branch}", keep if per_class is not None else confident & (d.scores > thresh))
        return pseudo_boxes

    @property
    def current_reg_uncertainty_thresh(self):
        """The jitter uncertainty under which a pseudo-box trains box regression: the adaptive one
        once it has seen pseudo-boxes, else ``reg_uncertainty_thresh``."""
        adaptive = self.adaptive_uncertainty
        if adaptive is not None and adaptive.window.filled()[0] > 0:
            return adaptive.threshold
        return self.reg_uncertainty_thresh

    def mark_regression(self, detections, pseudo_boxes, adapt=False):
        """Set ``keep_reg`` from each detection's ``uncertainty`` (infinite where not jittered)."""
        candidates = [(d.scores > self.reg_min_score) & j for d, j in zip(detections, pseudo_boxes)]
        if adapt and self.adaptive_uncertainty is not None:
            self.adaptive_uncertainty.update(cat([d.uncertainty[c] for d, c in zip(detections, candidates)]))
        thresh = self.current_reg_uncertainty_thresh
        for d, c in zip(detections, candidates):
            d.keep_reg = (d.uncertainty < thresh) & c

    def state_dict(self):
        """The adaptive thresholds' state (saved in checkpoints as "pseudo_labeler")."""
        return {name: part.state_dict() for name, part in self._adaptive_parts().items()}

    def load_state_dict(self, state):
        state = {LEGACY_STATE_NAMES.get(name, name): value for name, value in state.items()}
        for name, part in self._adaptive_parts().items():
            if name in state:
                part.load_state_dict(state[name])

    def _adaptive_parts(self):
        parts = {"score_thresholds": self.adaptive_scores, "uncertainty_threshold": self.adaptive_uncertainty}
        return {name: part for name, part in parts.items() if part is not None}
