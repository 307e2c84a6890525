"""A second generated dataset of another kind: printed characters on paper, boards and signs.

Where the embedded shapes are filled, colour-cued objects of 16-64 px, these are thin-stroked
glyphs of 10-48 px, several to many an image, whose class is their letterform only (ink colour
says nothing), among look-alike characters of no class (B/8, P/R, S/5, F/E, X/K, H, 3, 4). Each
glyph is drawn by OpenCV's Hershey fonts (one of six, sometimes italic) with a random stroke
width, rotation, shear and aspect, on ruled paper, a dark board or a smooth coloured surface,
with stains, pen scribbles across glyphs, sensor noise and blur. Deterministic per (seed, split,
index) like the embedded data. A user would register it as their own data, and so do its
configs (configs/Glyphs/, through DATASETS.CUSTOM):

    python -m softteacher.datasets.synthetic.glyphs [--root datasets/glyphs]

writes ``<root>/{train,val,test}/*.jpg``, ``<root>/annotations/instances_{train,val,test}.json`` and the
10 % split of fold 1 (``instances_train.1@10.json`` and ``-unlabeled``) beside them.
"""

import argparse
import os

import cv2
import numpy as np
from filelock import FileLock

from ..splits import split_paths, write_split
from . import shapes

CLASSES = ("A", "E", "K", "R", "5", "8")
DISTRACTORS = ("B", "F", "H", "P", "S", "X", "3", "4")
FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX_SMALL,
)
IMAGE_SIZES = ((160, 224), (192, 192), (224, 160))  # (height, width)
GLYPH_HEIGHT_RANGE = (10, 48)  # pixels, log-uniform
OBJECTS_PER_IMAGE = (2, 12)
DISTRACTORS_PER_IMAGE = (1, 6)
SPLIT_SIZES = {"train": 2000, "val": 300, "test": 300}  # test: reported, never chosen on
DEFAULT_SEED = 20230401
SPLIT_PERCENT, SPLIT_FOLD = 10, 1


def default_glyphs_root():
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "glyphs")


