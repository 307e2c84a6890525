"""Configs load through _BASE_, unknown keys are refused by name, the model-zoo base is intact."""

import glob
import os
import re

import pytest
from detectron2 import model_zoo
from detectron2.config import get_cfg

from softteacher import add_softteacher_config, load_config
from softteacher.config_checks import validate_softteacher_config
from softteacher.datasets.synthetic import shapes
from softteacher.engine.trainer import check_semi_supervised_model

from conftest import config_path


@pytest.mark.parametrize(
    "path", sorted(glob.glob(config_path("**", "*.yaml"), recursive=True)), ids=os.path.basename
)
def test_every_shipped_config_loads_and_names_a_model_its_trainer_accepts(path):
    cfg = load_config(path)
    if cfg.DATASETS.TRAIN_UNLABELED or cfg.MODEL.META_ARCHITECTURE == "SemiSupervisedRCNN":
        check_semi_supervised_model(cfg)  # raises for a model the teacher-student step cannot drive
        assert cfg.SOLVER.IMS_PER_BATCH_UNLABELED > 0
    else:
        assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    if not cfg.DATASETS.CUSTOM.NAME:  # custom names exist once their files do (test_custom_data)
        validate_softteacher_config(cfg)


def test_shapes_config_inherits_the_base_and_overrides_it():
    cfg = load_config(config_path("Shapes", "supervised_R18_FPN_10pct.yaml"))
    # from Base-RCNN-FPN.yaml, two levels up the _BASE_ chain
    assert cfg.MODEL.RPN.IN_FEATURES == ["p2", "p3", "p4", "p5", "p6"]
    # from Base-Shapes-R18-FPN.yaml: trains from scratch, so GroupNorm and nothing frozen
    assert (cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.NORM, cfg.MODEL.FPN.NORM) == (18, "GN", "GN")
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0 and cfg.MODEL.WEIGHTS == ""
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == len(shapes.CLASSES)
    # from the leaf
    assert cfg.DATASETS.TRAIN == ("shapes_train.1@10",)


def test_project_keys_have_the_design_defaults():
    cfg = get_cfg()
    add_softteacher_config(cfg)
    assert cfg.SEMI.UNSUP_WEIGHT == 4.0 and cfg.SEMI.EMA_MOMENTUM == 0.999
    assert (cfg.SEMI.RPN_PSEUDO_THRESH, cfg.SEMI.CLS_PSEUDO_THRESH) == (0.9, 0.9)
    assert (cfg.SEMI.JITTER_TIMES, cfg.SEMI.JITTER_SCALE) == (10, 0.06)
    assert cfg.SEMI.REG_UNCERTAINTY_THRESH == 0.02


