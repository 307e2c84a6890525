"""train_net.py end to end on the tiny dataset: train, then --eval-only reproduces the evaluation."""

import json
import math
import os

import pytest
from detectron2.engine import default_argument_parser

from softteacher.engine import launch

from conftest import config_path, read_metrics, tiny_training_opts

CONFIG = config_path("Shapes", "supervised_R18_FPN_10pct.yaml")


def run(argv):
    return launch.main(default_argument_parser().parse_args(argv))


def last_logged(metrics_json, key):
    return [row[key] for row in read_metrics(metrics_json) if key in row][-1]


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
    import torch
    from detectron2.modeling import build_model

    from softteacher import load_config

    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    run(["--config-file", CONFIG, *tiny_training_opts(train_dir, max_iter=3)])
    torch.manual_seed(7)  # weights of an untrained model (--eval-only refuses to run without any)
    fresh = tmp_path / "fresh.pth"
    torch.save({"model": build_model(load_config(CONFIG, ["MODEL.DEVICE", "cpu"])).state_dict()}, fresh)
    run(["--config-file", CONFIG, "--eval-only", *tiny_training_opts(eval_dir), "MODEL.WEIGHTS", str(fresh)])
    assert predictions(eval_dir, "tiny_shapes_val") != predictions(train_dir, "tiny_shapes_val")


SEMI_CONFIG = config_path("Shapes", "soft_teacher_R18_FPN_10pct.yaml")


def semi_opts(output_dir, labeled, unlabeled, max_iter):
    return tiny_training_opts(output_dir, max_iter) + [
        "DATASETS.TRAIN_LABELED", f"('{labeled}',)",
        "DATASETS.TRAIN_UNLABELED", f"('{unlabeled}',)",
        "SOLVER.IMS_PER_BATCH_LABELED", "1",
        "SOLVER.IMS_PER_BATCH_UNLABELED", "2",
        "SEMI.BURN_IN_ITERS", "0",
        "SEMI.EMA_MOMENTUM", "0.5",  # so that teacher and student differ after 3 steps
    ]


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_eval_only_reproduces_the_logged_ap_of_the_teacher_or_the_student(tiny_semi, tmp_path, which, capsys):
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    run(["--config-file", SEMI_CONFIG, *semi_opts(train_dir, *tiny_semi, max_iter=3)])
    logged = last_logged(os.path.join(train_dir, "metrics.json"), f"{which}/bbox/AP")
    if not math.isnan(logged):  # the run's closing summary gives the same AP
        assert f"  {which} AP {logged:.1f}  (AP50" in capsys.readouterr().out
    # the last iteration always draws the pseudo-labels and the curves
    assert os.path.getsize(os.path.join(train_dir, "pseudo_labels", "iter_0000002.png")) > 0
    assert os.path.getsize(os.path.join(train_dir, "training_curves.png")) > 0
    order = "('teacher', 'student')" if which == "teacher" else "('student', 'teacher')"
    results = run(["--config-file", SEMI_CONFIG, "--eval-only", *semi_opts(eval_dir, *tiny_semi, max_iter=3),
                   "MODEL.WEIGHTS", os.path.join(train_dir, "model_final.pth"), "SEMI.EVAL_MODELS", order])
    ap = results["bbox"]["AP"]
    assert ap == pytest.approx(logged, abs=1e-6) or (math.isnan(ap) and math.isnan(logged))
    expected = predictions(os.path.join(train_dir, which), "tiny_shapes_val")
    assert expected
    assert predictions(eval_dir, "tiny_shapes_val") == expected
    other = predictions(os.path.join(train_dir, "student" if which == "teacher" else "teacher"), "tiny_shapes_val")
    assert other != expected  # the two models really differ, so the check above can fail