def _glyph_alpha(char, height, image_shape, center, rng):
    """Anti-aliased coverage (0..1, image-sized) of one glyph of about ``height`` pixels."""
    font = FONTS[rng.integers(len(FONTS))] | (cv2.FONT_ITALIC if rng.random() < 0.2 else 0)
    (w0, h0), _ = cv2.getTextSize(char, font, 1.0, 1)
    scale = height / max(h0, 1)
    thickness = max(1, int(round(scale * rng.uniform(0.8, 2.2))))
    pad = 4 + 2 * thickness
    canvas = np.zeros((int(h0 * scale) + 2 * pad, int(w0 * scale) + 2 * pad), np.uint8)
    cv2.putText(canvas, char, (pad, pad + int(h0 * scale)), font, scale, 255, thickness, cv2.LINE_AA)
    # rotate, shear and stretch about the canvas centre, then move it to ``center``
    angle = np.radians(rng.uniform(-20, 20))
    c, s = np.cos(angle), np.sin(angle)
    stretch = rng.uniform(0.75, 1.3)
    shear = rng.uniform(-0.3, 0.3)
    linear = np.array([[c, -s], [s, c]]) @ np.array([[stretch, shear], [0.0, 1.0]])
    canvas_center = np.array([canvas.shape[1], canvas.shape[0]]) / 2
    offset = np.asarray(center) - linear @ canvas_center
    matrix = np.hstack([linear, offset[:, None]])
    h, w = image_shape
    alpha = cv2.warpAffine(canvas, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    return alpha.astype(np.float32) / 255.0


def _background(shape, rng):
    """Ruled paper, a dark board, or a smooth coloured surface; returns (image, ink colours)."""
    h, w = shape
    kind = rng.choice(3, p=(0.45, 0.25, 0.3))
    grid = rng.normal(0, 1, (int(rng.integers(2, 5)), int(rng.integers(2, 5)), 3))
    low = cv2.resize(grid.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    if kind == 0:  # paper: light, slightly tinted, ruled, with stains
        base = rng.uniform(200, 250) - rng.uniform(0, 25, 3)
        image = base + 6 * low
        if rng.random() < 0.7:
            period = rng.uniform(12, 24)
            rows = (np.arange(h) % period) < 1.2
            image[rows] = image[rows] * 0.75 + np.array([40, 60, 120]) * 0.25
        ink = [np.array([20, 20, 25]), np.array([25, 40, 140]), np.array([150, 25, 25])]
    elif kind == 1:  # board: dark, chalk-like light ink
        base = rng.uniform(30, 70) + np.array([0, rng.uniform(0, 30), 0])
        image = base + 10 * low
        ink = [np.array([230, 230, 225]), np.array([240, 230, 120]), np.array([200, 220, 255])]
    else:  # sign or screen: a smooth colour gradient, ink of contrasting brightness
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
        image = a * (1 - t) + b * t + 8 * low
        bright = image.mean() > 127
        ink = [np.full(3, 15.0 if bright else 240.0), rng.uniform(0, 255, 3)]
    image = np.broadcast_to(image, (h, w, 3)).astype(np.float32).copy()
    for _ in range(int(rng.integers(0, 3))):  # stains
        stain = np.zeros((h, w), np.float32)
        cv2.ellipse(stain, (int(rng.uniform(0, w)), int(rng.uniform(0, h))),
                    (int(rng.uniform(8, 40)), int(rng.uniform(8, 40))), rng.uniform(0, 180), 0, 360, 1.0, -1)
        stain = cv2.GaussianBlur(stain, (0, 0), 6)[..., None]
        image = image * (1 - 0.25 * stain) + rng.uniform(60, 200, 3) * 0.25 * stain
    return image, ink


def _free(box, boxes, margin=2):
    x0, y0, x1, y1 = box
    return all(x0 >= b[2] + margin or x1 + margin <= b[0] or y0 >= b[3] + margin or y1 + margin <= b[1] for b in boxes)


def render_image(seed, split, index):
    """Draw one image. Returns the RGB uint8 image and, per labelled glyph, (category index, xyxy
    box of its inked pixels, 1.0)."""
    rng = np.random.default_rng([seed, shapes.SPLIT_CODES[split], index])
    shape = IMAGE_SIZES[rng.integers(len(IMAGE_SIZES))]
    h, w = shape
    image, inks = _background(shape, rng)
    n_obj = int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))
    n_dis = int(rng.integers(DISTRACTORS_PER_IMAGE[0], DISTRACTORS_PER_IMAGE[1] + 1))
    chars = [(CLASSES.index(c), c) for c in rng.choice(CLASSES, n_obj)]
    chars += [(-1, c) for c in rng.choice(DISTRACTORS, n_dis)]
    chars = [chars[i] for i in rng.permutation(len(chars))]

    boxes, annotations = [], []
    for label, char in chars:
        for _ in range(10):  # glyphs do not overlap, as in print
            height = float(np.exp(rng.uniform(*np.log(GLYPH_HEIGHT_RANGE))))
            center = (rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h))
            alpha = _glyph_alpha(char, height, shape, center, rng)
            ys, xs = np.nonzero(alpha > 0.5)
            if len(ys) < 8:
                continue
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            if box[0] > 0 and box[1] > 0 and box[2] < w and box[3] < h and _free(box, boxes):
                break
        else:
            continue
        ink = inks[rng.integers(len(inks))] * rng.uniform(0.85, 1.1)
        image = image * (1 - alpha[..., None]) + ink * alpha[..., None]
        boxes.append(box)
        if label >= 0:
            annotations.append((label, box, 1.0))

    for _ in range(int(rng.integers(0, 4))):  # pen scribbles across the page (no class)
        points = np.cumsum(rng.normal(0, 12, (int(rng.integers(3, 7)), 2)), 0) + (rng.uniform(0, w), rng.uniform(0, h))
        colour = tuple(float(v) for v in inks[rng.integers(len(inks))])
        cv2.polylines(image, [points.astype(np.int32)], False, colour, 1, cv2.LINE_AA)
    image += rng.normal(0, rng.uniform(2, 7), image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 0.8))
    return image, annotations


def ensure_glyphs(root=None, seed=DEFAULT_SEED, workers=2):
    """Generate the glyphs dataset and its 10 % split under ``root`` unless complete; returns
    the paths {"train", "val", "test", "labeled", "unlabeled"} of its jsons."""
    root = root or default_glyphs_root()
    os.makedirs(root, exist_ok=True)
    paths = {split: os.path.join(root, "annotations", f"instances_{split}.json") for split in SPLIT_SIZES}
    with FileLock(os.path.join(root, ".lock")):
        for split, n in SPLIT_SIZES.items():
            if not os.path.exists(paths[split]):
                shapes.generate_split(root, split, n, seed, workers, render=render_image, class_names=CLASSES,
                                      supercategory="glyph", description="soft teacher generated glyphs")
        split_files = split_paths(paths["train"], SPLIT_PERCENT, SPLIT_FOLD)
        if not all(os.path.exists(p) for p in split_files):
            write_split(paths["train"], SPLIT_PERCENT, SPLIT_FOLD)
    paths["labeled"], paths["unlabeled"] = split_files
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=default_glyphs_root())
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    for name, path in ensure_glyphs(args.root, args.seed, args.workers).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
