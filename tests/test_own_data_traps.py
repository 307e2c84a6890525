"""The own-data path without traps: each failure a new user met, reproduced, now an error at start
naming the key and the fix, or fixed."""

import json
import os
import re
import shutil

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.engine import default_argument_parser
from detectron2.modeling import build_model

from softteacher import load_config
from softteacher.datasets import register_custom_from_config
from softteacher.engine import launch
from softteacher.export import load_checkpoint
from softteacher.tools import export_model, predict, visualize_views

from conftest import config_path, custom_cfg, custom_opts


def write_json(path, coco):
    with open(path, "w") as f:
        json.dump(coco, f)
    return str(path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def test_an_image_folder_that_is_the_wrong_one_stops_at_start_naming_the_key(tiny_shapes):
    opts = custom_opts(tiny_shapes, "mine_wrong_folder") + ["DATASETS.CUSTOM.LABELED_IMAGES",
                                                            os.path.join(tiny_shapes, "val")]
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"DATASETS.CUSTOM.LABELED_IMAGES = '{os.path.join(tiny_shapes, 'val')}': ")) as e:
        register_custom_from_config(custom_cfg(opts))
    assert "sampled images of DATASETS.CUSTOM.LABELED_JSON are not there (first: " in str(e.value)
    assert "train_00000.jpg" in str(e.value)


def test_jsons_with_different_categories_name_the_one_that_differs_not_num_classes(tiny_shapes, tmp_path):
    coco = read_json(os.path.join(tiny_shapes, "annotations", "instances_train.json"))
    coco["categories"] = coco["categories"][:4]
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] in {c["id"] for c in coco["categories"]}]
    four = write_json(tmp_path / "unlabeled4.json", coco)
    opts = custom_opts(tiny_shapes, "mine_cats") + ["DATASETS.CUSTOM.UNLABELED_JSON", four]
    for num_classes in ("5", "4"):  # the same message whatever NUM_CLASSES says
        with pytest.raises(ValueError) as e:
            register_custom_from_config(custom_cfg(opts + ["MODEL.ROI_HEADS.NUM_CLASSES", num_classes]))
        message = str(e.value)
        assert message.startswith(f"DATASETS.CUSTOM.UNLABELED_JSON = '{four}' has 4 categories")
        assert "DATASETS.CUSTOM.LABELED_JSON" in message and "has 5" in message and "NUM_CLASSES" not in message


def test_an_unlabeled_json_of_images_only_registers_its_images(tiny_shapes, tmp_path):
    coco = read_json(os.path.join(tiny_shapes, "annotations", "instances_train.json"))
    images_only = write_json(tmp_path / "images_only.json", {"images": coco["images"]})
    names = register_custom_from_config(custom_cfg(custom_opts(tiny_shapes, "mine_images_only")
                                                   + ["DATASETS.CUSTOM.UNLABELED_JSON", images_only]))
    unlabeled = DatasetCatalog.get(names[1])
    assert [d["image_id"] for d in unlabeled] == [im["id"] for im in coco["images"]]
    assert all(d.get("annotations", []) == [] for d in unlabeled)


def test_a_json_with_annotations_but_no_categories_names_the_fix(tiny_shapes, tmp_path):
    coco = read_json(os.path.join(tiny_shapes, "annotations", "instances_train.json"))
    del coco["categories"]
    path = write_json(tmp_path / "no_categories.json", coco)
    with pytest.raises(ValueError, match=re.escape(f"{path}: missing top-level key 'categories'; add the labeled "
                                                   "json's 'categories' list")):
        register_custom_from_config(custom_cfg(custom_opts(tiny_shapes, "mine_nocats")
                                               + ["DATASETS.CUSTOM.UNLABELED_JSON", path]))


