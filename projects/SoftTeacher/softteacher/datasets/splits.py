"""Labeled / unlabeled splits of a COCO-format json, named like the original Soft Teacher code.

    python tools/split_coco.py instances_train2017.json --percent 10 --fold 1

writes ``instances_train2017.1@10.json`` (the labeled subset) and
``instances_train2017.1@10-unlabeled.json`` (its complement, annotations kept so that pseudo-label
quality can be measured; they never reach a loss).

Which images are labeled (``method``):

- ``original`` (default): the original code's selection (microsoft/SoftTeacher,
  tools/dataset/semi_coco.py): numpy's legacy generator seeded with the fold draws
  int(percent / 100 * N) of the json's image positions without replacement, so fold f and a
  percent give the images of the published splits;
- ``mmdetection``: mmdetection's tools/misc/split_coco.py, the same but drawn *with* replacement
  (so slightly fewer distinct images than the percent);
- ``permutation``: this project's first scheme (a permutation from numpy's ``default_rng`` seeded
  with ``[seed, fold]``, at least one image, ids in sorted order), kept because the embedded
  dataset's splits and every benchmark measured on them use it.
"""

import json
import os

import numpy as np

DEFAULT_SPLIT_SEED = 1
SPLIT_METHODS = ("original", "mmdetection", "permutation")


def split_suffix(fold, percent):
    return f"{fold}@{percent:g}"


def split_image_ids(image_ids, percent, fold, seed=DEFAULT_SPLIT_SEED, method="original"):
    """Deterministically choose ``percent`` % of ``image_ids`` (in the json's order) for fold
    ``fold`` with ``method`` (see the module's docstring; ``seed`` is used by "permutation" only).

    Returns (labeled ids, unlabeled ids), each sorted; together they are ``image_ids``.
    """
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    if method not in SPLIT_METHODS:
        raise ValueError(f"split method {method!r}: choose one of {SPLIT_METHODS}")
    image_ids = list(image_ids)
    if method == "permutation":
        ids = np.array(sorted(image_ids))
        num_labeled = max(1, int(round(len(ids) * percent / 100.0)))
        order = np.random.default_rng([seed, fold]).permutation(len(ids))
        chosen = set(ids[order[:num_labeled]].tolist())
    else:
        num_labeled = int(percent / 100.0 * len(image_ids))
        if num_labeled == 0:
            raise ValueError(f"{percent:g} % of {len(image_ids)} images is no image: use a larger percent")
        positions = np.random.RandomState(fold).choice(
            range(len(image_ids)), size=num_labeled, replace=method == "mmdetection"
        )
        chosen = {image_ids[i] for i in positions.tolist()}
    labeled = sorted(chosen)
    unlabeled = sorted(i for i in image_ids if i not in chosen)
    return labeled, unlabeled


def _subset(coco, image_ids):
    keep = set(image_ids)
    out = {k: v for k, v in coco.items() if k not in ("images", "annotations")}
    out["images"] = [im for im in coco["images"] if im["id"] in keep]
    out["annotations"] = [a for a in coco.get("annotations", []) if a["image_id"] in keep]
    return out


REQUIRED_KEYS = {
    "images": ("id", "file_name", "height", "width"),
    "annotations": ("id", "image_id", "bbox", "category_id"),
    "categories": ("id", "name"),
}


def load_coco_dict(json_file, require_categories=True):
    """Read a COCO json, naming the file and the key when it is not json or lacks a top-level
    ``images`` or ``categories`` (``categories`` may be missing when not ``require_categories``
    and the json has no annotations: a list of unlabeled images)."""
    try:
        with open(json_file) as f:
            coco = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_file}: not valid json ({e})") from e
    if not isinstance(coco, dict):
        raise ValueError(f"{json_file}: not a COCO json (the top level is not an object)")
    if "images" not in coco:
        raise ValueError(f"{json_file}: missing top-level key 'images'")
    if "categories" not in coco:
        if require_categories or coco.get("annotations"):
            raise ValueError(f"{json_file}: missing top-level key 'categories'; add the labeled json's "
                             "'categories' list (unlabeled images alone need none: give no 'annotations')")
        coco["categories"] = []
    return coco


def check_coco_dict(coco, json_file):
    """Stop, naming the file and the key, at an entry without a key detectron2 reads or an
    annotation whose category is not in ``categories``."""
    for section, keys in REQUIRED_KEYS.items():
        for index, entry in enumerate(coco.get(section, [])):
            for key in keys:
                if key not in entry:
                    raise ValueError(f"{json_file}: {section}[{index}] has no key {key!r}")
    category_ids = {c["id"] for c in coco["categories"]}
    for index, annotation in enumerate(coco.get("annotations", [])):
        if annotation["category_id"] not in category_ids:
            raise ValueError(
                f"{json_file}: annotations[{index}]['category_id'] = {annotation['category_id']} "
                "is not in 'categories'"
            )


def split_paths(json_file, percent, fold, out_dir=None):
    stem = os.path.splitext(os.path.basename(json_file))[0]
    out_dir = out_dir or os.path.dirname(os.path.abspath(json_file))
    name = f"{stem}.{split_suffix(fold, percent)}"
    return os.path.join(out_dir, f"{name}.json"), os.path.join(out_dir, f"{name}-unlabeled.json")


def write_split(json_file, percent, fold, seed=DEFAULT_SPLIT_SEED, out_dir=None, method="original"):
    """Write the labeled subset and its unlabeled complement; returns their two paths."""
    coco = load_coco_dict(json_file)
    labeled, unlabeled = split_image_ids([im["id"] for im in coco["images"]], percent, fold, seed, method)
    paths = split_paths(json_file, percent, fold, out_dir)
    os.makedirs(os.path.dirname(paths[0]), exist_ok=True)
    for ids, path in zip((labeled, unlabeled), paths):
        tmp = f"{path}.{os.getpid()}.tmp"  # ranks may write the same split at once
        with open(tmp, "w") as f:
            json.dump(_subset(coco, ids), f)
        os.replace(tmp, path)
    return paths
