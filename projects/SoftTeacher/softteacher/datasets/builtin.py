"""Dataset names registered on import: the embedded dataset (generated on first use) and COCO's
label-ratio splits.

Names (``{fold}@{percent}`` as in the original code's COCO splits):

- ``shapes_train``, ``shapes_val``, ``shapes_test``: the whole training pool, the validation set
  (where choices are made) and the test set (where they are reported);
- ``shapes_train.{fold}@{percent}``: the labeled part of a split;
- ``shapes_train.{fold}@{percent}-unlabeled``: its complement (ground truth kept for measuring
  pseudo-labels only).

Data lives under ``$DETECTRON2_DATASETS/shapes`` (default ``./datasets/shapes``), as detectron2's
builtin datasets do.
"""

import functools
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from filelock import FileLock

from .coco_files import register_image_folder
from .splits import split_paths, split_suffix, write_split
from .synthetic import shapes
from .synthetic.shapes import default_shapes_root

logger = logging.getLogger(__name__)

SHAPES_PERCENTS = (1, 2, 5, 10, 20, 50, 100)
SHAPES_FOLDS = (1, 2, 3, 4, 5)


def ensure_shapes(root=None):
    """Generate the embedded dataset under ``root`` unless it is complete; returns the root."""
    root = root or default_shapes_root()
    os.makedirs(root, exist_ok=True)
    with FileLock(os.path.join(root, ".lock")):
        missing = {
            split: n
            for split, n in shapes.SPLIT_SIZES.items()
            if not os.path.exists(os.path.join(root, "annotations", f"instances_{split}.json"))
        }
        if missing:
            logger.info("Generating the embedded shapes dataset %s under %s", missing, root)
            shapes.generate(root, sizes=missing)
    return root


def shapes_json(split):
    return os.path.join(default_shapes_root(), "annotations", f"instances_{split}.json")


def _load_split(split):
    root = ensure_shapes()
    return load_coco_json(shapes_json(split), os.path.join(root, split), f"shapes_{split}")


def _load_fold(percent, fold, unlabeled):
    root = ensure_shapes()
    full = shapes_json("train")
    paths = split_paths(full, percent, fold)
    with FileLock(os.path.join(root, ".lock")):
        if not all(os.path.exists(p) for p in paths):
            write_split(full, percent, fold, method="permutation")  # the benchmarks' splits
    name = f"shapes_train.{split_suffix(fold, percent)}" + ("-unlabeled" if unlabeled else "")
    return load_coco_json(paths[1 if unlabeled else 0], os.path.join(root, "train"), name)


def _metadata(json_split, image_split):
    return dict(
        thing_classes=list(shapes.CLASSES),
        evaluator_type="coco",
        json_file=shapes_json(json_split),
        image_root=os.path.join(default_shapes_root(), image_split),
    )


def register_shapes():
    """Register every embedded-dataset name (lazily: nothing is generated until loaded)."""
    for split in shapes.SPLIT_SIZES:
        name = f"shapes_{split}"
        if name in DatasetCatalog.list():
            continue
        DatasetCatalog.register(name, lambda split=split: _load_split(split))
        MetadataCatalog.get(name).set(**_metadata(split, split))
    meta = _metadata("train", "train")
    del meta["json_file"]  # evaluating on a split uses its own converted json
    _register_splits("shapes_train", SHAPES_PERCENTS, SHAPES_FOLDS, _load_fold, meta)


def _register_splits(base_name, percents, folds, load, metadata):
    """Register ``{base_name}.{fold}@{percent}`` and its ``-unlabeled`` complement for every
    percent and fold, loaded lazily by ``load(percent, fold, unlabeled)``."""
    for percent in percents:
        for fold in folds:
            for unlabeled in (False, True):
                name = f"{base_name}.{split_suffix(fold, percent)}" + ("-unlabeled" if unlabeled else "")
                if name not in DatasetCatalog.list():
                    DatasetCatalog.register(name, functools.partial(load, percent, fold, unlabeled))
                    MetadataCatalog.get(name).set(**metadata)


COCO_PERCENTS = (0.5, 1, 2, 5, 10)
COCO_FOLDS = (1, 2, 3, 4, 5)


def _coco_root():
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "coco")


def _load_coco_split(percent, fold, unlabeled):
    root = _coco_root()
    full = os.path.join(root, "annotations", "instances_train2017.json")
    out_dir = os.path.join(root, "annotations", "semi_supervised")
    path = split_paths(full, percent, fold, out_dir)[1 if unlabeled else 0]
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist; write it with: python tools/split_coco.py {full} "
            f"--percent {percent:g} --fold {fold} --out-dir {out_dir}"
        )
    name = f"coco_2017_train.{split_suffix(fold, percent)}" + ("-unlabeled" if unlabeled else "")
    return load_coco_json(path, os.path.join(root, "train2017"), name)


def register_coco_splits():
    """Register COCO's label-ratio splits (``coco_2017_train.{fold}@{percent}`` and its
    ``-unlabeled`` complement, read from annotations/semi_supervised/ as the original code names
    them) and ``coco_2017_unlabeled`` (the unlabeled2017 image folder)."""
    coco_meta = MetadataCatalog.get("coco_2017_train")
    meta = dict(
        evaluator_type="coco", thing_classes=coco_meta.thing_classes,
        thing_dataset_id_to_contiguous_id=coco_meta.thing_dataset_id_to_contiguous_id,
    )
    _register_splits("coco_2017_train", COCO_PERCENTS, COCO_FOLDS, _load_coco_split, meta)
    if "coco_2017_unlabeled" not in DatasetCatalog.list():
        register_image_folder("coco_2017_unlabeled", os.path.join(_coco_root(), "unlabeled2017"))
