"""Mixed pseudo-labels (MixPL: Chen et al., "Mixed Pseudo Labels for Semi-Supervised Object
Detection", arXiv 2312.07006), opt-in with ``SEMI.PSEUDO_MIXING``.

Pseudo-labelling misses small objects most, as the teacher sees them at their own small scale.
The student's pseudo-labelled strong views of the last steps are cached with their targets; each
step the student also learns from

- a mosaic: four cached views, each shrunk by a factor drawn from ``mosaic_scale`` and flipped at
  random, around a centre point (the teacher labelled them at full size, the student sees them
  small);
- mixups: each of this step's strong views averaged (0.5 / 0.5) with a cached view resized to fit
  it, the targets of both kept.

As MixPL does, canvases are padded and blended where the model's normalised input is zero: the
pixel mean (``fill``), not black, so an uncovered part of a mixup is halved towards the mean
colour. MixPL also erases patches of the mixed images and drops the pseudo-boxes they mostly cover
(``ERASE_PATCHES``, off by default). The cache is not in checkpoints: after ``--resume`` mixing restarts once
``CACHE_SIZE`` new views have been seen (two steps of the shipped configs).

The teacher never saw these images, so their background samples get weight 1 (no soft teacher
weights) and regression targets pass as they are. MixPL's own model trains its main unlabeled loss
on the mixups; here the published Soft Teacher loss stays, and each mixed pass adds its own loss
(weighted, as MixPL weights its mosaic loss).
"""

import random

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances

from ..data.augmentations import RandomErase
from ..structures import map_boxes


def mapped(view, matrix, image_size):
    """The targets of a view with their boxes mapped through a 3x3 affine ``matrix`` into an image
    of ``image_size``."""
    out = {}
    for branch, t in view["targets"].items():
        out[branch] = Instances(image_size)
        out[branch].gt_boxes = Boxes(map_boxes(matrix, t.gt_boxes.tensor, *image_size))
        out[branch].gt_classes = t.gt_classes
    return out


def transformed(view, scale=1.0, flip=False):
    """A cached view (``image`` CHW, ``targets`` {branch: ``Instances``}) resized by ``scale`` and
    flipped horizontally; boxes move with the pixels."""
    image = view["image"].float()
    if scale != 1.0:
        image = F.interpolate(image[None], scale_factor=scale, mode="bilinear", align_corners=False,
                              recompute_scale_factor=False)[0]
    h, w = image.shape[1:]
    scale_x, scale_y = w / view["image"].shape[2], h / view["image"].shape[1]
    matrix = [[-scale_x, 0.0, w], [0.0, scale_y, 0.0], [0.0, 0.0, 1.0]] if flip else \
        [[scale_x, 0.0, 0.0], [0.0, scale_y, 0.0], [0.0, 0.0, 1.0]]
    return {"image": image.flip(-1) if flip else image, "targets": mapped(view, torch.tensor(matrix), (h, w))}


def shifted(view, dx, dy, image_size):
    """The targets of a view placed at (dx, dy) of an image of ``image_size``."""
    return mapped(view, torch.tensor([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]]), image_size)


def concatenated(target_lists):
    return {b: Instances.cat([targets[b] for targets in target_lists]) for b in target_lists[0]}


def filled(like, size, fill):
    """A canvas of ``size`` with ``like``'s channels and dtype, every pixel ``fill`` (a number or
    one value per channel)."""
    channels = like.shape[0]
    values = torch.as_tensor(fill, dtype=like.dtype, device=like.device).reshape(-1, 1, 1)
    return values.expand(channels, *size).clone()


def mosaic(views, fill=0.0):
    """Four views around a centre point: top-left, top-right, bottom-left, bottom-right, each
    against the centre, on a canvas of ``fill`` twice the largest view's size."""
    h = max(v["image"].shape[1] for v in views)
    w = max(v["image"].shape[2] for v in views)
    canvas = filled(views[0]["image"], (2 * h, 2 * w), fill)
    placed = []
    for i, v in enumerate(views):
        vh, vw = v["image"].shape[1:]
        x = w - vw if i % 2 == 0 else w
        y = h - vh if i < 2 else h
        canvas[:, y:y + vh, x:x + vw] = v["image"]
        placed.append(shifted(v, x, y, (2 * h, 2 * w)))
    return {"image": canvas, "targets": concatenated(placed)}


def mixup(dst, src, dst_offset=(0, 0), src_offset=(0, 0), fill=0.0):
    """0.5 * dst + 0.5 * src, each at its offset on a canvas of ``fill`` of the larger height and
    width."""
    dh, dw = dst["image"].shape[1:]
    sh, sw = src["image"].shape[1:]
    size = (max(dh, sh), max(dw, sw))
    (dx, dy), (sx, sy) = dst_offset, src_offset
    dst_canvas, src_canvas = filled(dst["image"], size, fill), filled(dst["image"], size, fill)
    dst_canvas[:, dy:dy + dh, dx:dx + dw] = dst["image"]
    src_canvas[:, sy:sy + sh, sx:sx + sw] = src["image"].to(src_canvas.dtype)
    canvas = 0.5 * dst_canvas + 0.5 * src_canvas
    return {"image": canvas, "targets": concatenated([shifted(dst, dx, dy, size), shifted(src, sx, sy, size)])}


