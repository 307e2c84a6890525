"""The embedded dataset: generated, deterministic, COCO-format "shapes in clutter".

Five object classes that differ in shape, with colour as a helpful but overlapping cue, drawn on
textured noisy backgrounds with look-alike distractors of no class, a 5x scale range, rotation,
aspect and fill variation, and partial occlusion. Each image is drawn from its own random
generator seeded by (seed, split, index), so the output does not depend on the number of worker
processes.

    python -m softteacher.datasets.synthetic.shapes [--root datasets/shapes]

writes ``<root>/{train,val,test}/*.jpg`` and ``<root>/annotations/instances_{train,val,test}.json``.
"""

import argparse
import json
import logging
import os
from multiprocessing import Pool

import cv2
import numpy as np

logger = logging.getLogger(__name__)

CLASSES = ("disk", "triangle", "rectangle", "star", "cross")
DISTRACTORS = ("hexagon", "blob", "bar", "ring")
# OpenCV hue is 0..180; neighbouring classes overlap after jitter, so colour alone is not enough.
CLASS_HUES = (0, 36, 72, 108, 144)
HUE_JITTER = 14
IMAGE_SIZES = ((160, 160), (160, 224), (224, 160))  # (height, width)
OBJECT_SIZE_RANGE = (16, 64)  # bounding diameter in pixels, log-uniform
OBJECTS_PER_IMAGE = (1, 8)
DISTRACTORS_PER_IMAGE = (0, 4)
MIN_VISIBLE_FRACTION = 0.5
# val chooses (schedules, recipes, thresholds); test only reports what val chose
SPLIT_SIZES = {"train": 2000, "val": 300, "test": 300}
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
DEFAULT_SEED = 20211011


def default_shapes_root():
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "shapes")


def _regular_polygon(n, radius, angle, center, inner=None):
    k = np.arange(2 * n if inner else n)
    theta = angle + k * (np.pi / n if inner else 2 * np.pi / n)
    r = np.where(k % 2 == 1, inner, radius) if inner else np.full(len(k), radius)
    return np.stack([center[0] + r * np.cos(theta), center[1] + r * np.sin(theta)], 1)


def _rotated_rect(w, h, angle, center):
    corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]], dtype=np.float64) / 2
    c, s = np.cos(angle), np.sin(angle)
    return corners @ np.array([[c, s], [-s, c]]) + center


def _draw_polys(mask, polys):
    cv2.fillPoly(mask, [np.round(p * 16).astype(np.int32) for p in polys], 1, cv2.LINE_8, 4)


def _shape_mask(kind, size, center, rng, image_shape):
    """Binary mask of one shape of the given kind and bounding diameter."""
    mask = np.zeros(image_shape, np.uint8)
    r = size / 2
    angle = rng.uniform(0, 2 * np.pi)
    cx, cy = center
    if kind == "disk":
        axes = (r, r * rng.uniform(0.65, 1.0))
        cv2.ellipse(mask, ((cx, cy), (2 * axes[0], 2 * axes[1]), np.degrees(angle)), 1, -1)
    elif kind == "triangle":
        pts = _regular_polygon(3, r, angle, center)
        pts += rng.normal(0, 0.08 * r, pts.shape)
        _draw_polys(mask, [pts])
    elif kind == "rectangle":
        aspect = rng.uniform(0.5, 1.0)
        w = size / np.sqrt(1 + aspect**2)
        _draw_polys(mask, [_rotated_rect(w, w * aspect, angle, center)])
    elif kind == "star":
        n = int(rng.integers(5, 7))
        _draw_polys(mask, [_regular_polygon(n, r, angle, center, inner=r * rng.uniform(0.4, 0.55))])
    elif kind == "cross":
        t = rng.uniform(0.25, 0.4)
        _draw_polys(
            mask,
            [
                _rotated_rect(size * 0.9, size * t, angle, center),
                _rotated_rect(size * t, size * 0.9, angle, center),
            ],
        )
    elif kind == "hexagon":
        _draw_polys(mask, [_regular_polygon(int(rng.integers(5, 7)), r, angle, center)])
    elif kind == "blob":
        n = int(rng.integers(6, 10))
        theta = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = r * rng.uniform(0.45, 1.0, n)
        pts = np.stack([cx + radii * np.cos(theta), cy + radii * np.sin(theta)], 1)
        _draw_polys(mask, [pts])
    elif kind == "bar":
        _draw_polys(mask, [_rotated_rect(size, size * rng.uniform(0.08, 0.18), angle, center)])
    elif kind == "ring":
        cv2.circle(mask, (int(cx), int(cy)), int(r), 1, -1)
        cv2.circle(mask, (int(cx), int(cy)), max(1, int(r * rng.uniform(0.45, 0.65))), 0, -1)
    else:
        raise ValueError(f"unknown shape kind {kind!r}")
    return mask.astype(bool)


def _hsv_to_rgb(h, s, v):
    pixel = np.array([[[h % 180, s, v]]], dtype=np.uint8)
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _object_colour(kind, rng):
    if kind in CLASSES:
        hue = CLASS_HUES[CLASSES.index(kind)] + rng.integers(-HUE_JITTER, HUE_JITTER + 1)
    else:
        hue = rng.integers(0, 180)
    return _hsv_to_rgb(int(hue), int(rng.integers(110, 256)), int(rng.integers(110, 256)))


