"""The embedded dataset: deterministic, and a detection task with the variety it promises."""

import hashlib
import json
import os

import numpy as np

from softteacher.datasets.synthetic import shapes


def _digest(root, split):
    h = hashlib.sha256()
    for name in sorted(os.listdir(os.path.join(root, split))):
        with open(os.path.join(root, split, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def test_same_seed_gives_identical_json_and_images_whatever_the_workers(tmp_path):
    a = shapes.generate_split(str(tmp_path / "a"), "val", 10, seed=3, workers=1)
    b = shapes.generate_split(str(tmp_path / "b"), "val", 10, seed=3, workers=2)
    with open(a) as fa, open(b) as fb:
        assert fa.read() == fb.read()
    assert _digest(str(tmp_path / "a"), "val") == _digest(str(tmp_path / "b"), "val")


def test_another_seed_gives_other_images(tmp_path):
    a = shapes.generate_split(str(tmp_path / "a"), "val", 4, seed=3, workers=1)
    b = shapes.generate_split(str(tmp_path / "b"), "val", 4, seed=4, workers=1)
    with open(a) as fa, open(b) as fb:
        assert json.load(fa)["annotations"] != json.load(fb)["annotations"]


def test_images_hold_one_to_eight_objects_of_every_class_over_a_4x_scale_range():
    sizes, labels, counts = [], [], []
    for index in range(120):
        image, objects = shapes.render_image(shapes.DEFAULT_SEED, "train", index)
        h, w = image.shape[:2]
        assert (h, w) in shapes.IMAGE_SIZES and image.dtype == np.uint8
        counts.append(len(objects))
        for label, (x0, y0, x1, y1), _ in objects:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            sizes.append(max(x1 - x0, y1 - y0))
            labels.append(label)
    assert 1 <= min(counts) and max(counts) <= 8
    assert set(labels) == set(range(len(shapes.CLASSES))) and len(shapes.CLASSES) >= 4
    assert max(sizes) >= 4 * min(sizes)  # the scale range
    assert np.percentile(sizes, 95) >= 3 * np.percentile(sizes, 5)  # spread, not a few outliers


def test_objects_overlap_but_every_labelled_object_stays_at_least_half_visible():
    visible = [
        fraction
        for index in range(120)
        for _, _, fraction in shapes.render_image(shapes.DEFAULT_SEED, "train", index)[1]
    ]
    assert min(visible) >= shapes.MIN_VISIBLE_FRACTION
    assert np.mean(np.array(visible) < 0.95) > 0.02  # partial occlusion really happens


def test_coco_json_is_well_formed(tmp_path):
    path = shapes.generate_split(str(tmp_path), "train", 6, workers=1)
    with open(path) as f:
        coco = json.load(f)
    assert [c["name"] for c in coco["categories"]] == list(shapes.CLASSES)
    ids = [im["id"] for im in coco["images"]]
    assert len(set(ids)) == 6
    for ann in coco["annotations"]:
        assert ann["image_id"] in ids and 1 <= ann["category_id"] <= len(shapes.CLASSES)
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and ann["area"] == w * h
    for im in coco["images"]:
        assert os.path.exists(os.path.join(str(tmp_path), "train", im["file_name"]))
