"""The embedded images at COCO scale, in COCO's and PASCAL VOC's file layouts, for dry runs.

The COCO and VOC configs read ``$DETECTRON2_DATASETS/coco`` and ``VOC2007`` / ``VOC2012``. These
writers fill such a tree with embedded-dataset pictures enlarged to an 800-1,000 px short side
(long side at most 1,333) and their objects spread over COCO's 80 categories (with COCO's own ids
and names) or VOC's 20 classes, so that the shipped configs build, load data and train at their
own sizes without the real datasets:

- ``write_coco_like(root)``: ``coco/annotations/instances_{train,val}2017.json``, ``train2017/``,
  ``val2017/`` and ``unlabeled2017/``;
- ``write_voc_like(root)``: ``VOC2007`` (trainval, test) and ``VOC2012`` (trainval), each with
  ``Annotations/*.xml``, ``ImageSets/Main/*.txt`` and ``JPEGImages/``.
"""

import json
import os
from xml.etree import ElementTree as ET

import cv2
import numpy as np
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.data.datasets.pascal_voc import CLASS_NAMES as VOC_CLASSES

from .shapes import DEFAULT_SEED, render_image

SHORT_SIDE = (800, 1000)
MAX_SIDE = 1333
COCO_THINGS = [c for c in COCO_CATEGORIES if c["isthing"]]


def large_image(seed, split, index):
    """An embedded image enlarged to COCO scale: (RGB image, [(shape label, xyxy box)])."""
    image, objects = render_image(seed, split, index)
    h, w = image.shape[:2]
    short = np.random.default_rng([seed, index, 7]).integers(SHORT_SIDE[0], SHORT_SIDE[1] + 1)
    scale = min(short / min(h, w), MAX_SIDE / max(h, w))
    size = (round(w * scale), round(h * scale))
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    boxes = [(label, tuple(round(v * scale, 1) for v in box)) for label, box, _ in objects]
    return image, boxes


def _spread(label, k, num_classes, num_shapes=5):
    """Spread the 5 shape labels over ``num_classes`` classes (object k of the split)."""
    per_shape = num_classes // num_shapes
    return label * per_shape + k % per_shape


def _write_jpeg(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]):
        raise OSError(f"could not write {path}")


def write_coco_like(root, num_train=40, num_val=8, num_unlabeled=8, seed=DEFAULT_SEED):
    """Write the COCO tree under ``root/coco``; returns that folder."""
    coco_root = os.path.join(root, "coco")
    categories = [{"id": c["id"], "name": c["name"], "supercategory": "shape"} for c in COCO_THINGS]
    counter = 0
    for split, count in (("train2017", num_train), ("val2017", num_val), ("unlabeled2017", num_unlabeled)):
        images, annotations = [], []
        for i in range(count):
            offset = num_train if split == "unlabeled2017" else 0  # other pictures than train2017's
            image, boxes = large_image(seed, "train" if split != "val2017" else "val", offset + i)
            name = f"{i + 1:012d}.jpg"
            _write_jpeg(os.path.join(coco_root, split, name), image)
            images.append({"id": i + 1, "file_name": name, "height": image.shape[0], "width": image.shape[1]})
            for label, (x0, y0, x1, y1) in boxes:
                counter += 1
                category = COCO_THINGS[_spread(label, counter, len(COCO_THINGS))]["id"]
                annotations.append({"id": counter, "image_id": i + 1, "category_id": category,
                                    "bbox": [x0, y0, round(x1 - x0, 1), round(y1 - y0, 1)],
                                    "area": round((x1 - x0) * (y1 - y0), 1), "iscrowd": 0})
        if split == "unlabeled2017":
            continue  # a plain image folder, as COCO's unlabeled2017
        os.makedirs(os.path.join(coco_root, "annotations"), exist_ok=True)
        with open(os.path.join(coco_root, "annotations", f"instances_{split}.json"), "w") as f:
            json.dump({"info": {"description": "embedded shapes at COCO scale"}, "licenses": [],
                       "images": images, "annotations": annotations, "categories": categories}, f)
    return coco_root


def _voc_xml(name, image, boxes, counter):
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "filename").text = name + ".jpg"
    size = ET.SubElement(annotation, "size")
    for key, value in (("width", image.shape[1]), ("height", image.shape[0]), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    for label, (x0, y0, x1, y1) in boxes:
        counter += 1
        obj = ET.SubElement(annotation, "object")
        ET.SubElement(obj, "name").text = VOC_CLASSES[_spread(label, counter, len(VOC_CLASSES))]
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        # VOC boxes are 1-based inclusive pixel indices
        for key, value in (("xmin", x0 + 1), ("ymin", y0 + 1), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(box, key).text = str(int(round(value)))
    return ET.ElementTree(annotation), counter


def write_voc_like(root, num_2007_trainval=16, num_2007_test=8, num_2012_trainval=16, seed=DEFAULT_SEED):
    """Write ``root/VOC2007`` and ``root/VOC2012``; returns ``root``."""
    counter, index = 0, 0
    for year, split, count in (("2007", "trainval", num_2007_trainval), ("2007", "test", num_2007_test),
                               ("2012", "trainval", num_2012_trainval)):
        base = os.path.join(root, f"VOC{year}")
        os.makedirs(os.path.join(base, "Annotations"), exist_ok=True)
        os.makedirs(os.path.join(base, "ImageSets", "Main"), exist_ok=True)
        names = []
        for _ in range(count):
            index += 1
            image, boxes = large_image(seed, "val" if split == "test" else "train", index)
            name = f"{year}_{index:06d}"
            _write_jpeg(os.path.join(base, "JPEGImages", name + ".jpg"), image)
            tree, counter = _voc_xml(name, image, boxes, counter)
            tree.write(os.path.join(base, "Annotations", name + ".xml"))
            names.append(name)
        with open(os.path.join(base, "ImageSets", "Main", f"{split}.txt"), "w") as f:
            f.write("\n".join(names) + "\n")
    return root
