"""Your own data through config keys alone: labeled json, unlabeled json or image folder, val json."""

import json
import os
import re
import sys

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser

from softteacher import load_config
from softteacher.data import register_custom_from_config

from conftest import REPO, config_path, tiny_training_opts

sys.path.insert(0, REPO)
import train_net  # noqa: E402


def custom_opts(root, name, unlabeled_json=True):
    ann = os.path.join(root, "annotations")
    return [
        "DATASETS.CUSTOM.NAME", name,
        "DATASETS.CUSTOM.LABELED_JSON", os.path.join(ann, "instances_train.json"),
        "DATASETS.CUSTOM.LABELED_IMAGES", os.path.join(root, "train"),
        "DATASETS.CUSTOM.UNLABELED_JSON", os.path.join(ann, "instances_train.json") if unlabeled_json else "",
        "DATASETS.CUSTOM.UNLABELED_IMAGES", os.path.join(root, "train"),
        "DATASETS.CUSTOM.VAL_JSON", os.path.join(ann, "instances_val.json"),
        "DATASETS.CUSTOM.VAL_IMAGES", os.path.join(root, "val"),
    ]


def custom_cfg(opts):
    cfg = load_config(config_path("Custom", "soft_teacher_shapes_as_files.yaml"))
    cfg.merge_from_list(opts)
    return cfg


def test_config_keys_register_labeled_unlabeled_folder_and_val_sets(tiny_shapes):
    names = register_custom_from_config(custom_cfg(custom_opts(tiny_shapes, "mine_folder", unlabeled_json=False)))
    assert names == ["mine_folder_labeled", "mine_folder_unlabeled", "mine_folder_val"]
    labeled, unlabeled = DatasetCatalog.get(names[0]), DatasetCatalog.get(names[1])
    with open(os.path.join(tiny_shapes, "annotations", "instances_train.json")) as f:
        coco = json.load(f)
    assert len(labeled) == len(coco["images"]) == len(unlabeled)
    assert sum(len(d["annotations"]) for d in labeled) == len(coco["annotations"])
    assert all("annotations" not in d for d in unlabeled)  # a plain folder: images only
    assert MetadataCatalog.get(names[0]).thing_classes == [c["name"] for c in coco["categories"]]
    assert len(DatasetCatalog.get(names[2])) == 6


@pytest.mark.parametrize("key,value,message", [
    ("DATASETS.CUSTOM.LABELED_IMAGES", "/no/such/folder", "DATASETS.CUSTOM.LABELED_IMAGES = '/no/such/folder'"),
    ("DATASETS.CUSTOM.VAL_JSON", "/no/such.json", "DATASETS.CUSTOM.VAL_JSON = '/no/such.json'"),
])
def test_a_missing_file_or_folder_is_refused_with_its_key(tiny_shapes, key, value, message):
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        register_custom_from_config(custom_cfg(custom_opts(tiny_shapes, "mine_bad") + [key, value]))


def test_train_net_trains_and_evaluates_on_custom_data_by_config_alone(tiny_shapes, tmp_path):
    opts = tiny_training_opts(tmp_path, max_iter=2) + custom_opts(tiny_shapes, "mine") + [
        "DATASETS.TRAIN_LABELED", "('mine_labeled',)",
        "DATASETS.TRAIN_UNLABELED", "('mine_unlabeled',)",
        "DATASETS.TEST", "('mine_val',)",
        "SOLVER.IMS_PER_BATCH_LABELED", "1",
        "SOLVER.IMS_PER_BATCH_UNLABELED", "2",
        "SEMI.BURN_IN_ITERS", "0",
    ]
    args = default_argument_parser().parse_args(
        ["--config-file", config_path("Custom", "soft_teacher_shapes_as_files.yaml"), *opts]
    )
    train_net.main(args)
    with open(os.path.join(tmp_path, "metrics.json")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    assert any("teacher/bbox/AP" in r and "student/bbox/AP" in r for r in rows)
    # pseudo-label quality was measured against the unlabeled json's annotations
    assert any("semi/recall_rpn" in r for r in rows)
    assert os.path.exists(os.path.join(tmp_path, "teacher", "inference", "mine_val", "coco_instances_results.json"))
