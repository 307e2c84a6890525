"""Label-ratio splits: deterministic, disjoint, covering, with the requested fraction."""

import json

import pytest

from softteacher.data.splits import load_coco_dict, split_image_ids, split_paths, write_split

POOL = list(range(1, 2001))


@pytest.mark.parametrize("percent", [1, 5, 10, 100, 0.5])
def test_split_is_disjoint_covers_the_pool_and_meets_the_fraction(percent):
    labeled, unlabeled = split_image_ids(POOL, percent, fold=1)
    assert not set(labeled) & set(unlabeled)
    assert sorted(labeled + unlabeled) == POOL
    assert len(labeled) == max(1, round(len(POOL) * percent / 100))


def test_split_is_deterministic_and_folds_differ():
    assert split_image_ids(POOL, 10, fold=1) == split_image_ids(POOL, 10, fold=1)
    assert split_image_ids(POOL, 10, fold=1)[0] != split_image_ids(POOL, 10, fold=2)[0]
    assert split_image_ids(POOL, 10, fold=1, seed=1)[0] != split_image_ids(POOL, 10, 1, seed=2)[0]


def test_bad_percent_is_refused():
    with pytest.raises(ValueError, match="percent"):
        split_image_ids(POOL, 0, fold=1)


def test_written_files_are_named_like_the_original_and_partition_images_and_annotations(tmp_path):
    coco = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "height": 8, "width": 8} for i in range(1, 21)],
        "annotations": [
            {"id": i, "image_id": 1 + i % 20, "category_id": 1, "bbox": [0, 0, 2, 2]}
            for i in range(1, 41)
        ],
        "categories": [{"id": 1, "name": "a"}],
    }
    src = tmp_path / "instances_train2017.json"
    src.write_text(json.dumps(coco))
    labeled_path, unlabeled_path = write_split(str(src), 10, 1)
    assert labeled_path.endswith("instances_train2017.1@10.json")
    assert unlabeled_path.endswith("instances_train2017.1@10-unlabeled.json")
    assert (labeled_path, unlabeled_path) == split_paths(str(src), 10, 1)
    labeled, unlabeled = (json.loads(open(p).read()) for p in (labeled_path, unlabeled_path))
    assert len(labeled["images"]) == 2 and len(unlabeled["images"]) == 18
    ids = {im["id"] for im in labeled["images"]}
    assert all(a["image_id"] in ids for a in labeled["annotations"])
    assert len(labeled["annotations"]) + len(unlabeled["annotations"]) == 40
    assert labeled["categories"] == coco["categories"]


def test_broken_json_and_missing_keys_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid json"):
        load_coco_dict(str(bad))
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="partial.json: missing top-level key 'categories'"):
        load_coco_dict(str(partial))
