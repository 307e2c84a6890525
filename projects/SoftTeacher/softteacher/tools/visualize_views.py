"""Render what the student and teacher see: labeled views, and unlabeled weak/strong pairs.

    python tools/visualize_views.py --config-file configs/Shapes/soft_teacher_R18_FPN_10pct.yaml \
        --num 4 --output output/views.png [KEY VALUE ...]

Each row: a labeled view with its boxes; an unlabeled image's weak (teacher) view with its
ground truth; its strong (student) view with those weak-view boxes mapped through the recorded
weak -> strong transform. If the mapping is right, the boxes sit on the objects.
"""

import argparse
import os

import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.utils.env import seed_all_rng

from softteacher import load_config
from softteacher.data import LabeledDatasetMapper, WeakStrongDatasetMapper
from softteacher.datasets import register_custom_from_config
from softteacher.structures import map_boxes
from softteacher.visualization import PALETTE, draw_boxes, save_png, tile, titled, to_rgb

SCALE = 2


def labeled_boxes(view, image, color=PALETTE[3]):
    boxes = view["instances"].gt_boxes.tensor.numpy() if "instances" in view else np.zeros((0, 4))
    return draw_boxes(image, boxes, color, scale=SCALE)


def render(cfg, num, seed):
    seed_all_rng(seed)
    labeled = DatasetCatalog.get(cfg.DATASETS.TRAIN_LABELED[0])
    unlabeled = DatasetCatalog.get(cfg.DATASETS.TRAIN_UNLABELED[0])
    labeled_mapper = LabeledDatasetMapper(cfg, is_train=True)
    pair_mapper = WeakStrongDatasetMapper(cfg, is_train=True)
    fmt = cfg.INPUT.FORMAT
    cells = []
    for i in range(num):
        view = labeled_mapper(labeled[i % len(labeled)])
        pair = pair_mapper(unlabeled[i % len(unlabeled)])

        cells.append(titled(labeled_boxes(view, to_rgb(view["image"], fmt)), "labeled view"))
        gt = pair.get("unlabeled_gt_instances")
        weak_boxes = gt.gt_boxes.tensor.numpy() if gt is not None else np.zeros((0, 4))
        weak = to_rgb(pair["weak"]["image"], fmt)
        cells.append(titled(draw_boxes(weak, weak_boxes, PALETTE[1], scale=SCALE), "weak view (teacher)"))
        strong = to_rgb(pair["strong"]["image"], fmt)
        h, w = pair["strong"]["image"].shape[1:]
        mapped = map_boxes(pair["weak_to_strong"], weak_boxes, h, w)
        cells.append(titled(draw_boxes(strong, mapped, PALETTE[0], scale=SCALE),
                            "strong view (student), weak boxes mapped"))
    return tile(cells, cols=3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--num", type=int, default=4, help="rows (images of each kind)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="output/views.png")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    register_custom_from_config(cfg)  # DATASETS.CUSTOM: your own data
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    save_png(args.output, render(cfg, args.num, args.seed))
    print(args.output)


if __name__ == "__main__":
    main()
