"""Dataset mappers: one augmented view of a labeled image, a weak/strong pair of an unlabeled one.

An unlabeled image becomes::

    {"file_name", "image_id", "height", "width",   # of the original image
     "weak":   {"image": CHW uint8 tensor, ...},   # resize + flip, for the teacher
     "strong": {"image": CHW uint8 tensor, ...},   # own resize + flip, colour/geometric, erasing
     "weak_to_strong": 3x3 float64 matrix,         # maps weak-view coordinates into the strong view
     "unlabeled_gt_instances": Instances,          # weak view; only if the json has annotations
     "skipped_files": [(file, reason)]}            # images skipped before this one, if any

The student's views never carry ``instances``: unlabeled ground truth is kept apart, only to
measure pseudo-label quality.
"""

import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .augmentations import (
    RandomColorOp,
    RandomErase,
    RandomGeometricOp,
    ShuffledAugmentations,
    weak_to_strong_matrix,
)
from .image_reading import SKIPPED_KEY, UNREADABLE, read_image_any_depth

logger = logging.getLogger(__name__)


def _to_tensor(image):
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


class LabeledDatasetMapper(DatasetMapper):
    """detectron2's mapper plus one random colour op (magnitude from ``INPUT.COLOR_MAGNITUDE``)."""

    @classmethod
    def from_config(cls, cfg, is_train=True):
        ret = super().from_config(cfg, is_train)
        if is_train and cfg.INPUT.LABELED_COLOR_AUG:
            ret["augmentations"].append(
                RandomColorOp(cfg.INPUT.COLOR_MAGNITUDE, image_format=cfg.INPUT.FORMAT)
            )
        return ret


def build_strong_augmentations(cfg):
    """Resize + flip, then one colour and one geometric op in random order, then erasing. The
    resize is the weak view's (INPUT.MIN_SIZE_TRAIN, drawn on its own) unless
    INPUT.STRONG.MIN_SIZE_TRAIN gives the strong view a short-side range of its own."""
    strong = cfg.INPUT.STRONG
    resize_and_flip = utils.build_augmentation(cfg, is_train=True)
    if strong.MIN_SIZE_TRAIN:
        resize_and_flip = [
            T.ResizeShortestEdge(strong.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, "range")
            if isinstance(aug, T.ResizeShortestEdge) else aug
            for aug in resize_and_flip
        ]
    return resize_and_flip + [
        ShuffledAugmentations(
            [
                RandomColorOp(cfg.INPUT.COLOR_MAGNITUDE, image_format=cfg.INPUT.FORMAT),
                RandomGeometricOp(
                    strong.TRANSLATE, strong.ROTATE, strong.SHEAR, strong.FILL,
                    ops=strong.GEOMETRIC_OPS,
                ),
            ]
        ),
        RandomErase(strong.ERASE_PATCHES, strong.ERASE_MAX_SIZE, strong.FILL),
    ]


class WeakStrongDatasetMapper(DatasetMapper):
    """Maps an unlabeled image to a weak view, a strong view and the map between them."""

    @configurable
    def __init__(self, is_train=True, *, strong_augmentations, **kwargs):
        """
        Args:
            strong_augmentations: the student's augmentations; ``augmentations`` (of
                :class:`DatasetMapper`) are the teacher's weak ones.
        """
        super().__init__(is_train, **kwargs)
        # INPUT.CROP: detectron2 puts its RandomCrop first among the weak augmentations; it is drawn
        # once per image, before either view, so both views show the same part of the image
        weak_augmentations = list(self.augmentations.augs)
        shared = 1 if weak_augmentations and isinstance(weak_augmentations[0], T.RandomCrop) else 0
        self.shared_augmentations = T.AugmentationList(weak_augmentations[:shared])
        self.augmentations = T.AugmentationList(weak_augmentations[shared:])
        self.strong_augmentations = T.AugmentationList(strong_augmentations)
        self._skipped = []  # (file, reason) of unreadable images, reported with the next image
        logger.info("Strong (student) augmentations: %s", strong_augmentations)

    @classmethod
    def from_config(cls, cfg, is_train=True):
        ret = super().from_config(cfg, is_train)
        ret["strong_augmentations"] = build_strong_augmentations(cfg)
        return ret

    def _view(self, dataset_dict, image, augmentations):
        aug_input = T.AugInput(image)
        transforms = augmentations(aug_input)
        view = {k: dataset_dict[k] for k in ("file_name", "image_id", "height", "width")}
        view["image"] = _to_tensor(aug_input.image)
        return view, transforms

    def _read(self, dataset_dict):
        image = read_image_any_depth(dataset_dict["file_name"], self.image_format)
        if "height" not in dataset_dict:  # plain image folders carry no size
            dataset_dict["height"], dataset_dict["width"] = image.shape[:2]
        utils.check_image_size(dataset_dict, image)
        return image

    def __call__(self, dataset_dict):
        """The mapped dict, or None (skip it) when the image cannot be read."""
        dataset_dict = copy.deepcopy(dataset_dict)
        try:
            image = self._read(dataset_dict)
        except UNREADABLE as e:
            self._skipped.append((dataset_dict["file_name"], f"{type(e).__name__}: {e}"))
            return None

        shared = T.AugInput(image)
        shared_transforms = self.shared_augmentations(shared)
        weak, weak_transforms = self._view(dataset_dict, shared.image, self.augmentations)
        strong, strong_transforms = self._view(dataset_dict, shared.image, self.strong_augmentations)
        weak_to_strong = weak_to_strong_matrix(weak_transforms, strong_transforms)
        out = {k: dataset_dict[k] for k in ("file_name", "image_id", "height", "width")}
        out.update(weak=weak, strong=strong, weak_to_strong=weak_to_strong)
        if "annotations" in dataset_dict:
            gt = {"annotations": dataset_dict["annotations"]}
            to_weak = T.TransformList(shared_transforms.transforms + weak_transforms.transforms)
            self._transform_annotations(gt, to_weak, weak["image"].shape[1:])
            out["unlabeled_gt_instances"] = gt["instances"]
        if self._skipped:
            out[SKIPPED_KEY], self._skipped = self._skipped, []
        return out
