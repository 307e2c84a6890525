"""Soft Teacher's augmentations as detectron2 ``Augmentation``/``Transform`` classes.

Magnitudes follow the original code (microsoft/SoftTeacher ssod/datasets/pipelines/rand_aug.py):
a colour op's magnitude m is drawn from 1..9 of 10; enhancers use factor m * 1.8 / 10 + 0.1,
solarize the threshold min(m * 256 / 10, 255), posterize keeps 4 - int(m * 4 / 10) bits. Geometric
ops fill uncovered pixels with 125. Resize and flip are detectron2's own.
"""

import functools

import cv2
import numpy as np
from detectron2.data import transforms as T
from fvcore.transforms.transform import NoOpTransform, Transform
from PIL import Image, ImageEnhance, ImageOps

MAX_MAGNITUDE = 10


def _enhance(enhancer, magnitude, image):
    return enhancer(image).enhance(magnitude * 1.8 / MAX_MAGNITUDE + 0.1)


def _solarize(magnitude, image):
    return ImageOps.solarize(image, min(int(magnitude * 256 / MAX_MAGNITUDE), 255))


def _posterize(magnitude, image):
    return ImageOps.posterize(image, 4 - int(magnitude * 4 / MAX_MAGNITUDE))


def _no_magnitude(op, magnitude, image):
    return op(image)


COLOR_OPS = {
    "identity": None,
    "autocontrast": functools.partial(_no_magnitude, ImageOps.autocontrast),
    "equalize": functools.partial(_no_magnitude, ImageOps.equalize),
    "solarize": _solarize,
    "color": functools.partial(_enhance, ImageEnhance.Color),
    "contrast": functools.partial(_enhance, ImageEnhance.Contrast),
    "brightness": functools.partial(_enhance, ImageEnhance.Brightness),
    "sharpness": functools.partial(_enhance, ImageEnhance.Sharpness),
    "posterize": _posterize,
}


def _apply_color_op(op, magnitude, image_format, image):
    """Run a PIL colour op on an HxWx3 uint8 array in ``image_format`` (RGB or BGR)."""
    rgb = image[..., ::-1] if image_format == "BGR" else image
    out = np.asarray(op(magnitude, Image.fromarray(np.ascontiguousarray(rgb))))
    return np.ascontiguousarray(out[..., ::-1] if image_format == "BGR" else out)


class RandomColorOp(T.Augmentation):
    """One of the nine colour operations, chosen uniformly, with a magnitude from a range."""

    def __init__(self, magnitude_range=(1, 9), ops=tuple(COLOR_OPS), image_format="BGR"):
        super().__init__()
        unknown = set(ops) - set(COLOR_OPS)
        if unknown:
            raise ValueError(f"unknown colour ops {sorted(unknown)}; known: {list(COLOR_OPS)}")
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"colour ops need RGB or BGR images, got {image_format!r}")
        self._init(locals())

    def get_transform(self, image):
        name = self.ops[np.random.randint(len(self.ops))]
        if COLOR_OPS[name] is None:
            return NoOpTransform()
        magnitude = np.random.randint(self.magnitude_range[0], self.magnitude_range[1] + 1)
        return T.ColorTransform(
            functools.partial(_apply_color_op, COLOR_OPS[name], magnitude, self.image_format)
        )


class AffineTransform(Transform):
    """A 2x3 affine map of continuous coordinates (pixel edges at integers) on a fixed canvas."""

    def __init__(self, matrix, h, w, fill=125, interp=cv2.INTER_LINEAR):
        super().__init__()
        matrix = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
        self._set_attributes(locals())

    def apply_image(self, img, interp=None):
        # cv2 puts pixel centres at integers: conjugate the map by the half-pixel offset
        linear, shift = self.matrix[:, :2], self.matrix[:, 2]
        image_matrix = np.concatenate([linear, (shift + linear @ [0.5, 0.5] - 0.5)[:, None]], 1)
        border = (self.fill,) * (img.shape[2] if img.ndim == 3 else 1)
        out = cv2.warpAffine(
            img, image_matrix, (self.w, self.h),
            flags=interp if interp is not None else self.interp,
            borderMode=cv2.BORDER_CONSTANT, borderValue=border,
        )
        return out.reshape(img.shape)

    def apply_coords(self, coords):
        coords = np.asarray(coords, dtype=np.float64)
        return coords @ self.matrix[:, :2].T + self.matrix[:, 2]

    def apply_segmentation(self, segmentation):
        return self.apply_image(segmentation, interp=cv2.INTER_NEAREST)

    def inverse(self):
        full = np.vstack([self.matrix, [0.0, 0.0, 1.0]])
        return AffineTransform(np.linalg.inv(full)[:2], self.h, self.w, self.fill, self.interp)