def _fill(colour, shape, rng):
    """Per-object fill: solid, gradient or stripes of the object's colour."""
    h, w = shape
    style = rng.choice(3, p=(0.5, 0.25, 0.25))
    if style == 0:
        return np.broadcast_to(colour, (h, w, 3))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    proj = xx * np.cos(angle) + yy * np.sin(angle)
    if style == 1:
        t = (proj - proj.min()) / max(np.ptp(proj), 1.0)
        shade = 1.0 - 0.45 * t
    else:
        period = rng.uniform(4, 10)
        shade = np.where((proj // period) % 2 == 0, 1.0, 0.6)
    return colour * shade[..., None]


def _background(shape, rng):
    h, w = shape
    grid = rng.uniform(40, 215, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3))
    image = cv2.resize(grid.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:  # line texture at a random angle
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(5, 16)
        lines = ((xx * np.cos(angle) + yy * np.sin(angle)) % period) < 1.5
        image[lines] = image[lines] * rng.uniform(0.6, 0.9) + rng.uniform(0, 40)
    specks = rng.random((h, w)) < rng.uniform(0.0, 0.015)  # small clutter dots
    image[specks] = rng.uniform(0, 255, (int(specks.sum()), 3))
    return image


def _place(kind, image_shape, owner, areas, rng):
    """Find a position for a new shape that leaves every earlier object mostly visible."""
    h, w = image_shape
    for _ in range(10):
        size = float(np.exp(rng.uniform(*np.log(OBJECT_SIZE_RANGE))))
        margin = size * 0.35
        center = (rng.uniform(margin, w - margin), rng.uniform(margin, h - margin))
        mask = _shape_mask(kind, size, center, rng, image_shape)
        if mask.sum() < 16:
            continue
        covered = np.bincount(owner[mask], minlength=len(areas) + 1)[1:]
        visible = np.bincount(owner.ravel(), minlength=len(areas) + 1)[1:] - covered
        if all(v >= MIN_VISIBLE_FRACTION * a for v, a in zip(visible, areas) if a > 0):
            return mask
    return None


def render_image(seed, split, index):
    """Draw one image.

    Returns the RGB uint8 image and, per labelled object, (category index, xyxy box of its visible
    pixels, visible fraction of its area).
    """
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    shape = IMAGE_SIZES[rng.integers(len(IMAGE_SIZES))]
    image = _background(shape, rng)
    n_obj = int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))
    n_dis = int(rng.integers(DISTRACTORS_PER_IMAGE[0], DISTRACTORS_PER_IMAGE[1] + 1))
    kinds = [CLASSES[i] for i in rng.integers(len(CLASSES), size=n_obj)]
    kinds += [DISTRACTORS[i] for i in rng.integers(len(DISTRACTORS), size=n_dis)]
    kinds = [kinds[i] for i in rng.permutation(len(kinds))]

    # owner[y, x] = 1 + index of the topmost shape there (0: background); area 0 marks distractors
    owner = np.zeros(shape, np.int32)
    labels, areas = [], []
    for kind in kinds:
        mask = _place(kind, shape, owner, areas, rng)
        if mask is None:
            continue
        ys, xs = np.nonzero(mask)
        y0, x0 = ys.min(), xs.min()
        fill = _fill(_object_colour(kind, rng), (ys.max() - y0 + 1, xs.max() - x0 + 1), rng)
        image[ys, xs] = fill[ys - y0, xs - x0]
        owner[mask] = len(areas) + 1
        is_object = kind in CLASSES
        areas.append(int(mask.sum()) if is_object else 0)
        labels.append(CLASSES.index(kind) if is_object else -1)

    image += rng.normal(0, rng.uniform(2, 8), image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 0.9))

    annotations = []
    for k, label in enumerate(labels):
        if label < 0:
            continue
        ys, xs = np.nonzero(owner == k + 1)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        annotations.append((label, box, len(ys) / areas[k]))
    return image, annotations


def _render_and_write(job):
    render, seed, split, index, path = job
    image, annotations = render(seed, split, index)
    cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return image.shape[:2], annotations


def coco_categories(class_names=CLASSES, supercategory="shape"):
    return [{"id": i + 1, "name": name, "supercategory": supercategory} for i, name in enumerate(class_names)]


def generate_split(root, split, num_images, seed=DEFAULT_SEED, workers=2, render=render_image,
                   class_names=CLASSES, supercategory="shape", description="soft teacher embedded shapes"):
    """Write ``num_images`` images of ``split`` drawn by ``render(seed, split, index)`` and their
    COCO json (categories ``class_names``, ids from 1); returns the json path."""
    image_dir = os.path.join(root, split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    names = [f"{split}_{i:05d}.jpg" for i in range(num_images)]
    jobs = [(render, seed, split, i, os.path.join(image_dir, n)) for i, n in enumerate(names)]
    if workers > 1:
        with Pool(workers) as pool:
            results = pool.map(_render_and_write, jobs, chunksize=32)
    else:
        results = [_render_and_write(job) for job in jobs]

    images, annotations = [], []
    for image_id, (name, ((h, w), objects)) in enumerate(zip(names, results), start=1):
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        for label, (x0, y0, x1, y1), _ in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {"description": f"{description}, split {split}, seed {seed}"},
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(class_names, supercategory),
    }
    json_path = os.path.join(root, "annotations", f"instances_{split}.json")
    tmp = f"{json_path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(coco, f)
    os.replace(tmp, json_path)  # the json appears last, so its presence means a complete split
    return json_path


def generate(root, sizes=None, seed=DEFAULT_SEED, workers=2):
    """Generate every split of the embedded dataset under ``root``."""
    sizes = dict(SPLIT_SIZES if sizes is None else sizes)
    return {split: generate_split(root, split, n, seed, workers) for split, n in sizes.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=default_shapes_root())
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    for split, path in generate(args.root, seed=args.seed, workers=args.workers).items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
