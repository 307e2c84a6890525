"""The teacher's pseudo-labels on unlabeled images as a COCO json to correct in an annotation tool.

    python tools/pseudo_label.py --weights output/.../model_final.pth --config-file CONFIG \
        --input datasets/my_unlabeled/ --output output/pre_annotations.json [--min-score 0.5]

Every box carries its class, ``score``, ``jitter_uncertainty`` (box jitter's reliability: lower is
steadier) and ``used_by``: the loss branches that would train on it at the config's thresholds
("rpn", "cls", "reg"), also as CVAT-style ``attributes``. Image ``file_name``s are relative to the
input folder (or the json's), so CVAT and Label Studio (COCO import) find the images. Boxes above
``SEMI.PSEUDO_SCORE_THRESH`` are written, as training uses them; ``--min-score`` writes more.
"""

import json
import os
import sys

from softteacher.annotation import coco_pre_annotations, teacher_pseudo_labels
from softteacher.inference import (
    ImageReader,
    category_ids,
    class_names,
    find_images,
    load_model,
    tool_parser,
)


def main(argv=None):
    parser = tool_parser(__doc__)
    parser.add_argument("--output", required=True, help="the COCO json to write")
    parser.add_argument("--min-score", type=float, default=None,
                        help="also write boxes down to this score (default: SEMI.PSEUDO_SCORE_THRESH)")
    args = parser.parse_args(argv)

    cfg, model = load_model(args.weights, args.config_file, args.which, args.opts)
    names = class_names(cfg)
    reader = ImageReader(cfg)
    records = find_images(args.input, args.image_root)
    results = teacher_pseudo_labels(cfg, model, records, reader, args.min_score)
    reader.check_any_read(len(records))
    coco = coco_pre_annotations(results, category_ids(cfg), names)
    coco["info"] = {"description": f"Soft Teacher pseudo-labels ({args.which} of {args.weights})",
                    "skipped_images": [{"file_name": n, "reason": r} for n, r in reader.skipped]}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(coco, f)
    print(f"{len(coco['annotations'])} boxes on {len(coco['images'])} images ({len(reader.skipped)} "
          f"unreadable, skipped) -> {args.output}", file=sys.stderr)
    return coco


if __name__ == "__main__":
    main()
