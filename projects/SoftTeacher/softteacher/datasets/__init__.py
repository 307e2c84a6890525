"""Where training data comes from: detectron2 dataset registration (the embedded dataset, COCO's
label-ratio splits, your own COCO jsons and image folders) and the generated datasets."""

from .builtin import ensure_shapes, register_coco_splits, register_shapes
from .coco_files import (
    dataset_class_names,
    model_metadata,
    register_checked_coco,
    register_custom_from_config,
    register_image_folder,
    register_semi_coco,
)

__all__ = [
    "dataset_class_names",
    "ensure_shapes",
    "model_metadata",
    "register_checked_coco",
    "register_coco_splits",
    "register_custom_from_config",
    "register_image_folder",
    "register_semi_coco",
    "register_shapes",
]
