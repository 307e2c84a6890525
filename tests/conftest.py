"""Shared fixtures: a tiny generated copy of the embedded dataset, registered under test names."""

import json
import os

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from softteacher.datasets.synthetic import shapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SIZES = {"train": 12, "val": 6}

torch.set_num_threads(2)


def config_path(*parts):
    return os.path.join(REPO, "configs", *parts)


def read_metrics(metrics_json):
    with open(metrics_json) as f:
        return [json.loads(line) for line in f if line.strip()]


def logged_at(metrics_json, iteration):
    """Every scalar a metrics.json holds for ``iteration``. detectron2's JSONWriter writes a scalar
    under the iteration that last logged it, so a scalar the final step did not log (for example
    semi/bg_weight_mean when it sampled no background) follows that step's line in a line of its own."""
    logged = {}
    for record in read_metrics(metrics_json):
        if record["iteration"] == iteration:
            logged.update(record)
    return logged


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """Registers ``tiny_shapes_{train,val}``: a few images of the embedded generator."""
    root = str(tmp_path_factory.mktemp("tiny_shapes"))
    jsons = shapes.generate(root, sizes=TINY_SIZES, workers=1)
    for split, json_file in jsons.items():
        name = f"tiny_shapes_{split}"
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, json_file, os.path.join(root, split))
            MetadataCatalog.get(name).set(thing_classes=list(shapes.CLASSES))
    return root


def tiny_training_opts(output_dir, max_iter=3):
    """Overrides that make the Shapes config train for a few steps on the tiny dataset."""
    return [
        "DATASETS.TRAIN", "('tiny_shapes_train',)",
        "DATASETS.TEST", "('tiny_shapes_val',)",
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.STEPS", "()",
        "SOLVER.CHECKPOINT_PERIOD", "1000",
        "DATALOADER.NUM_WORKERS", "0",
        "MODEL.DEVICE", "cpu",
        "OUTPUT_DIR", str(output_dir),
    ]


@pytest.fixture(scope="session")
def tiny_semi(tiny_shapes):
    """Registers a 25 % labeled split of the tiny training set; returns (labeled, unlabeled)."""
    from softteacher.datasets import register_semi_coco

    json_file = os.path.join(tiny_shapes, "annotations", "instances_train.json")
    names = ("tiny_shapes_train.1@25", "tiny_shapes_train.1@25-unlabeled")
    if names[0] not in DatasetCatalog.list():
        register_semi_coco("tiny_shapes_train", json_file, os.path.join(tiny_shapes, "train"), 25, 1)
    return names


def semi_cfg(labeled, unlabeled, **overrides):
    """The Shapes config reading a labeled + unlabeled pair, with a few images per step."""
    from softteacher import load_config

    cfg = load_config(config_path("Shapes", "Base-Shapes-R18-FPN.yaml"))
    cfg.DATASETS.TRAIN_LABELED = (labeled,)
    cfg.DATASETS.TRAIN_UNLABELED = (unlabeled,)
    cfg.SOLVER.IMS_PER_BATCH_LABELED = 1
    cfg.SOLVER.IMS_PER_BATCH_UNLABELED = 4
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SEED = 5
    cfg.MODEL.DEVICE = "cpu"
    for key, value in overrides.items():
        node = cfg
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    return cfg


def soft_teacher_cfg(labeled, unlabeled, output_dir, max_iter=2, **overrides):
    """The embedded Soft Teacher config on tiny data, a few small steps, on the CPU."""
    from softteacher import load_config

    cfg = load_config(config_path("Shapes", "soft_teacher_R18_FPN_10pct.yaml"))
    cfg.merge_from_list([
        "DATASETS.TRAIN_LABELED", f"('{labeled}',)",
        "DATASETS.TRAIN_UNLABELED", f"('{unlabeled}',)",
        "DATASETS.TEST", "('tiny_shapes_val',)",
        "SOLVER.IMS_PER_BATCH_LABELED", "1",
        "SOLVER.IMS_PER_BATCH_UNLABELED", "2",
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.STEPS", "()",
        "SOLVER.CHECKPOINT_PERIOD", "1000",
        "SEMI.BURN_IN_ITERS", "0",
        "DATALOADER.NUM_WORKERS", "0",
        "MODEL.DEVICE", "cpu",
        "SEED", "3",
        "OUTPUT_DIR", str(output_dir),
    ])
    for key, value in overrides.items():
        cfg.merge_from_list([key, value])
    return cfg


# a random teacher scores about 1 / (classes + 1): with these thresholds all of its detections
# are pseudo-boxes in every branch
EVERY_DETECTION_IS_A_PSEUDO_BOX = {
    "SEMI.PSEUDO_SCORE_THRESH": "0.0",
    "SEMI.RPN_PSEUDO_THRESH": "0.0",
    "SEMI.CLS_PSEUDO_THRESH": "0.0",
    "SEMI.REG_UNCERTAINTY_THRESH": "1e9",
}


def make_loss_non_finite(trainer, name, iteration):
    """Make the loss term ``name`` of ``trainer``'s student NaN at ``iteration``."""
    forward = trainer.model.forward

    def forward_with_nan(*args, **kwargs):
        losses = forward(*args, **kwargs)
        if trainer.iter == iteration:
            losses[name] = losses[name] * float("nan")
        return losses

    trainer.model.forward = forward_with_nan


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
    from softteacher import load_config

    cfg = load_config(config_path("Custom", "soft_teacher_shapes_as_files.yaml"))
    cfg.merge_from_list(opts)
    return cfg