def test_exported_teacher_gives_vanilla_detectron2_the_logged_ap(tiny_semi, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.data import build_detection_test_loader
    from detectron2.evaluation import COCOEvaluator, inference_on_dataset
    from detectron2.modeling import GeneralizedRCNN, build_model

    from softteacher.tools import export_model

    train_dir = tmp_path / "train"
    run(["--config-file", SEMI_CONFIG, *semi_opts(train_dir, *tiny_semi, max_iter=3)])
    export_model.main(["--config-file", SEMI_CONFIG, "--checkpoint", str(train_dir / "model_final.pth"),
                       "--output", str(tmp_path / "exported"), "DATASETS.TEST", "('tiny_shapes_val',)"])
    cfg = get_cfg()  # detectron2's own keys only: the exported config must not need ours
    cfg.merge_from_file(str(tmp_path / "exported" / "config.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert type(model) is GeneralizedRCNN
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    vanilla_dir = tmp_path / "vanilla"
    evaluator = COCOEvaluator("tiny_shapes_val", output_dir=str(vanilla_dir / "inference" / "tiny_shapes_val"))
    ap = inference_on_dataset(model, build_detection_test_loader(cfg, "tiny_shapes_val"), evaluator)["bbox"]["AP"]
    logged = last_logged(os.path.join(train_dir, "metrics.json"), "teacher/bbox/AP")
    assert ap == pytest.approx(logged, abs=1e-6) or (math.isnan(ap) and math.isnan(logged))
    teacher_predictions = predictions(os.path.join(train_dir, "teacher"), "tiny_shapes_val")
    assert predictions(str(vanilla_dir), "tiny_shapes_val") == teacher_predictions


def test_num_gpus_without_cuda_warns_that_it_runs_cpu_processes(capsys, monkeypatch):
    monkeypatch.setattr(launch.torch.cuda, "is_available", lambda: False)
    launch.warn_without_cuda(default_argument_parser().parse_args(["--num-gpus", "8"]))
    assert "--num-gpus 8 runs 8 CPU processes" in capsys.readouterr().err
    launch.warn_without_cuda(default_argument_parser().parse_args(["--num-gpus", "1"]))
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("config,amp_after", [
    (("COCO-Supervised", "supervised_R_50_FPN_10pct_180k.yaml"), False),  # AMPTrainer needs CUDA
    (("COCO-SemiSupervised", "soft_teacher_R_50_FPN_10pct_180k.yaml"), True),  # bfloat16 on the CPU
])
def test_amp_configs_set_up_on_a_machine_without_cuda(config, amp_after, tmp_path, monkeypatch):
    monkeypatch.setattr(launch.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(launch, "validate_softteacher_config", lambda cfg: None)  # no COCO here
    args = default_argument_parser().parse_args(
        ["--config-file", config_path(*config), "MODEL.WEIGHTS", "", "OUTPUT_DIR", str(tmp_path)])
    cfg = launch.setup(args)
    assert cfg.MODEL.DEVICE == "cpu" and cfg.SOLVER.AMP.ENABLED is amp_after


@pytest.mark.parametrize("colour", [True, False])
def test_supervised_training_augments_labeled_images_as_soft_teachers_labeled_stream(monkeypatch, colour):
    from softteacher import load_config
    from softteacher.data import LabeledDatasetMapper
    from softteacher.data.augmentations import RandomColorOp
    from softteacher.engine import trainer as trainer_module

    captured = {}
    monkeypatch.setattr(trainer_module, "build_detection_train_loader",
                        lambda cfg, mapper: captured.update(mapper=mapper))
    cfg = load_config(CONFIG, ["INPUT.LABELED_COLOR_AUG", str(colour), "MODEL.DEVICE", "cpu"])
    launch.SupervisedTrainer.build_train_loader(cfg)
    supervised = captured["mapper"].augmentations.augs
    semi = load_config(config_path("Shapes", "soft_teacher_R18_FPN_10pct.yaml"),
                       ["INPUT.LABELED_COLOR_AUG", str(colour), "MODEL.DEVICE", "cpu"])
    soft_teacher = LabeledDatasetMapper(semi, is_train=True).augmentations.augs
    assert [repr(a) for a in supervised] == [repr(a) for a in soft_teacher]
    assert sum(isinstance(a, RandomColorOp) for a in supervised) == int(colour)


def test_a_finished_run_ends_with_a_summary_of_its_ap_its_files_and_the_next_command(tmp_path):
    from softteacher import load_config

    cfg = load_config(config_path("Shapes", "soft_teacher_R18_FPN_10pct_demo.yaml"),
                      ["OUTPUT_DIR", str(tmp_path), "MODEL.DEVICE", "cpu"])
    (tmp_path / "pseudo_labels").mkdir()
    for name in ("iter_0000599.png", "iter_0001199.png"):
        (tmp_path / "pseudo_labels" / name).write_bytes(b"")
    metrics = {"AP": 41.234, "AP50": 70.0, "AP75": 44.5}
    text = launch.training_summary(cfg, "configs/x.yaml", {"teacher": {"bbox": metrics},
                                                            "student": {"bbox": {**metrics, "AP": 40.06}}})
    assert "teacher AP 41.2  (AP50 70.0, AP75 44.5) on shapes_val" in text
    assert "student AP 40.1" in text
    assert f"{tmp_path}/pseudo_labels/iter_0001199.png (and 1 earlier)" in text
    assert f"{tmp_path}/training_curves.png" in text and f"{tmp_path}/model_final.pth" in text
    assert (f"python tools/predict.py --config-file configs/x.yaml --weights {tmp_path}/model_final.pth "
            f"--input <your images> --output {tmp_path}/predictions") in text
    supervised = launch.training_summary(cfg, "c.yaml", {"bbox": metrics})
    assert "model AP 41.2" in supervised
