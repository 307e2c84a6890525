from .datasets import (
    ensure_shapes,
    register_coco_splits,
    register_custom_from_config,
    register_image_folder,
    register_semi_coco,
    register_shapes,
)
from .image_reading import SkippedImages, read_image_any_depth
from .loader import build_labeled_unlabeled_loader
from .mappers import LabeledDatasetMapper, WeakStrongDatasetMapper

__all__ = [
    "build_labeled_unlabeled_loader",
    "ensure_shapes",
    "LabeledDatasetMapper",
    "register_coco_splits",
    "register_custom_from_config",
    "register_image_folder",
    "register_semi_coco",
    "read_image_any_depth",
    "register_shapes",
    "SkippedImages",
    "WeakStrongDatasetMapper",
]