def test_a_misspelt_key_names_the_key_meant(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(f'_BASE_: "{config_path("Shapes", "soft_teacher_R18_FPN_10pct.yaml")}"\n'
                      "SEMI:\n  BURNIN_ITERS: 100\n")
    with pytest.raises(KeyError, match=re.escape(f"SEMI.BURNIN_ITERS (in {config}); did you mean SEMI.BURN_IN_ITERS?")):
        load_config(str(config))
    with pytest.raises(KeyError, match=re.escape("DATASETS.CUSTOM.LABELLED_JSON (in the command line); did you mean "
                                                 "DATASETS.CUSTOM.LABELED_JSON")):
        load_config(config_path("Custom", "soft_teacher_shapes_as_files.yaml"), ["DATASETS.CUSTOM.LABELLED_JSON", "x"])


def test_eval_only_without_weights_refuses_instead_of_evaluating_random_weights(tmp_path):
    args = default_argument_parser().parse_args(
        ["--config-file", config_path("Shapes", "supervised_R18_FPN_10pct.yaml"), "--eval-only",
         "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(ValueError, match="--eval-only with MODEL.WEIGHTS empty would evaluate random weights"):
        launch.setup(args)


@pytest.fixture(scope="module")
def supervised_checkpoint(tmp_path_factory):
    """A supervised run's checkpoint: one model, no teacher."""
    root = tmp_path_factory.mktemp("supervised")
    cfg = load_config(config_path("Shapes", "supervised_R18_FPN_10pct.yaml"), ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(5)
    torch.save({"model": build_model(cfg).state_dict(), "iteration": 10}, root / "model_final.pth")
    return root


def test_a_supervised_checkpoint_exports_its_model_and_says_the_backbone_needs_softteacher(
        supervised_checkpoint, tmp_path, capsys):
    export_model.main(["--config-file", config_path("Shapes", "supervised_R18_FPN_10pct.yaml"), "--checkpoint",
                       str(supervised_checkpoint / "model_final.pth"), "--output", str(tmp_path / "exported")])
    saved = load_checkpoint(str(supervised_checkpoint / "model_final.pth"))["model"]
    exported = load_checkpoint(str(tmp_path / "exported" / "model.pth"))["model"]
    assert exported.keys() == saved.keys() and all(torch.equal(exported[k], saved[k]) for k in saved)
    header = (tmp_path / "exported" / "config.yaml").read_text().splitlines()[:2]
    assert header[1].startswith("# MODEL.BACKBONE.NAME build_resnet18_fpn_backbone_any_width is the Soft Teacher "
                                "project's: `import softteacher`")
    assert "`import softteacher` before building the exported model" in capsys.readouterr().out


def test_a_coco_json_input_whose_images_are_elsewhere_asks_for_image_root(tiny_shapes, supervised_checkpoint, tmp_path):
    val_json = tmp_path / "val.json"  # a json away from its images, as a user's annotations folder is
    shutil.copy(os.path.join(tiny_shapes, "annotations", "instances_val.json"), val_json)
    argv = ["--config-file", config_path("Shapes", "supervised_R18_FPN_10pct.yaml"), "--weights",
            str(supervised_checkpoint / "model_final.pth"), "--input", str(val_json), "--output", str(tmp_path / "p"),
            "--no-pictures"]
    with pytest.raises(FileNotFoundError, match=re.escape("pass --image-root with the folder")):
        predict.main([*argv, "MODEL.DEVICE", "cpu"])
    # with it, every image is read (none could be would exit non-zero) and predicted
    predict.main([*argv, "--image-root", os.path.join(tiny_shapes, "val"), "MODEL.DEVICE", "cpu"])
    assert (tmp_path / "p" / "predictions.json").exists()


def test_a_tool_that_could_read_no_image_exits_non_zero_naming_image_root(supervised_checkpoint, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(3):
        (broken / f"b{i}.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(SystemExit, match=r"none of the 3 images could be read .*--image-root"):
        predict.main(["--config-file", config_path("Shapes", "supervised_R18_FPN_10pct.yaml"), "--weights",
                      str(supervised_checkpoint / "model_final.pth"), "--input", str(broken), "--output",
                      str(tmp_path / "p"), "MODEL.DEVICE", "cpu"])


def test_visualize_views_reads_a_custom_config(tiny_shapes, tmp_path):
    import cv2

    out = tmp_path / "views.png"
    visualize_views.main(["--config-file", config_path("Custom", "soft_teacher_shapes_as_files.yaml"), "--num", "1",
                          "--output", str(out), *custom_opts(tiny_shapes, "mine_views"),
                          "DATASETS.TRAIN_LABELED", "('mine_views_labeled',)",
                          "DATASETS.TRAIN_UNLABELED", "('mine_views_unlabeled',)"])
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 100 and image.std() > 0
