"""Smoke tests: the installed detectron2 trains a Faster R-CNN step and runs a COCO evaluation.

They only prove that the stack runs end to end; the numbers are checked elsewhere.
"""

import math

import pytest
import torch
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from softteacher import load_config
from softteacher.env import collect_env

from conftest import config_path, tiny_training_opts

pytestmark = pytest.mark.smoke


def test_one_training_step_and_a_coco_evaluation(tiny_shapes, tmp_path):
    cfg = load_config(config_path("Shapes", "Base-Shapes-R18-FPN.yaml"))
    cfg.merge_from_list(tiny_training_opts(tmp_path))
    model = build_model(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    batch = next(iter(build_detection_train_loader(cfg)))
    with EventStorage(0):
        losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
    total = sum(losses.values())
    assert math.isfinite(total.item())
    total.backward()
    optimizer.step()

    model.eval()
    loader = build_detection_test_loader(cfg, "tiny_shapes_val")
    results = inference_on_dataset(model, loader, COCOEvaluator("tiny_shapes_val"))
    assert set(results["bbox"]) >= {"AP", "AP50", "AP75"}


def test_environment_report_names_the_stack():
    env = collect_env()
    assert env["detectron2 origin"]
    assert isinstance(env["detectron2 native ops (_C)"], bool)
