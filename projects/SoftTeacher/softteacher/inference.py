"""A trained model on your own images: loading it, finding the images, running it.

Shared by ``tools/predict.py``, ``tools/pseudo_label.py`` and ``tools/label_next.py``. A model is
a training checkpoint (its teacher or student) or a model written by ``tools/export_model.py``
(a folder with ``model.pth`` and ``config.yaml``). Images are files, folders, globs, a COCO json
or a registered dataset name; an image that cannot be read is skipped and named, never a crash.
"""

import argparse
import glob
import json
import logging
import os

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from .config import load_config
from .data.image_reading import UNREADABLE, read_image_any_depth
from .datasets import dataset_class_names, model_metadata, register_custom_from_config
from .datasets.coco_files import load_image_folder, missing_image_files
from .datasets.splits import load_coco_dict
from .engine import SoftTeacherTrainer
from .export import EXPORTABLE, METADATA_FILE

logger = logging.getLogger(__name__)


def tool_parser(doc):
    """The command line the tools share: the model (``--weights``, ``--config-file``, ``--which``),
    the images (``--input``, ``--image-root``) and trailing KEY VALUE config overrides."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="a training checkpoint or an exported model")
    parser.add_argument("--config-file", default=None, help="the config it was trained with (not for exports)")
    parser.add_argument("--which", choices=EXPORTABLE, default="teacher", help="of a training checkpoint")
    parser.add_argument("--input", nargs="+", required=True,
                        help="image files, folders, globs, COCO jsons or registered dataset names")
    parser.add_argument("--image-root", default=None, help="image folder of a COCO json input")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


def load_model(weights, config_file=None, which="teacher", opts=()):
    """``(cfg, model)``: the model in eval mode with the weights of ``weights``.

    ``weights`` is a training checkpoint (``which`` picks its teacher or student; a checkpoint
    without a teacher gives its model) or an exported model (``model.pth``, or its folder, with
    ``config.yaml`` beside it, used when ``config_file`` is None).
    """
    if which not in EXPORTABLE:
        raise ValueError(f"which = {which!r}: choose one of {EXPORTABLE}")
    if os.path.isdir(weights):
        weights = os.path.join(weights, "model.pth")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"model weights {weights!r} do not exist")
    exported_config = os.path.join(os.path.dirname(weights), "config.yaml")
    if config_file is None:
        if not os.path.isfile(exported_config):
            raise FileNotFoundError(
                f"no --config-file given and no config.yaml beside {weights}: pass the config the "
                "model was trained with"
            )
        config_file = exported_config
    cfg = load_config(config_file, opts)
    cfg.MODEL.WEIGHTS = weights
    if cfg.MODEL.ROI_HEADS.NAME == "StandardROIHeads":
        # a plain detectron2 model (supervised, exported): the same weights, plus the box-head
        # access the pseudo-labeller needs
        cfg.MODEL.ROI_HEADS.NAME = "SoftTeacherROIHeads"
    cfg.freeze()
    register_custom_from_config(cfg)
    model = build_model(cfg)
    SoftTeacherTrainer.load_for_evaluation(cfg, model, which=which)
    model.eval()
    return cfg, model


def _exported_metadata(cfg):
    path = os.path.join(os.path.dirname(cfg.MODEL.WEIGHTS), METADATA_FILE)
    if cfg.MODEL.WEIGHTS and os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return {}


def class_names(cfg):
    """The class names of a model: its exported ``metadata.json``, else its datasets' metadata,
    else the class indices."""
    exported = _exported_metadata(cfg)
    return exported["thing_classes"] if "thing_classes" in exported else dataset_class_names(cfg)


def category_ids(cfg):
    """The json category id of each class index: the exported model's or the datasets' mapping
    when there is one, else 1..N."""
    exported = _exported_metadata(cfg)
    if "category_ids" in exported:
        return dict(enumerate(exported["category_ids"]))
    meta = model_metadata(cfg)
    mapping = meta.get("thing_dataset_id_to_contiguous_id") if meta else None
    if mapping:
        return {contiguous: dataset_id for dataset_id, contiguous in mapping.items()}
    return {i: i + 1 for i in range(cfg.MODEL.ROI_HEADS.NUM_CLASSES)}


def find_images(inputs, image_root=None):
    """Image records ``{"file_name", "image_id", "rel_name"}`` of ``inputs``, in order.

    Each input is an image file, a folder (searched recursively), a glob, a COCO json (its
    ``images``, relative to ``image_root`` or the json's folder) or a registered dataset name.
    ``image_id`` is the json's id when there is one, else a running number from 1.
    """
    records = []
    for item in inputs:
        if item in DatasetCatalog.list():
            root = MetadataCatalog.get(item).get("image_root")
            records += [_record(d["file_name"], d.get("image_id"),
                                os.path.relpath(d["file_name"], root) if root else os.path.basename(d["file_name"]))
                        for d in DatasetCatalog.get(item)]
        elif item.endswith(".json") and os.path.isfile(item):
            root = image_root or os.path.dirname(os.path.abspath(item))
            coco = load_coco_dict(item, require_categories=False)
            missing = missing_image_files(coco, root)
            if missing:
                where = f"--image-root {image_root}" if image_root else "the json's folder (no --image-root given)"
                raise FileNotFoundError(f"{item}: {len(missing)} of its sampled images are not under {where} "
                                        f"(first: {missing[0]}); pass --image-root with the folder that holds "
                                        "the json's 'file_name' entries")
            records += [_record(os.path.join(root, im["file_name"]), im["id"], im["file_name"])
                        for im in coco["images"]]
        elif os.path.isdir(item):
            records += [_record(d["file_name"], None, d["image_id"]) for d in load_image_folder(item)]
        else:
            files = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
            if not files:
                raise FileNotFoundError(f"{item!r} matches no file")
            records += [_record(f, None, os.path.basename(f)) for f in files]
    if not records:
        raise ValueError(f"no images found in {list(inputs)}")
    next_id = max((r["image_id"] for r in records if isinstance(r["image_id"], int)), default=0) + 1
    for r in records:
        if r["image_id"] is None:
            r["image_id"], next_id = next_id, next_id + 1
    return records


def _record(file_name, image_id, rel_name):
    return {"file_name": file_name, "image_id": image_id, "rel_name": rel_name}


class ImageReader:
    """Reads images for a model's test-time input, skipping (and naming once) unreadable ones."""

    def __init__(self, cfg):
        self.image_format = cfg.INPUT.FORMAT
        self.resize = T.AugmentationList(utils.build_augmentation(cfg, is_train=False))  # the evaluator's
        self.skipped = []

    def __call__(self, record):
        """The model input of ``record`` (as detectron2's test-time ``DatasetMapper`` makes it), with
        the image as read (``original``, RGB), or None when the file cannot be read."""
        try:
            image = read_image_any_depth(record["file_name"], self.image_format)
        except UNREADABLE as e:
            self.skipped.append((record["file_name"], f"{type(e).__name__}: {e}"))
            logger.warning("Skipped image %s: %s", record["file_name"], e)
            return None
        height, width = image.shape[:2]
        resized = T.AugInput(image)
        self.resize(resized)
        tensor = torch.as_tensor(resized.image.transpose(2, 0, 1).copy())
        original = utils.convert_image_to_rgb(image, self.image_format)
        return {"image": tensor, "height": height, "width": width, "original": original}

    def check_any_read(self, num_records):
        """Stop (a non-zero exit) when none of ``num_records`` images could be read."""
        if num_records and len(self.skipped) == num_records:
            raise SystemExit(f"none of the {num_records} images could be read (first: {self.skipped[0][0]}: "
                             f"{self.skipped[0][1]}); for a COCO json input, --image-root names their folder")


def progress(records, desc):
    """``records`` with a progress bar on the terminal (tqdm), quiet elsewhere."""
    from tqdm import tqdm

    return tqdm(records, desc=desc, unit="image", disable=None)
