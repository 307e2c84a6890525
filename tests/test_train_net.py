"""train_net.py end to end on the tiny dataset: train, then --eval-only reproduces the evaluation."""

import json
import math
import os
import sys

import pytest
from conftest import REPO, config_path, tiny_training_opts
from detectron2.engine import default_argument_parser

sys.path.insert(0, REPO)
import train_net  # noqa: E402

CONFIG = config_path("Shapes", "supervised_R18_FPN_10pct.yaml")


def run(argv):
    return train_net.main(default_argument_parser().parse_args(argv))


def last_logged(metrics_json, key):
    with open(metrics_json) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [row[key] for row in rows if key in row][-1]


def predictions(output_dir, dataset):
    path = os.path.join(output_dir, "inference", dataset, "coco_instances_results.json")
    with open(path) as f:
        return sorted(
            (d["image_id"], d["category_id"], round(d["score"], 5), *[round(v, 2) for v in d["bbox"]])
            for d in json.load(f)
        )


def test_eval_only_on_the_final_checkpoint_reproduces_the_end_of_training_evaluation(
    tiny_shapes, tmp_path
):
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    run(["--config-file", CONFIG, *tiny_training_opts(train_dir, max_iter=3)])
    logged_ap = last_logged(os.path.join(train_dir, "metrics.json"), "bbox/AP")

    weights = os.path.join(train_dir, "model_final.pth")
    results = run(
        ["--config-file", CONFIG, "--eval-only", *tiny_training_opts(eval_dir),
         "MODEL.WEIGHTS", weights]
    )
    ap = results["bbox"]["AP"]
    assert ap == pytest.approx(logged_ap, abs=1e-6) or (math.isnan(ap) and math.isnan(logged_ap))
    train_predictions = predictions(train_dir, "tiny_shapes_val")
    assert train_predictions, "an evaluation with no detections would prove nothing"
    assert predictions(eval_dir, "tiny_shapes_val") == train_predictions


def test_eval_only_with_fresh_weights_gives_other_predictions(tiny_shapes, tmp_path):
    """The check above can fail: a model that did not load the checkpoint predicts otherwise."""
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    run(["--config-file", CONFIG, *tiny_training_opts(train_dir, max_iter=3)])
    run(["--config-file", CONFIG, "--eval-only", *tiny_training_opts(eval_dir), "SEED", "7"])
    assert predictions(eval_dir, "tiny_shapes_val") != predictions(train_dir, "tiny_shapes_val")
