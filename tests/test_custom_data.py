"""Your own data through config keys alone: labeled json, unlabeled json or image folder, val json."""

import json
import os
import re

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model

from softteacher.datasets import register_custom_from_config
from softteacher.engine import launch
from softteacher.export import export_plain_model
from softteacher.inference import category_ids, class_names

from conftest import config_path, custom_cfg, custom_opts, read_metrics, tiny_training_opts


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
    launch.main(args)
    rows = read_metrics(os.path.join(tmp_path, "metrics.json"))
    assert any("teacher/bbox/AP" in r and "student/bbox/AP" in r for r in rows)
    # pseudo-label quality was measured against the unlabeled json's annotations
    assert any("semi/recall_rpn" in r for r in rows)
    assert os.path.exists(os.path.join(tmp_path, "teacher", "inference", "mine_val", "coco_instances_results.json"))


def test_num_classes_that_differs_from_the_json_stops_at_start_naming_both_and_the_file(tiny_shapes):
    json_file = os.path.join(tiny_shapes, "annotations", "instances_train.json")
    cfg = custom_cfg(custom_opts(tiny_shapes, "mine_count") + ["MODEL.ROI_HEADS.NUM_CLASSES", "7"])
    with pytest.raises(ValueError, match=re.escape(f"{json_file}: 5 categories, but MODEL.ROI_HEADS.NUM_CLASSES = 7")):
        register_custom_from_config(cfg)


def test_category_names_reach_metadata_predictions_and_the_exported_config(tiny_shapes, tmp_path):
    """A json with its own names and non-contiguous ids: names and ids survive to every output."""
    ann = os.path.join(tiny_shapes, "annotations")
    renamed = {}
    for split in ("train", "val"):
        with open(os.path.join(ann, f"instances_{split}.json")) as f:
            coco = json.load(f)
        for c in coco["categories"]:
            c["name"], c["id"] = f"thing_{c['name']}", c["id"] * 10
        for a in coco["annotations"]:
            a["category_id"] *= 10
        renamed[split] = str(tmp_path / f"{split}.json")
        with open(renamed[split], "w") as f:
            json.dump(coco, f)
    cfg = custom_cfg(custom_opts(tiny_shapes, "mine_names") + [
        "DATASETS.CUSTOM.LABELED_JSON", renamed["train"], "DATASETS.CUSTOM.UNLABELED_JSON", "",
        "DATASETS.CUSTOM.VAL_JSON", renamed["val"], "DATASETS.TEST", "('mine_names_val',)",
        "DATASETS.TRAIN_LABELED", "('mine_names_labeled',)", "MODEL.DEVICE", "cpu",
    ])
    register_custom_from_config(cfg)
    expected = ["thing_disk", "thing_triangle", "thing_rectangle", "thing_star", "thing_cross"]
    assert MetadataCatalog.get("mine_names_labeled").thing_classes == expected  # before any loading
    assert class_names(cfg) == expected
    assert category_ids(cfg) == {0: 10, 1: 20, 2: 30, 3: 40, 4: 50}
    torch.save({"model": build_model(cfg).state_dict()}, tmp_path / "ckpt.pth")
    _, config = export_plain_model(cfg, str(tmp_path / "ckpt.pth"), "student", str(tmp_path / "exported"),
                                   expected, [10, 20, 30, 40, 50])
    assert open(config).readline().strip().endswith(", ".join(expected))
    with open(tmp_path / "exported" / "metadata.json") as f:
        assert json.load(f) == {"thing_classes": expected, "category_ids": [10, 20, 30, 40, 50]}


def test_pseudo_label_pictures_name_classes_when_the_unlabeled_set_is_a_plain_folder(tiny_shapes, tmp_path):
    from softteacher.engine.pseudo_label_pictures import PseudoLabelPicturesHook

    cfg = custom_cfg(custom_opts(tiny_shapes, "mine_pictures", unlabeled_json=False) + [
        "DATASETS.TRAIN_LABELED", "('mine_pictures_labeled',)",
        "DATASETS.TRAIN_UNLABELED", "('mine_pictures_unlabeled',)",
        "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path), "DATALOADER.NUM_WORKERS", "0",
    ])
    register_custom_from_config(cfg)
    assert MetadataCatalog.get("mine_pictures_unlabeled").get("thing_classes") is None  # a folder names nothing
    hook = PseudoLabelPicturesHook(cfg, pseudo_labeler=None, period=1, num_images=1)
    hook.before_train()
    assert hook.class_names == ["disk", "triangle", "rectangle", "star", "cross"]  # from the labeled json
