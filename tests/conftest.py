"""Shared fixtures: a tiny generated copy of the embedded dataset, registered under test names."""

import os

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from softteacher.data import shapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_SIZES = {"train": 12, "val": 6}

torch.set_num_threads(2)


def config_path(*parts):
    return os.path.join(REPO, "configs", *parts)


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
