from .checkpoint import SafeCheckpointer
from .ema import EMATeacherHook, ema_momentum, ema_update
from .pseudo_label_pictures import PseudoLabelPicturesHook, draw_pseudo_labels
from .step import SoftTeacherStep, unsup_weight_at
from .trainer import SoftTeacherTrainer, SupervisedTrainer
from .training_curves import TrainingCurvesHook, plot_training_curves

__all__ = [
    "draw_pseudo_labels",
    "EMATeacherHook",
    "ema_momentum",
    "ema_update",
    "plot_training_curves",
    "PseudoLabelPicturesHook",
    "SafeCheckpointer",
    "SoftTeacherStep",
    "SoftTeacherTrainer",
    "SupervisedTrainer",
    "TrainingCurvesHook",
    "unsup_weight_at",
]