def test_unknown_key_in_a_file_is_refused_with_its_name(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{config_path("Base-RCNN-FPN.yaml")}"\nSEMI:\n  UNSUP_WIEGHT: 2.0\n')
    with pytest.raises(KeyError, match="SEMI.UNSUP_WIEGHT"):
        load_config(str(bad))


def test_unknown_key_on_the_command_line_is_refused_with_its_name():
    with pytest.raises(KeyError, match=r"Non-existent config key: SOLVER.BASE_LRR \(in the command line\); did you "
                       "mean SOLVER.BASE_LR"):
        load_config(config_path("Base-RCNN-FPN.yaml"), ["SOLVER.BASE_LRR", "0.1"])


def test_shipped_base_equals_the_installed_model_zoo_base():
    zoo = model_zoo.get_config_file("Base-RCNN-FPN.yaml")
    assert load_config(config_path("Base-RCNN-FPN.yaml")) == load_config(zoo)


def test_a_semi_supervised_config_with_a_plain_model_is_refused_by_name():
    semi_config = config_path("Shapes", "soft_teacher_R18_FPN_10pct.yaml")
    cfg = load_config(semi_config, ["MODEL.ROI_HEADS.NAME", "StandardROIHeads"])
    with pytest.raises(ValueError, match="MODEL.ROI_HEADS.NAME = 'StandardROIHeads'"):
        check_semi_supervised_model(cfg)
    cfg = load_config(semi_config, ["MODEL.META_ARCHITECTURE", "GeneralizedRCNN"])
    with pytest.raises(ValueError, match="MODEL.META_ARCHITECTURE = 'GeneralizedRCNN'"):
        check_semi_supervised_model(cfg)


@pytest.mark.parametrize("key,value,message", [
    ("SEMI.PSEUDO_SCORE_THRESH", "1.5", "SEMI.PSEUDO_SCORE_THRESH = 1.5: expected a score threshold in [0, 1]"),
    ("SEMI.RPN_PSEUDO_THRESH", "-0.1", "SEMI.RPN_PSEUDO_THRESH = -0.1"),
    ("SEMI.CLS_PSEUDO_THRESH", "2.0", "SEMI.CLS_PSEUDO_THRESH = 2.0"),
    ("SEMI.REG_UNCERTAINTY_THRESH", "-0.02", "SEMI.REG_UNCERTAINTY_THRESH = -0.02"),
    ("SEMI.UNSUP_WEIGHT", "-4.0", "SEMI.UNSUP_WEIGHT = -4.0: expected a non-negative alpha"),
    ("SEMI.EMA_MOMENTUM", "1.0", "SEMI.EMA_MOMENTUM = 1.0: expected a momentum in (0, 1)"),
    ("SEMI.EMA_MOMENTUM", "0.0", "SEMI.EMA_MOMENTUM = 0.0"),
    ("SEMI.JITTER_TIMES", "1", "SEMI.JITTER_TIMES = 1: expected at least 2"),
    ("SOLVER.IMS_PER_BATCH_UNLABELED", "0", "SOLVER.IMS_PER_BATCH_UNLABELED = 0"),
    ("SOLVER.IMS_PER_BATCH_LABELED", "-1", "SOLVER.IMS_PER_BATCH_LABELED = -1"),
    ("MODEL.ROI_HEADS.NAME", "SoftTeacherHeads", "MODEL.ROI_HEADS.NAME = 'SoftTeacherHeads': expected a registered"),
    ("DATASETS.TRAIN_UNLABELED", "('shapes_trian',)", "DATASETS.TRAIN_UNLABELED = 'shapes_trian'"),
    ("SEMI.PREDICTION_GUIDED_ASSIGNMENT.IOU_THRESH", "0.0",
     "SEMI.PREDICTION_GUIDED_ASSIGNMENT.IOU_THRESH = 0.0: expected an IoU in (0, 1]"),
    ("SEMI.PREDICTION_GUIDED_ASSIGNMENT.CANDIDATE_TOPK", "0", "SEMI.PREDICTION_GUIDED_ASSIGNMENT.CANDIDATE_TOPK = 0"),
    ("SEMI.PSEUDO_MIXING.MOSAIC_SCALE", "(0.6, 0.4)", "SEMI.PSEUDO_MIXING.MOSAIC_SCALE = (0.6, 0.4)"),
    ("SEMI.PSEUDO_MIXING.MIXUP_WEIGHT", "-1.0", "SEMI.PSEUDO_MIXING.MIXUP_WEIGHT = -1.0: expected a non-negative"),
])
def test_a_bad_value_stops_at_start_naming_the_key_and_the_value(key, value, message):
    cfg = load_config(config_path("Shapes", "soft_teacher_R18_FPN_10pct.yaml"), [key, value])
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_softteacher_config(cfg)


def test_a_mosaic_needs_four_cached_views():
    cfg = load_config(config_path("Shapes", "soft_teacher_R18_FPN_10pct.yaml"),
                      ["SEMI.PSEUDO_MIXING.MOSAIC", "True", "SEMI.PSEUDO_MIXING.CACHE_SIZE", "3"])
    with pytest.raises(ValueError, match=re.escape("SEMI.PSEUDO_MIXING.CACHE_SIZE = 3: expected at least 4")):
        validate_softteacher_config(cfg)


def test_consistency_voting_with_a_regression_loss_it_cannot_weight_stops_at_start():
    cfg = load_config(config_path("Shapes", "soft_teacher_R18_FPN_10pct.yaml"),
                      ["SEMI.CONSISTENCY_VOTING", "True", "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE", "giou"])
    with pytest.raises(ValueError, match=re.escape("MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = 'giou'")):
        validate_softteacher_config(cfg)


SCHEDULE_KEYS = ("SOLVER.MAX_ITER", "SOLVER.STEPS", "SOLVER.CHECKPOINT_PERIOD", "TEST.EVAL_PERIOD",
                 "SEMI.BURN_IN_ITERS")


def _flat(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


@pytest.mark.parametrize(
    "path", sorted(p for p in glob.glob(config_path("*", "soft_teacher_plus_*.yaml")) if "_mixpl_" not in p),
    ids=os.path.basename,
)
def test_every_plus_config_is_its_published_config_with_uncertain_detections_ignored(path):
    """Two recipes, two names: "plus" ignores uncertain detections; "plus, no box jitter" also
    drops unlabeled box regression."""
    plus = _flat(load_config(path))
    no_box_jitter = "_plus_no_box_jitter_" in os.path.basename(path)
    # a longer schedule (..._1.7x.yaml) is compared with the published config at the same schedule
    published = _flat(load_config(path.replace("soft_teacher_plus_no_box_jitter_" if no_box_jitter
                                               else "soft_teacher_plus_", "soft_teacher_")
                                  .replace("_1.7x.yaml", ".yaml"),
                                  [item for key in SCHEDULE_KEYS for item in (key, str(plus[key]))]))
    plus.pop("OUTPUT_DIR"), published.pop("OUTPUT_DIR")
    changed = {key for key in plus if plus[key] != published[key]}
    ignoring = {"SEMI.IGNORE_UNCERTAIN", "SEMI.IGNORE_MIN_SCORE", "MODEL.PROPOSAL_GENERATOR.NAME"}
    small_images = os.path.basename(os.path.dirname(path)) in ("Shapes", "Glyphs")
    assert no_box_jitter is small_images  # the 128-px generated datasets use the second recipe
    assert changed == ignoring | ({"SEMI.BOX_JITTER"} if no_box_jitter else set())
    assert plus["SEMI.IGNORE_UNCERTAIN"] and plus["MODEL.PROPOSAL_GENERATOR.NAME"] == "PseudoLabelRPN"
    assert plus["SEMI.IGNORE_MIN_SCORE"] == 0.3
    assert plus["SEMI.BOX_JITTER"] is not small_images  # unlabeled regression off on 128-px images


@pytest.mark.parametrize("dataset", ["Shapes", "Glyphs"])
def test_the_mixed_config_is_plus_no_box_jitter_with_mosaic_and_mixup_on(dataset):
    mixed = _flat(load_config(config_path(dataset, "soft_teacher_plus_no_box_jitter_mixpl_R18_FPN_10pct.yaml")))
    plus = _flat(load_config(config_path(dataset, "soft_teacher_plus_no_box_jitter_R18_FPN_10pct.yaml")))
    changed = {key for key in mixed if mixed[key] != plus[key]}
    assert changed == {"SEMI.PSEUDO_MIXING.MOSAIC", "SEMI.PSEUDO_MIXING.MIXUP", "OUTPUT_DIR"}
    assert mixed["SEMI.PSEUDO_MIXING.MOSAIC"] and mixed["SEMI.PSEUDO_MIXING.MIXUP"]


def test_the_renamed_adaptive_regression_key_still_works_for_one_release_with_a_warning(tmp_path, caplog):
    old = tmp_path / "old.yaml"
    old.write_text(f'_BASE_: "{config_path("Shapes", "soft_teacher_R18_FPN_10pct.yaml")}"\n'
                   "SEMI:\n  ADAPTIVE_REG_THRESH:\n    ENABLED: True\n    PASS_FRACTION: 0.25\n")
    with caplog.at_level("WARNING", logger="softteacher.config"):
        cfg = load_config(str(old), ["SEMI.ADAPTIVE_REG_THRESH.WINDOW", "50"])
    new = cfg.SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH
    assert (new.ENABLED, new.PASS_FRACTION, new.WINDOW, new.MIN_SCORE) == (True, 0.25, 50, 0.9)
    assert all(value is None for value in cfg.SEMI.ADAPTIVE_REG_THRESH.values())
    assert ("SEMI.ADAPTIVE_REG_THRESH.PASS_FRACTION is deprecated: use "
            "SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH.PASS_FRACTION") in caplog.text
    validate_softteacher_config(cfg)
    # merged without load_config, the old name is not silently ignored
    raw = get_cfg()
    add_softteacher_config(raw)
    raw.merge_from_file(str(old))
    with pytest.raises(ValueError, match=r"ADAPTIVE_REG_THRESH\.ENABLED.*ADAPTIVE_REG_UNCERTAINTY_THRESH"):
        validate_softteacher_config(raw)
