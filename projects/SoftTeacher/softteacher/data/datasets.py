"""Registration of the embedded dataset with detectron2, generated on first use.

Names (``{fold}@{percent}`` as in the original code's COCO splits):

- ``shapes_train``, ``shapes_val``: the whole training pool and the validation set;
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

from . import shapes
from .splits import check_coco_dict, load_coco_dict, split_paths, split_suffix, write_split

logger = logging.getLogger(__name__)

SHAPES_PERCENTS = (1, 5, 10, 100)
SHAPES_FOLDS = (1, 2, 3, 4, 5)


def default_shapes_root():
    return os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "shapes")


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


def _shapes_json(split):
    return os.path.join(default_shapes_root(), "annotations", f"instances_{split}.json")


def _load_split(split):
    root = ensure_shapes()
    return load_coco_json(_shapes_json(split), os.path.join(root, split), f"shapes_{split}")


def _load_fold(percent, fold, unlabeled):
    root = ensure_shapes()
    full = _shapes_json("train")
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
        json_file=_shapes_json(json_split),
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


def model_metadata(cfg):
    """The metadata of the first of the config's datasets (test, labeled, unlabeled, train) that
    names as many classes as the model has (``thing_classes``), or None."""
    for name in (*cfg.DATASETS.TEST, *cfg.DATASETS.TRAIN_LABELED, *cfg.DATASETS.TRAIN_UNLABELED, *cfg.DATASETS.TRAIN):
        meta = MetadataCatalog.get(name)
        if len(meta.get("thing_classes") or ()) == cfg.MODEL.ROI_HEADS.NUM_CLASSES:
            return meta
    return None


def dataset_class_names(cfg):
    """The model's class names from its datasets' metadata, else the class indices."""
    meta = model_metadata(cfg)
    return list(meta.thing_classes) if meta else [str(i) for i in range(cfg.MODEL.ROI_HEADS.NUM_CLASSES)]


def drop_boxes_without_area(dataset_dicts, json_file):
    """Drop annotations whose box has zero or negative width or height (detectron2's transforms
    would turn a negative-width box into a valid one), logging how many."""
    dropped = 0
    for record in dataset_dicts:
        if "annotations" not in record:
            continue
        annotations = record["annotations"]
        kept = [a for a in annotations if a["bbox"][2] > 0 and a["bbox"][3] > 0]
        dropped += len(annotations) - len(kept)
        record["annotations"] = kept
    if dropped:
        logger.warning("%s: dropped %d boxes of zero or negative width or height", json_file, dropped)
    return dataset_dicts


def register_checked_coco(name, json_file, image_root, num_classes=None):
    """``register_coco_instances``, but the json is checked now (at start, before any training):
    a file that is not json or lacks a key, or whose category count is not ``num_classes``, stops
    with an error naming the file; boxes of zero or negative width or height are dropped when
    loaded. The class names (and their json ids) are in the metadata at once, ordered by category
    id as detectron2's ``load_coco_json`` orders them."""
    coco = load_coco_dict(json_file)
    check_coco_dict(coco, json_file)
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    if num_classes is not None and categories and len(categories) != num_classes:
        raise ValueError(
            f"{json_file}: {len(categories)} categories, but MODEL.ROI_HEADS.NUM_CLASSES = {num_classes}; "
            f"set NUM_CLASSES to {len(categories)}"
        )
    DatasetCatalog.register(
        name, lambda: drop_boxes_without_area(load_coco_json(json_file, image_root, name), json_file)
    )
    meta = dict(json_file=json_file, image_root=image_root, evaluator_type="coco")
    if categories:
        meta.update(thing_classes=[c["name"] for c in categories],
                    thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(categories)})
    MetadataCatalog.get(name).set(**meta)


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def register_semi_coco(name, json_file, image_root, percent, fold, seed=1, out_dir=None, method="original"):
    """Register a COCO json's label-ratio split: ``{name}.{fold}@{percent}`` (labeled) and
    ``{name}.{fold}@{percent}-unlabeled`` (the rest), writing the split files next to the json
    (or in ``out_dir``) when missing (``method``: see :mod:`softteacher.data.splits`). Returns
    the two names."""
    labeled_json, unlabeled_json = split_paths(json_file, percent, fold, out_dir)
    if not (os.path.exists(labeled_json) and os.path.exists(unlabeled_json)):
        write_split(json_file, percent, fold, seed=seed, out_dir=out_dir, method=method)
    labeled = f"{name}.{split_suffix(fold, percent)}"
    unlabeled = labeled + "-unlabeled"
    register_checked_coco(labeled, labeled_json, image_root)
    register_checked_coco(unlabeled, unlabeled_json, image_root)
    return labeled, unlabeled


def load_image_folder(folder):
    """Dataset dicts for every image below ``folder`` (no annotations, sizes read later)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"unlabeled image folder {folder!r} does not exist")
    files = sorted(
        os.path.join(root, f)
        for root, _, names in os.walk(folder)
        for f in names
        if f.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {folder!r}")
    return [{"file_name": f, "image_id": os.path.relpath(f, folder)} for f in files]


def register_image_folder(name, folder):
    """Register a plain folder of images (e.g. COCO unlabeled2017) as an unlabeled dataset."""
    DatasetCatalog.register(name, lambda: load_image_folder(folder))
    MetadataCatalog.get(name).set(image_root=folder)
    return name


def register_custom_from_config(cfg):
    """Register ``DATASETS.CUSTOM``'s files as ``{NAME}_labeled``, ``{NAME}_unlabeled`` and
    ``{NAME}_val`` (each only when its files are given); returns the names registered."""
    custom = cfg.DATASETS.CUSTOM
    if not custom.NAME:
        return []
    registered = []
    for part, json_key, images_key, folder_allowed in (
        ("labeled", "LABELED_JSON", "LABELED_IMAGES", False),
        ("unlabeled", "UNLABELED_JSON", "UNLABELED_IMAGES", True),
        ("val", "VAL_JSON", "VAL_IMAGES", False),
    ):
        json_file, images = custom[json_key], custom[images_key]
        if not json_file and not images:
            continue
        name = f"{custom.NAME}_{part}"
        if not images or not os.path.isdir(images):
            raise FileNotFoundError(f"DATASETS.CUSTOM.{images_key} = {images!r} is not a folder of images")
        if json_file and not os.path.isfile(json_file):
            raise FileNotFoundError(f"DATASETS.CUSTOM.{json_key} = {json_file!r} does not exist")
        if not json_file and not folder_allowed:
            raise ValueError(f"DATASETS.CUSTOM.{json_key} is empty: the {part} set needs a COCO json")
        if name in DatasetCatalog.list():  # registered by an earlier setup of this process
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        if json_file:
            register_checked_coco(name, json_file, images, cfg.MODEL.ROI_HEADS.NUM_CLASSES)
        else:
            register_image_folder(name, images)
        registered.append(name)
    return registered


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
