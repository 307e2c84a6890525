"""The second generated dataset (glyphs): deterministic, another kind of detection task, and
registered through DATASETS.CUSTOM by its configs as a user's own data is."""

import json
import os

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from softteacher import load_config
from softteacher.datasets import register_custom_from_config
from softteacher.datasets.synthetic import glyphs, shapes

from conftest import config_path


def test_same_seed_gives_the_same_image_and_boxes_another_seed_others():
    image, objects = glyphs.render_image(7, "val", 3)
    again, objects_again = glyphs.render_image(7, "val", 3)
    assert np.array_equal(image, again) and objects == objects_again
    other, objects_other = glyphs.render_image(8, "val", 3)
    assert not np.array_equal(image, other) or objects != objects_other


def test_glyphs_are_small_many_and_apart_unlike_the_shapes():
    heights, labels, counts = [], [], []
    for index in range(80):
        image, objects = glyphs.render_image(glyphs.DEFAULT_SEED, "train", index)
        h, w = image.shape[:2]
        assert (h, w) in glyphs.IMAGE_SIZES and image.dtype == np.uint8
        counts.append(len(objects))
        boxes = [box for _, box, _ in objects]
        for label, (x0, y0, x1, y1), _ in objects:
            assert 0 < x0 < x1 < w and 0 < y0 < y1 < h
            heights.append(y1 - y0)
            labels.append(label)
        for i, a in enumerate(boxes):  # printed glyphs do not overlap
            for b in boxes[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    assert set(labels) == set(range(len(glyphs.CLASSES)))
    assert np.mean(counts) > 5  # the shapes hold 1-8 objects, about 4.4 an image
    assert np.median(heights) < 32 and min(heights) < 14  # smaller than the shapes' 16-64 px


def test_every_labelled_box_holds_strokes_against_the_background():
    image, objects = glyphs.render_image(glyphs.DEFAULT_SEED, "val", 5)
    gray = image.astype(np.float32).mean(2)
    for _, (x0, y0, x1, y1), _ in objects:
        inside = gray[y0:y1, x0:x1]
        assert inside.max() - inside.min() > 40  # strokes against the background


def test_generated_split_registers_through_the_custom_keys_of_its_configs(tmp_path):
    root = str(tmp_path / "glyphs")
    for split, n in (("train", 10), ("val", 4), ("test", 4)):
        shapes.generate_split(root, split, n, 3, 1, render=glyphs.render_image, class_names=glyphs.CLASSES,
                              supercategory="glyph", description="test glyphs")
    cfg = load_config(config_path("Glyphs", "supervised_R18_FPN_100pct.yaml"))
    ann = os.path.join(root, "annotations")
    cfg.merge_from_list([
        "DATASETS.CUSTOM.NAME", "test_glyphs",
        "DATASETS.CUSTOM.LABELED_JSON", os.path.join(ann, "instances_train.json"),
        "DATASETS.CUSTOM.LABELED_IMAGES", os.path.join(root, "train"),
        "DATASETS.CUSTOM.UNLABELED_JSON", "",
        "DATASETS.CUSTOM.UNLABELED_IMAGES", "",
        "DATASETS.CUSTOM.VAL_JSON", os.path.join(ann, "instances_val.json"),
        "DATASETS.CUSTOM.VAL_IMAGES", os.path.join(root, "val"),
        "DATASETS.CUSTOM.TEST_JSON", os.path.join(ann, "instances_test.json"),
        "DATASETS.CUSTOM.TEST_IMAGES", os.path.join(root, "test"),
    ])
    assert register_custom_from_config(cfg) == ["test_glyphs_labeled", "test_glyphs_val", "test_glyphs_test"]
    assert len(DatasetCatalog.get("test_glyphs_test")) == 4
    records = DatasetCatalog.get("test_glyphs_labeled")
    with open(os.path.join(ann, "instances_train.json")) as f:
        coco = json.load(f)
    assert len(records) == 10 and sum(len(r["annotations"]) for r in records) == len(coco["annotations"])
    assert MetadataCatalog.get("test_glyphs_val").thing_classes == list(glyphs.CLASSES)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == len(glyphs.CLASSES)
