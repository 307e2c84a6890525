"""Label-ratio splits: deterministic, disjoint, covering, with the requested fraction."""

import json

import numpy as np
import pytest

from softteacher.datasets.splits import load_coco_dict, split_image_ids, split_paths, write_split

POOL = list(range(1, 2001))


@pytest.mark.parametrize("method", ["original", "permutation"])
@pytest.mark.parametrize("percent", [1, 5, 10, 100, 0.5])
def test_split_is_disjoint_covers_the_pool_and_meets_the_fraction(percent, method):
    labeled, unlabeled = split_image_ids(POOL, percent, fold=1, method=method)
    assert not set(labeled) & set(unlabeled)
    assert sorted(labeled + unlabeled) == POOL
    assert len(labeled) == max(1, round(len(POOL) * percent / 100))


def test_split_is_deterministic_and_folds_differ():
    assert split_image_ids(POOL, 10, fold=1) == split_image_ids(POOL, 10, fold=1)
    assert split_image_ids(POOL, 10, fold=1)[0] != split_image_ids(POOL, 10, fold=2)[0]
    permutation = {"method": "permutation"}
    assert (split_image_ids(POOL, 10, fold=1, seed=1, **permutation)[0]
            != split_image_ids(POOL, 10, 1, seed=2, **permutation)[0])


def published_selection(image_ids, percent, fold, with_replacement):
    """The published splits, re-implemented from their description rather than their code: a
    legacy numpy generator seeded with the fold; without replacement numpy's choice is the head of
    a permutation of the positions, with replacement it is uniform integer draws."""
    rng = np.random.RandomState(fold)
    n = int(percent / 100.0 * len(image_ids))
    positions = rng.randint(0, len(image_ids), size=n) if with_replacement else rng.permutation(len(image_ids))[:n]
    return sorted({image_ids[p] for p in positions})


@pytest.mark.parametrize("fold", [1, 2, 5])
@pytest.mark.parametrize("percent", [1, 5, 10])
def test_default_split_is_the_original_codes_and_mmdetection_is_with_replacement(fold, percent):
    shuffled = np.random.default_rng(0).permutation(np.arange(10, 30010, 3)).tolist()  # json order, ids with gaps
    labeled, unlabeled = split_image_ids(shuffled, percent, fold)
    assert labeled == published_selection(shuffled, percent, fold, with_replacement=False)
    assert len(labeled) == int(percent / 100 * len(shuffled))
    assert sorted(labeled + unlabeled) == sorted(shuffled)
    mmdet, _ = split_image_ids(shuffled, percent, fold, method="mmdetection")
    assert mmdet == published_selection(shuffled, percent, fold, with_replacement=True)
    assert len(mmdet) <= len(labeled)  # repeats: fewer distinct images (always, at 10 %)
    assert percent < 10 or len(mmdet) < len(labeled)


def test_the_original_split_depends_on_the_json_order():
    forward, _ = split_image_ids(POOL, 10, fold=1)
    backward, _ = split_image_ids(POOL[::-1], 10, fold=1)
    assert forward != backward  # positions are drawn, as in the original code


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


def test_split_tool_writes_every_requested_percent_and_fold(tmp_path, capsys):
    from softteacher.tools.split_coco import main

    src = tmp_path / "instances_x.json"
    src.write_text(json.dumps({"images": [{"id": i} for i in range(1, 101)], "annotations": [],
                               "categories": []}))
    main([str(src), "--percent", "1", "10", "--fold", "1", "2"])
    written = sorted(p.name for p in tmp_path.iterdir() if p.name != "instances_x.json")
    assert written == sorted(f"instances_x.{f}@{p}{s}.json" for p in (1, 10) for f in (1, 2)
                             for s in ("", "-unlabeled"))
    assert len(json.loads((tmp_path / "instances_x.2@10.json").read_text())["images"]) == 10


def test_a_plain_image_folder_is_an_unlabeled_dataset(tmp_path):
    import cv2
    import numpy as np

    from softteacher.datasets.coco_files import load_image_folder

    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((30, 40, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "sub" / "b.png"), np.zeros((20, 10, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    dicts = load_image_folder(str(tmp_path))
    assert [d["image_id"] for d in dicts] == ["a.jpg", "sub/b.png"]
    with pytest.raises(FileNotFoundError, match="missing-folder"):
        load_image_folder(str(tmp_path / "missing-folder"))