def erased(view, rects, fill=0.0, drop=0.7):
    """A view with the rectangles ``rects`` (x0, y0, x1, y1) filled with ``fill``; its boxes more
    than ``drop`` covered by them are dropped (MixPL: a pseudo-box mostly erased teaches nothing)."""
    image = view["image"].clone()
    h, w = image.shape[1:]
    mask = torch.zeros(h, w, dtype=image.dtype)
    for x0, y0, x1, y1 in rects:
        mask[y0:y1, x0:x1] = 1
    keep_pixels = 1 - mask
    image = image * keep_pixels + filled(image, (h, w), fill) * mask
    # covered pixels of a box from the mask's integral image
    integral = F.pad(mask.cumsum(0).cumsum(1), (1, 0, 1, 0))
    targets = {}
    for branch, t in view["targets"].items():
        boxes = t.gt_boxes.tensor
        x0, y0 = boxes[:, 0].floor().clamp(0, w).long(), boxes[:, 1].floor().clamp(0, h).long()
        x1, y1 = boxes[:, 2].ceil().clamp(0, w).long(), boxes[:, 3].ceil().clamp(0, h).long()
        covered = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        area = ((x1 - x0) * (y1 - y0)).clamp(min=1)
        targets[branch] = t[covered / area <= drop]
    return {"image": image, "targets": targets}


def hard_background(samples):
    """Weight 1 for every background sample: the teacher never saw a mixed image."""
    return torch.ones(sum(len(s) for s in samples), device=samples[0].proposal_boxes.device)


def _random_offset(canvas_size, size):
    return random.randint(0, canvas_size[1] - size[1]), random.randint(0, canvas_size[0] - size[0])


class PseudoLabelMixer:
    """Caches pseudo-labelled strong views and makes the mixed views of a step from them."""

    def __init__(self, *, mosaic=False, mixup=False, cache_size=8, mosaic_scale=(0.4, 0.6), mosaic_weight=0.5,
                 mixup_weight=0.5, fill=0.0, erase_patches=(0, 0), erase_max_size=0.2, erase_drop=0.7):
        """``fill``: the pixel value of uncovered canvas (the model's pixel mean: zero once normalised).
        ``erase_patches``: (min, max) squares of side up to ``erase_max_size`` x the short side
        erased (to ``fill``) in each mixed view, boxes more than ``erase_drop`` erased dropped."""
        self.use_mosaic, self.use_mixup = mosaic, mixup
        self.fill = fill
        self.eraser = RandomErase(tuple(erase_patches), erase_max_size) if max(erase_patches) > 0 else None
        self.erase_drop = erase_drop
        self.cache_size = cache_size
        self.mosaic_scale = mosaic_scale
        self.weights = {"mosaic": mosaic_weight, "mixup": mixup_weight}
        self.cache = []

    @classmethod
    def from_config(cls, cfg):
        """The mixer a config asks for, or None."""
        mixing = cfg.SEMI.PSEUDO_MIXING
        if not (mixing.MOSAIC or mixing.MIXUP):
            return None
        return cls(mosaic=mixing.MOSAIC, mixup=mixing.MIXUP, cache_size=mixing.CACHE_SIZE,
                   mosaic_scale=tuple(mixing.MOSAIC_SCALE), mosaic_weight=mixing.MOSAIC_WEIGHT,
                   mixup_weight=mixing.MIXUP_WEIGHT, fill=tuple(cfg.MODEL.PIXEL_MEAN),
                   erase_patches=tuple(mixing.ERASE_PATCHES), erase_max_size=mixing.ERASE_MAX_SIZE,
                   erase_drop=mixing.ERASE_DROP)

    def __call__(self, images, targets):
        """This step's mixed views, made from the cache before this step's views join it.

        Args:
            images: this step's strong-view images (CHW).
            targets: {branch: per-image ``Instances``} of those images.
        Returns:
            {"mosaic" / "mixup": the student's inputs for ``SemiSupervisedRCNN.unsupervised_losses``
            (``images``, ``rpn_targets``, ``cls_targets``, ``reg_targets``) and the loss ``weight``};
            empty until the cache is full.
        """
        views = [{"image": image, "targets": {b: t[i] for b, t in targets.items()}} for i, image in enumerate(images)]
        mixed = {}
        if len(self.cache) == self.cache_size:
            if self.use_mosaic:
                tiles = [transformed(v, random.uniform(*self.mosaic_scale), random.random() < 0.5)
                         for v in random.sample(self.cache, 4)]
                mixed["mosaic"] = self._inputs("mosaic", [mosaic(tiles, self.fill)])
            if self.use_mixup:
                mixed["mixup"] = self._inputs("mixup", [self._mixup(v) for v in views])
        self.cache = (self.cache + views)[-self.cache_size:]
        return mixed

    def _mixup(self, dst):
        src = random.choice(self.cache)
        dst_size, src_size = dst["image"].shape[1:], src["image"].shape[1:]
        src = transformed(src, min(dst_size[0] / src_size[0], dst_size[1] / src_size[1]), random.random() < 0.5)
        src_size = src["image"].shape[1:]
        canvas = (max(dst_size[0], src_size[0]), max(dst_size[1], src_size[1]))
        dst = {"image": dst["image"].float(), "targets": dst["targets"]}
        return mixup(dst, src, _random_offset(canvas, dst_size), _random_offset(canvas, src_size), self.fill)

    def _inputs(self, name, views):
        if self.eraser is not None:
            views = [erased(v, self.eraser.get_transform(np.empty((*v["image"].shape[1:], 1))).rects, self.fill,
                            self.erase_drop) for v in views]
        targets = {f"{b}_targets": [v["targets"][b] for v in views] if b in views[0]["targets"] else None
                   for b in ("rpn", "cls", "reg")}
        return {"images": [{"image": v["image"]} for v in views], **targets, "weight": self.weights[name]}
