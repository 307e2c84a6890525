"""Export the teacher (default) or the student of a Soft Teacher checkpoint (or the model of a
supervised one) as a plain detectron2
Faster R-CNN: ``OUTPUT/model.pth``, ``OUTPUT/config.yaml`` and ``OUTPUT/metadata.json`` (class
names and json category ids, which detectron2's config has no key for).

    python tools/export_model.py --config-file configs/Shapes/soft_teacher_R18_FPN_10pct.yaml \
        --checkpoint output/shapes/soft_teacher_10pct_demo/model_final.pth --output output/exported

Then, in plain detectron2: ``cfg = get_cfg(); cfg.merge_from_file("output/exported/config.yaml")``,
``DefaultPredictor(cfg)`` or ``build_model`` + ``DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)``.
"""

import argparse

from softteacher import load_config
from softteacher.datasets import register_custom_from_config
from softteacher.export import EXPORTABLE, export_plain_model, is_detectron2_backbone
from softteacher.inference import category_ids, class_names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, help="the config the checkpoint was trained with")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--which", choices=EXPORTABLE, default="teacher")
    parser.add_argument("--output", required=True, help="folder for model.pth and config.yaml")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    register_custom_from_config(cfg)  # the class names of your own data
    names, ids = class_names(cfg), category_ids(cfg)
    weights, config = export_plain_model(
        cfg, args.checkpoint, args.which, args.output, names, [ids[i] for i in range(len(names))]
    )
    print(f"{args.which} -> {weights}\nconfig -> {config}")
    if not is_detectron2_backbone(cfg.MODEL.BACKBONE.NAME):
        print(f"MODEL.BACKBONE.NAME {cfg.MODEL.BACKBONE.NAME} is this project's: `import softteacher` before "
              "building the exported model (the COCO and VOC configs' models need plain detectron2 only)")


if __name__ == "__main__":
    main()
