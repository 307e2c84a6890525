"""Datasets from files: COCO jsons checked at start, label-ratio splits of a json, plain image
folders, ``DATASETS.CUSTOM``, and the class names a config's datasets give its model."""

import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from .splits import check_coco_dict, load_coco_dict, split_paths, split_suffix, write_split

logger = logging.getLogger(__name__)


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


def register_checked_coco(name, json_file, image_root, num_classes=None, coco=None):
    """``register_coco_instances``, but the json is checked now (at start, before any training):
    a file that is not json or lacks a key, or whose category count is not ``num_classes``, stops
    with an error naming the file; boxes of zero or negative width or height are dropped when
    loaded. The class names (and their json ids) are in the metadata at once, ordered by category
    id as detectron2's ``load_coco_json`` orders them. ``coco``: the json already read."""
    coco = coco if coco is not None else load_coco_dict(json_file)
    check_coco_dict(coco, json_file)
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    if num_classes is not None and categories and len(categories) != num_classes:
        raise ValueError(
            f"{json_file}: {len(categories)} categories, but MODEL.ROI_HEADS.NUM_CLASSES = {num_classes}; "
            f"set NUM_CLASSES to {len(categories)}"
        )
    # a json of images only (no categories) loads without a dataset name: detectron2 would read
    # its (absent) category ids for the metadata
    DatasetCatalog.register(name, lambda: drop_boxes_without_area(
        load_coco_json(json_file, image_root, name if categories else None), json_file))
    meta = dict(json_file=json_file, image_root=image_root, evaluator_type="coco")
    if categories:
        meta.update(thing_classes=[c["name"] for c in categories],
                    thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(categories)})
    MetadataCatalog.get(name).set(**meta)


def missing_image_files(coco, image_root, sample=20):
    """The files of up to ``sample`` of a COCO json's images, evenly spread, that are not found under
    ``image_root``."""
    images = coco["images"]
    step = max(1, len(images) // sample)
    paths = [os.path.join(image_root, im["file_name"]) for im in images[::step][:sample]]
    return [p for p in paths if not os.path.isfile(p)]


def check_same_categories(categories_by_key):
    """Stop when the DATASETS.CUSTOM jsons disagree on their categories (ids and names), naming the
    json that differs from the first (the labeled one: the model learns its classes)."""
    def names(cats):
        return [(c["id"], c["name"]) for c in sorted(cats, key=lambda c: c["id"])]

    items = [(key, path, names(cats)) for key, (path, cats) in categories_by_key.items()]
    if not items:
        return
    ref_key, ref_path, ref = items[0]
    for key, path, cats in items[1:]:
        if cats != ref:
            raise ValueError(
                f"DATASETS.CUSTOM.{key} = {path!r} has {len(cats)} categories {[n for _, n in cats]} (ids "
                f"{[i for i, _ in cats]}), but DATASETS.CUSTOM.{ref_key} = {ref_path!r} has {len(ref)} "
                f"{[n for _, n in ref]} (ids {[i for i, _ in ref]}): every json needs the same 'categories' "
                f"list; copy {ref_key}'s into {key}'s file (the model learns {ref_key}'s classes)")


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def register_semi_coco(name, json_file, image_root, percent, fold, seed=1, out_dir=None, method="original"):
    """Register a COCO json's label-ratio split: ``{name}.{fold}@{percent}`` (labeled) and
    ``{name}.{fold}@{percent}-unlabeled`` (the rest), writing the split files next to the json
    (or in ``out_dir``) when missing (``method``: see :mod:`softteacher.datasets.splits`). Returns
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


def count_images(json_file, folder):
    """The images of a COCO json, or with none given, the image files below ``folder``."""
    if json_file:
        return len(load_coco_dict(json_file, require_categories=False)["images"])
    return len(load_image_folder(folder))


def register_image_folder(name, folder):
    """Register a plain folder of images (e.g. COCO unlabeled2017) as an unlabeled dataset."""
    DatasetCatalog.register(name, lambda: load_image_folder(folder))
    MetadataCatalog.get(name).set(image_root=folder)
    return name


CUSTOM_PARTS = (  # (part, json key, images key, a plain image folder allowed)
    ("labeled", "LABELED_JSON", "LABELED_IMAGES", False),
    ("unlabeled", "UNLABELED_JSON", "UNLABELED_IMAGES", True),
    ("val", "VAL_JSON", "VAL_IMAGES", False),
    ("test", "TEST_JSON", "TEST_IMAGES", False),
)


def register_custom_from_config(cfg):
    """Register ``DATASETS.CUSTOM``'s files as ``{NAME}_labeled``, ``{NAME}_unlabeled``,
    ``{NAME}_val`` and ``{NAME}_test`` (each only when its files are given); returns the names
    registered. Checked first, naming the key: folders and jsons exist, a sample of each json's
    images is in its folder, and every json has the same categories."""
    custom = cfg.DATASETS.CUSTOM
    if not custom.NAME:
        return []
    parts, categories = [], {}
    for part, json_key, images_key, folder_allowed in CUSTOM_PARTS:
        json_file, images = custom[json_key], custom[images_key]
        if not json_file and not images:
            continue
        if not images or not os.path.isdir(images):
            raise FileNotFoundError(f"DATASETS.CUSTOM.{images_key} = {images!r} is not a folder of images")
        if json_file and not os.path.isfile(json_file):
            raise FileNotFoundError(f"DATASETS.CUSTOM.{json_key} = {json_file!r} does not exist")
        if not json_file and not folder_allowed:
            raise ValueError(f"DATASETS.CUSTOM.{json_key} is empty: the {part} set needs a COCO json")
        coco = None
        if json_file:
            coco = load_coco_dict(json_file, require_categories=part != "unlabeled")
            missing = missing_image_files(coco, images)
            if missing:
                raise FileNotFoundError(
                    f"DATASETS.CUSTOM.{images_key} = {images!r}: {len(missing)} of the sampled images of "
                    f"DATASETS.CUSTOM.{json_key} are not there (first: {missing[0]}); set {images_key} to the "
                    "folder that holds the json's 'file_name' entries")
            if coco["categories"]:
                categories[json_key] = (json_file, coco["categories"])
        parts.append((part, json_file, images, coco))
    check_same_categories(categories)
    registered = []
    for part, json_file, images, coco in parts:
        name = f"{custom.NAME}_{part}"
        if name in DatasetCatalog.list():  # registered by an earlier setup of this process
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        if json_file:
            register_checked_coco(name, json_file, images, cfg.MODEL.ROI_HEADS.NUM_CLASSES, coco)
        else:
            register_image_folder(name, images)
        registered.append(name)
    return registered