class FilledRotationTransform(T.RotationTransform):
    """detectron2's rotation on a fixed canvas, with a fill value instead of black borders."""

    def __init__(self, h, w, angle, fill=125):
        super().__init__(h, w, angle, expand=False)
        self.fill = fill

    def apply_image(self, img, interp=None):
        if len(img) == 0 or self.angle % 360 == 0:
            return img
        border = (self.fill,) * (img.shape[2] if img.ndim == 3 else 1)
        out = cv2.warpAffine(
            img, self.rm_image, (self.bound_w, self.bound_h),
            flags=interp if interp is not None else self.interp,
            borderMode=cv2.BORDER_CONSTANT, borderValue=border,
        )
        return out.reshape(img.shape)

    def inverse(self):
        return AffineTransform(cv2.invertAffineTransform(self.rm_coords), self.h, self.w, self.fill)


def _about_center(linear, h, w):
    center = np.array([w / 2.0, h / 2.0])
    return np.concatenate([linear, (center - linear @ center)[:, None]], 1)


GEOMETRIC_OPS = ("translate_x", "translate_y", "rotate", "shear")


class RandomGeometricOp(T.Augmentation):
    """One of: translate x, translate y, rotate, shear x then y (about the image centre).

    Args:
        translate: largest shift as a fraction of the image width (x) or height (y).
        rotate: largest rotation in degrees.
        shear: largest shear angle in degrees, drawn separately for x and y.
        fill: value of pixels the map uncovers.
        ops: the subset of ``GEOMETRIC_OPS`` to choose from.
    """

    def __init__(self, translate=0.1, rotate=30.0, shear=30.0, fill=125, ops=GEOMETRIC_OPS):
        super().__init__()
        unknown = set(ops) - set(GEOMETRIC_OPS)
        if unknown or not ops:
            raise ValueError(f"geometric ops must be among {GEOMETRIC_OPS}, got {list(ops)}")
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        name = self.ops[np.random.randint(len(self.ops))]
        if name == "translate_x":
            shift = np.random.uniform(-self.translate, self.translate) * w
            return AffineTransform([[1, 0, shift], [0, 1, 0]], h, w, self.fill)
        if name == "translate_y":
            shift = np.random.uniform(-self.translate, self.translate) * h
            return AffineTransform([[1, 0, 0], [0, 1, shift]], h, w, self.fill)
        if name == "rotate":
            angle = np.random.uniform(-self.rotate, self.rotate)
            return FilledRotationTransform(h, w, angle, self.fill)
        sx, sy = np.tan(np.deg2rad(np.random.uniform(-self.shear, self.shear, size=2)))
        linear = np.array([[1.0, 0.0], [sy, 1.0]]) @ np.array([[1.0, sx], [0.0, 1.0]])
        return AffineTransform(_about_center(linear, h, w), h, w, self.fill)


class EraseTransform(Transform):
    """Fill axis-aligned rectangles (x0, y0, x1, y1) of the image with a constant."""

    def __init__(self, rects, fill=125):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img):
        img = img.copy()
        for x0, y0, x1, y1 in self.rects:
            img[y0:y1, x0:x1] = self.fill
        return img

    def apply_coords(self, coords):
        return coords

    def apply_segmentation(self, segmentation):
        return segmentation

    def inverse(self):
        return NoOpTransform()


class RandomErase(T.Augmentation):
    """Erase ``num_patches`` (inclusive range) squares of side up to ``max_size`` x short side."""

    def __init__(self, num_patches=(1, 4), max_size=0.2, fill=125):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        rects = []
        for _ in range(np.random.randint(self.num_patches[0], self.num_patches[1] + 1)):
            side = int(np.random.uniform(0, self.max_size) * min(h, w))
            x0 = np.random.randint(0, max(1, w - side))
            y0 = np.random.randint(0, max(1, h - side))
            rects.append((x0, y0, x0 + side, y0 + side))
        return EraseTransform(rects, self.fill)


class ShuffledAugmentations(T.Augmentation):
    """Apply the given augmentations one after another, in a random order each time."""

    def __init__(self, augmentations):
        super().__init__()
        self.augmentations = list(augmentations)

    def __call__(self, aug_input):
        transforms = []
        for index in np.random.permutation(len(self.augmentations)):
            transforms.append(self.augmentations[index](aug_input))
        return T.TransformList(transforms)

    def __repr__(self):
        return f"ShuffledAugmentations({self.augmentations})"


def coords_matrix(transform, size_hint=100.0):
    """The 3x3 matrix of an affine ``transform``'s coordinate map, read off ``apply_coords``.

    Every geometric transform used here (resize, flip, translate, rotate, shear) is affine;
    a fourth point checks that.
    """
    probe = np.array([[0.0, 0.0], [size_hint, 0.0], [0.0, size_hint], [size_hint, size_hint]])
    mapped = np.asarray(transform.apply_coords(probe.copy()), dtype=np.float64)
    origin = mapped[0]
    linear = np.stack([mapped[1] - origin, mapped[2] - origin], 1) / size_hint
    if not np.allclose(mapped[3], origin + linear @ probe[3], atol=1e-4 * size_hint):
        raise ValueError(f"transform is not affine: {transform}")
    return np.array([[*linear[0], origin[0]], [*linear[1], origin[1]], [0.0, 0.0, 1.0]])


def weak_to_strong_matrix(weak_transforms, strong_transforms):
    """M = T_strong . T_weak^-1: maps weak-view coordinates into the strong view."""
    return coords_matrix(strong_transforms) @ np.linalg.inv(coords_matrix(weak_transforms))
