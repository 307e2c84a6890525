"""Smoke test (slow): every shipped COCO and VOC config builds and trains 2 steps at its own image
sizes, on the embedded pictures enlarged to COCO scale in COCO's and VOC's file layouts.

Each config runs with the smallest batch that runs every branch (supervised: 1 image a step;
Soft Teacher: 1 labeled + 1 unlabeled; bench/coco_scale.py measures one GPU's full share of 1 + 4),
random weights in place of the ImageNet file at the warm-up's first learning rate (a 2-step
schedule would otherwise reach half the full rate at step 2, where random weights diverge and the
teacher, their copy, finds nothing), and, for Soft Teacher, thresholds that let a random
teacher's detections through so that every unsupervised branch runs, from 100 teacher proposals
(a random teacher's scores all sit near 1 / 81, so each proposal sends every class to NMS), in
float32: the configs' AMP is bfloat16 on a CPU, which CPUs without bfloat16 instructions emulate
many times slower (the bfloat16 step is tested on the small model, test_trainer.py). It checks
that training reaches its last step with finite losses; it measures nothing.
"""

import glob
import os
import subprocess
import sys

import pytest

from softteacher import load_config
from softteacher.datasets.splits import write_split
from softteacher.datasets.synthetic.large_scale import write_coco_like, write_voc_like

from conftest import REPO, logged_at

CONFIGS = sorted(
    os.path.relpath(p, REPO)
    for folder in ("COCO-SemiSupervised", "COCO-Supervised", "VOC-SemiSupervised", "VOC-Supervised")
    for p in glob.glob(os.path.join(REPO, "configs", folder, "*.yaml"))
)
LET_BOXES_THROUGH = [
    "SEMI.PSEUDO_SCORE_THRESH", "0.0", "SEMI.RPN_PSEUDO_THRESH", "0.0", "SEMI.CLS_PSEUDO_THRESH", "0.0",
    "SEMI.REG_UNCERTAINTY_THRESH", "1e9", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "8",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
]


@pytest.fixture(scope="module")
def large_datasets(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("datasets"))
    coco = write_coco_like(root, num_train=100, num_val=2, num_unlabeled=6)  # 1 % is one image
    train_json = os.path.join(coco, "annotations", "instances_train2017.json")
    for percent in (1, 5, 10):
        write_split(train_json, percent, 1, out_dir=os.path.join(coco, "annotations", "semi_supervised"))
    write_voc_like(root, num_2007_trainval=8, num_2007_test=2, num_2012_trainval=8)
    return root


def smallest_batch(cfg):
    if cfg.DATASETS.TRAIN_UNLABELED:
        return ["SOLVER.IMS_PER_BATCH_LABELED", "1", "SOLVER.IMS_PER_BATCH_UNLABELED", "1"]
    return ["SOLVER.IMS_PER_BATCH", "1"]


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS)
def test_shipped_config_trains_two_steps_at_its_own_size(config, large_datasets, tmp_path):
    cfg = load_config(os.path.join(REPO, config))
    opts = [*smallest_batch(cfg), "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False",
            "SOLVER.MAX_ITER", "2", "SOLVER.BASE_LR", str(cfg.SOLVER.BASE_LR * cfg.SOLVER.WARMUP_FACTOR),
            "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "1",
            "OUTPUT_DIR", str(tmp_path)]
    if cfg.DATASETS.TRAIN_UNLABELED:
        opts += [*LET_BOXES_THROUGH, "SEMI.VIS_PERIOD", "0", "SEMI.EVAL_MODELS", "()"]
    run = subprocess.run(
        [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", os.path.join(REPO, config), *opts],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
        env={**os.environ, "DETECTRON2_DATASETS": large_datasets},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    last = logged_at(tmp_path / "metrics.json", 1)
    assert last and last["total_loss"] == last["total_loss"]  # reached step 2, not NaN
    if cfg.DATASETS.TRAIN_UNLABELED:
        assert last["semi/pseudo_boxes_cls"] > 0 and "unsup_loss_box_reg" in last
    assert os.path.exists(tmp_path / "model_final.pth")
