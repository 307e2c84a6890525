#!/usr/bin/env python
"""How far a perfect pseudo-box is from its object once the strong view turns the image.

    python bench/turned_boxes.py [--objects 300]

For embedded-data objects (every class, 16-64 px), the object's mask is rotated (uniform in the
strong view's ±30 degrees) or sheared (±30 degrees), as the student's strong view does. The
pseudo-box a perfect teacher gives in the weak view maps into the strong view as the hull of its
turned corners; the object's true box there is the tight box of its turned mask. Writes
``bench/results/turned_boxes.json``: their IoU per op (1.0 would be exact; translation and flips
are).
"""

import argparse
import json
import os

import cv2
import numpy as np

from softteacher.datasets.synthetic import shapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def box_iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def tight_box(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else None


def turn(op, rng, center):
    degrees = rng.uniform(-30, 30)
    if op == "rotate":
        a = np.radians(degrees)
        linear = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    else:
        linear = np.array([[1.0, np.tan(np.radians(degrees))], [0.0, 1.0]])
    return np.hstack([linear, (center - linear @ center)[:, None]])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--output", default=os.path.join(REPO, "bench", "results", "turned_boxes.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    size, center = (160, 160), np.array([80.0, 80.0])
    ious = {"rotate": [], "shear": []}
    for i in range(args.objects):
        mask = shapes._shape_mask(shapes.CLASSES[i % len(shapes.CLASSES)], rng.uniform(16, 64), center, rng, size)
        box = tight_box(mask)
        corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]], float)
        for op in ious:
            matrix = turn(op, rng, center)
            true_box = tight_box(cv2.warpAffine(mask.astype(np.uint8), matrix, size, flags=cv2.INTER_NEAREST))
            if true_box is None:
                continue
            mapped = corners @ matrix[:, :2].T + matrix[:, 2]
            hull = [mapped[:, 0].min(), mapped[:, 1].min(), mapped[:, 0].max(), mapped[:, 1].max()]
            ious[op].append(box_iou(true_box, hull))
    result = {
        op: {"mean_iou": round(float(np.mean(v)), 3), "median_iou": round(float(np.median(v)), 3),
             "share_below_0.75": round(float(np.mean(np.array(v) < 0.75)), 3), "objects": len(v)}
        for op, v in ious.items()
    }
    result["command"] = "python bench/turned_boxes.py --objects %d" % args.objects
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
