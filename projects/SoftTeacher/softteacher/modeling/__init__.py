"""The student's meta-architecture and ROI heads (registered with detectron2 on import), the
teacher's pseudo-labels and box jitter, and an RPN that can ignore regions."""

from .backbone import build_resnet18_fpn_backbone_any_width
from .box_jitter import jitter_boxes, jitter_reliability, reliability
from .meta_arch import SemiSupervisedRCNN
from .pseudo_labels import PseudoLabeler, TeacherBoxHead, match_counts, train_time_proposals
from .roi_heads import SoftTeacherROIHeads, WeightedFastRCNNOutputLayers
from .rpn import IGNORE, PseudoLabelRPN

__all__ = [
    "build_resnet18_fpn_backbone_any_width",
    "jitter_boxes",
    "jitter_reliability",
    "match_counts",
    "IGNORE",
    "PseudoLabeler",
    "PseudoLabelRPN",
    "reliability",
    "SemiSupervisedRCNN",
    "SoftTeacherROIHeads",
    "TeacherBoxHead",
    "train_time_proposals",
    "WeightedFastRCNNOutputLayers",
]
