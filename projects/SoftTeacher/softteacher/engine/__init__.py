from .ema import EMATeacherHook, ema_momentum, ema_update
from .trainer import SoftTeacherStep, SoftTeacherTrainer, unsup_weight_at

__all__ = [
    "EMATeacherHook",
    "ema_momentum",
    "ema_update",
    "SoftTeacherStep",
    "SoftTeacherTrainer",
    "unsup_weight_at",
]
