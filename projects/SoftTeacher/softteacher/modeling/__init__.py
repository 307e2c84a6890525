"""The student's meta-architecture and ROI heads (registered with detectron2 on import), the
teacher's pseudo-labels and box jitter, and an RPN that can ignore regions."""

from .backbone import build_resnet18_fpn_backbone_any_width
from .box_jitter import box_uncertainty, jitter_boxes, jitter_uncertainty
from .meta_arch import SemiSupervisedRCNN
from .pseudo_label_stats import match_counts
from .pseudo_label_thresholds import BRANCHES, PseudoLabelThresholds
from .pseudo_labels import PseudoLabeler, TeacherBoxHead, train_time_proposals
from .roi_heads import SoftTeacherROIHeads, WeightedFastRCNNOutputLayers
from .rpn import IGNORE, PseudoLabelRPN

__all__ = [
    "box_uncertainty",
    "BRANCHES",
    "build_resnet18_fpn_backbone_any_width",
    "IGNORE",
    "jitter_boxes",
    "jitter_uncertainty",
    "match_counts",
    "PseudoLabeler",
    "PseudoLabelRPN",
    "PseudoLabelThresholds",
    "SemiSupervisedRCNN",
    "SoftTeacherROIHeads",
    "TeacherBoxHead",
    "train_time_proposals",
    "WeightedFastRCNNOutputLayers",
]
