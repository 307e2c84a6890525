#!/usr/bin/env python
"""Where in the teacher's score range the objects it is not sure of sit.

    python bench/score_bands.py [--dataset shapes glyphs] [--run k_seed1] [--iter 1599] [--images 150]

The teacher of a finished quality-benchmark run (``output/bench/quality/<dataset>/<run>``; by
default arm soft_teacher_ignore_uncertain, which ignores 0.5-0.9, the run ``SEMI.IGNORE_MIN_SCORE``
0.3 was chosen on; its checkpoint at ``--iter``: half-way through training, when pseudo-labels matter most) detects the
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
from detectron2.structures import BoxMode

from softteacher.inference import ImageReader, load_model
from softteacher.modeling.pseudo_label_stats import SCORE_BAND_EDGES, match_scores, score_band_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def teacher_bands(run_dir, iteration, dataset, num_images):
    weights = os.path.join(run_dir, f"model_{iteration:07d}.pth")
    cfg, model = load_model(weights, os.path.join(run_dir, "config.yaml"), "teacher",
                            ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(SCORE_BAND_EDGES[-1])])
    reader = ImageReader(cfg)
    records = DatasetCatalog.get(dataset)[:num_images]
    objects, scores, true = [], [], []
    with torch.no_grad():
        for record in records:
            detections = model([reader(record)])[0]["instances"].to("cpu")
            gt = torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                               for a in record["annotations"]], dtype=torch.float32).reshape(-1, 4)
            best, is_true = match_scores(gt, detections.pred_boxes.tensor, detections.scores)
            objects.append(best)
            scores.append(detections.scores)
            true.append(is_true)
    object_scores = torch.cat(objects)
    return {
        "weights": os.path.relpath(weights, REPO), "dataset": dataset, "images": len(records),
        "objects_per_image": round(len(object_scores) / len(records), 2),
        "bands": score_band_table(object_scores, torch.cat(scores), torch.cat(true), len(records)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", nargs="+", default=["shapes", "glyphs"])
    parser.add_argument("--run", default="soft_teacher_ignore_uncertain_seed1",
                        help="the quality-benchmark run whose teacher to use")
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
