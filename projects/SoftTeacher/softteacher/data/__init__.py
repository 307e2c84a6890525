"""The training data pipeline: augmentations, the labeled and weak/strong mappers, the
labeled + unlabeled loader, and image reading that skips what it cannot read."""

from .image_reading import SkippedImages, read_image_any_depth
from .loader import build_labeled_unlabeled_loader
from .mappers import LabeledDatasetMapper, WeakStrongDatasetMapper

__all__ = [
    "build_labeled_unlabeled_loader",
    "LabeledDatasetMapper",
    "read_image_any_depth",
    "SkippedImages",
    "WeakStrongDatasetMapper",
]
