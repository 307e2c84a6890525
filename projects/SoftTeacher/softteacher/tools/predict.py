"""Run a trained model on your own images: drawn pictures and one COCO-results json.

    python tools/predict.py --weights output/.../model_final.pth --config-file CONFIG \
        --input photos/ more/*.jpg --output output/predictions [--confidence-threshold 0.5]
    python tools/predict.py --weights output/exported --input photos/ --output output/predictions

``--input`` takes image files, folders (recursively), globs, COCO jsons or registered dataset
names. ``--weights`` is a training checkpoint (``--which teacher`` by default, or ``student``) or
a model exported by ``tools/export_model.py`` (its folder or ``model.pth``; no ``--config-file``
needed). Writes ``OUTPUT/<image path>.png`` per image (boxes, class names and scores drawn by
detectron2's ``Visualizer``) and ``OUTPUT/predictions.json`` (COCO results: ``image_id``,
``file_name``, ``category_id``, ``bbox`` as x, y, w, h in original pixels, ``score``). Unreadable
images are skipped and named.
"""

import json
import os
import sys

import torch
from detectron2.data import Metadata
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils.visualizer import Visualizer

from softteacher.inference import (
    ImageReader,
    category_ids,
    class_names,
    find_images,
    load_model,
    progress,
    tool_parser,
)
from softteacher.visualization import save_png


def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("--output", required=True, help="folder for the pictures and predictions.json")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument("--no-pictures", action="store_true", help="write predictions.json only")
    args = parser.parse_args(argv)

    opts = [*args.opts, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(args.confidence_threshold)]
    cfg, model = load_model(args.weights, args.config_file, args.which, opts)
    metadata = Metadata(name="predict", thing_classes=class_names(cfg))
    ids = category_ids(cfg)
    reader = ImageReader(cfg)
    predictions = []
    os.makedirs(args.output, exist_ok=True)
    records = find_images(args.input, args.image_root)
    for record in progress(records, "predict"):
        inputs = reader(record)
        if inputs is None:
            continue
        with torch.no_grad():
            instances = model([inputs])[0]["instances"].to("cpu")
        for p in instances_to_coco_json(instances, record["image_id"]):
            predictions.append({**p, "file_name": record["rel_name"], "category_id": ids[p["category_id"]]})
        if not args.no_pictures:
            drawn = Visualizer(inputs["original"], metadata).draw_instance_predictions(instances).get_image()
            path = os.path.join(args.output, os.path.splitext(record["rel_name"])[0] + ".png")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            save_png(path, drawn)
    reader.check_any_read(len(records))
    with open(os.path.join(args.output, "predictions.json"), "w") as f:
        json.dump(predictions, f)
    print(f"{len(predictions)} boxes -> {args.output}/predictions.json"
          + (f"; {len(reader.skipped)} unreadable images skipped: "
             + ", ".join(name for name, _ in reader.skipped) if reader.skipped else ""), file=sys.stderr)
    return predictions


if __name__ == "__main__":
    main()
