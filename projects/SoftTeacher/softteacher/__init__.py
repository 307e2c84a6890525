"""Soft Teacher (Xu et al., ICCV 2021) as a detectron2 project.

Importing the package registers its datasets, meta-architecture and ROI heads with detectron2.
"""

from . import modeling  # noqa: F401  (fills META_ARCH_REGISTRY and ROI_HEADS_REGISTRY)
from .config import add_softteacher_config, load_config
from .datasets import register_coco_splits, register_shapes
from .engine import SoftTeacherTrainer

register_shapes()
register_coco_splits()

__all__ = ["add_softteacher_config", "load_config", "SoftTeacherTrainer"]
