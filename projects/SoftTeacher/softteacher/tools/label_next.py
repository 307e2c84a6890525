"""Rank unlabeled images by how unsure the model is about them: which to label next.

    python tools/label_next.py --weights output/.../model_final.pth --config-file CONFIG \
        --input datasets/my_unlabeled/ --output output/label_next [--top 100] [--which teacher]

An image's uncertainty is the sum over the teacher's detections of the binary entropy of their
scores (a 0.5 box counts 1, a 0.1 or 0.9 box 0.47, a sure one 0): images with the most doubtful
objects come first. Writes ``OUTPUT/ranking.json`` (every image, most uncertain first, with its
doubtful boxes), ``OUTPUT/label_next.txt`` (the top ``--top`` files, one a line) and
``OUTPUT/label_next.png`` (a contact sheet of the top ``--sheet`` images, doubtful boxes drawn).
``--input`` takes image files, folders, globs, COCO jsons or registered dataset names; an exported
model (``tools/export_model.py``) needs no ``--config-file``.
"""

import json
import os
import sys

import numpy as np
from detectron2.utils.visualizer import Visualizer

from softteacher.annotation import ALL_DETECTIONS, UNCERTAIN_ENTROPY, rank_images, teacher_pseudo_labels
from softteacher.inference import ImageReader, class_names, find_images, load_model, tool_parser
from softteacher.visualization import save_png, tile, titled

SHEET_SIDE = 320  # pixels of the longer side of each image on the contact sheet


def contact_sheet(entries, reader, cols=4):
    """The top images, each with its doubtful boxes (class and score) drawn, as one RGB picture."""
    panels = []
    for rank, entry in enumerate(entries, 1):
        inputs = reader({"file_name": entry["file_name"]})
        if inputs is None:
            continue
        rgb = inputs["original"]
        visualizer = Visualizer(rgb, scale=SHEET_SIDE / max(rgb.shape[:2]))
        boxes = entry["uncertain_boxes"]
        picture = visualizer.overlay_instances(
            boxes=np.array([b["bbox_xyxy"] for b in boxes]).reshape(-1, 4),
            labels=[f"{b['class']} {b['score']:.2f}" for b in boxes],
        ).get_image()
        panels.append(titled(picture, f"#{rank}  u={entry['uncertainty']:.2f}  {os.path.basename(entry['file_name'])}"))
    return tile(panels, cols=min(cols, max(len(panels), 1))) if panels else None


def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("--output", required=True)
    parser.add_argument("--top", type=int, default=100, help="how many files go to label_next.txt")
    parser.add_argument("--sheet", type=int, default=16, help="how many images the contact sheet shows")
    args = parser.parse_args(argv)

    cfg, model = load_model(args.weights, args.config_file, args.which, args.opts)
    names = class_names(cfg)
    records = find_images(args.input, args.image_root)
    reader = ImageReader(cfg)
    entries = rank_images(teacher_pseudo_labels(cfg, model, records, reader, min_score=ALL_DETECTIONS), names)
    reader.check_any_read(len(records))

    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "ranking.json"), "w") as f:
        json.dump({
            "measure": "sum over the teacher's detections of the binary entropy (bits) of the score",
            "uncertain_box_entropy": UNCERTAIN_ENTROPY,
            "weights": args.weights, "which": args.which,
            "skipped": [{"file_name": name, "reason": why} for name, why in reader.skipped],
            "images": entries,
        }, f, indent=1)
    with open(os.path.join(args.output, "label_next.txt"), "w") as f:
        f.writelines(e["file_name"] + "\n" for e in entries[:args.top])
    sheet = contact_sheet(entries[:args.sheet], ImageReader(cfg))
    if sheet is not None:
        save_png(os.path.join(args.output, "label_next.png"), sheet)
    print(f"{len(entries)} images ranked ({len(reader.skipped)} unreadable, skipped) -> "
          f"{args.output}/ranking.json, label_next.txt, label_next.png", file=sys.stderr)
    return entries


if __name__ == "__main__":
    main()
