#!/usr/bin/env python
"""Where in the teacher's score range the objects it is not sure of sit.

    python bench/score_bands.py [--dataset shapes glyphs] [--run k_seed1] [--iter 1599] [--images 150]

The teacher of a finished quality-benchmark run (``output/bench/quality/<dataset>/<run>``; by
default arm (k), which ignores 0.5-0.9, the run ``SEMI.IGNORE_MIN_SCORE`` 0.3 was chosen on; its
checkpoint at ``--iter``: half-way through training, when pseudo-labels matter most) detects the
first ``--images`` validation images at the test-time score threshold (0.05). Per score band:
the share of objects whose best-scoring detection (IoU >= 0.5 with the object) falls in it, and
the detections an image in it with their precision (IoU >= 0.5 with some object). Objects scored
below 0.9 are taught as background by the published method; ``SEMI.IGNORE_UNCERTAIN`` ignores
them down to ``SEMI.PSEUDO_SCORE_THRESH``. Writes ``bench/results/score_bands.json``.
"""

import argparse
import os

import torch
from bench_common import write_result
from detectron2.data import DatasetCatalog
from detectron2.structures import Boxes, BoxMode, pairwise_iou

from softteacher.inference import ImageReader, load_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDGES = (0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05)
MATCH_IOU = 0.5


def match(gt_boxes, det_boxes, det_scores):
    """(per object: the highest score among detections overlapping it by MATCH_IOU, 0 if none;
    per detection: whether it overlaps some object by MATCH_IOU)."""
    if len(det_scores) == 0 or len(gt_boxes) == 0:
        return torch.zeros(len(gt_boxes)), torch.zeros(len(det_scores), dtype=torch.bool)
    iou = pairwise_iou(Boxes(gt_boxes), Boxes(det_boxes))
    hits = iou >= MATCH_IOU
    best = (hits.float() * det_scores[None]).max(dim=1).values
    return best, hits.any(dim=0)


def band_table(object_scores, det_scores, det_true, num_images, edges=EDGES):
    """Per band [edge, upper): objects' share, detections an image and their precision."""
    rows, upper = [], float("inf")
    for edge in edges:
        objects = (object_scores >= edge) & (object_scores < upper)
        dets = (det_scores >= edge) & (det_scores < upper)
        rows.append({
            "band": [edge, None if upper == float("inf") else upper],
            "objects": round(float(objects.float().mean()), 4),
            "detections_per_image": round(int(dets.sum()) / num_images, 3),
            "precision": round(float(det_true[dets].float().mean()), 3) if dets.any() else None,
        })
        upper = edge
    rows.append({"band": [0, edges[-1]], "objects": round(float((object_scores < edges[-1]).float().mean()), 4)})
    return rows


def teacher_bands(run_dir, iteration, dataset, num_images):
    weights = os.path.join(run_dir, f"model_{iteration:07d}.pth")
    cfg, model = load_model(weights, os.path.join(run_dir, "config.yaml"), "teacher",
                            ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(EDGES[-1])])
    reader = ImageReader(cfg)
    records = DatasetCatalog.get(dataset)[:num_images]
    objects, scores, true = [], [], []
    with torch.no_grad():
        for record in records:
            detections = model([reader(record)])[0]["instances"].to("cpu")
            gt = torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                               for a in record["annotations"]], dtype=torch.float32).reshape(-1, 4)
            best, is_true = match(gt, detections.pred_boxes.tensor, detections.scores)
            objects.append(best)
            scores.append(detections.scores)
            true.append(is_true)
    object_scores = torch.cat(objects)
    return {
        "weights": os.path.relpath(weights, REPO), "dataset": dataset, "images": len(records),
        "objects_per_image": round(len(object_scores) / len(records), 2),
        "bands": band_table(object_scores, torch.cat(scores), torch.cat(true), len(records)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", nargs="+", default=["shapes", "glyphs"])
    parser.add_argument("--run", default="k_seed1", help="the quality-benchmark run whose teacher to use")
    parser.add_argument("--iter", type=int, default=1599, help="its checkpoint's iteration")
    parser.add_argument("--images", type=int, default=150)
    parser.add_argument("--output", default=os.path.join(REPO, "bench", "results", "score_bands.json"))
    args = parser.parse_args()
    result = {
        name: teacher_bands(os.path.join(REPO, "output", "bench", "quality", name, args.run), args.iter,
                            f"{name}_val", args.images)
        for name in args.dataset
    }
    write_result(args.output, result)


if __name__ == "__main__":
    main()
