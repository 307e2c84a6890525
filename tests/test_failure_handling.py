"""Surviving kills, bad data and non-finite losses without losing work."""

import io
import json
import logging
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, get_detection_dataset_dicts
from detectron2.data.detection_utils import read_image
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage
from PIL import Image

from softteacher import SoftTeacherTrainer
from softteacher.data import LabeledDatasetMapper, SkippedImages, WeakStrongDatasetMapper
from softteacher.data.image_reading import SKIPPED_KEY, read_image_any_depth
from softteacher.datasets.coco_files import register_checked_coco
from softteacher.engine import EMATeacherHook, SafeCheckpointer

from conftest import logged_at, make_loss_non_finite, semi_cfg, soft_teacher_cfg

TESTS = os.path.dirname(os.path.abspath(__file__))
KILL_WORKER = os.path.join(TESTS, "kill_worker.py")


# ---------------------------------------------------------------- checkpoints

DIE_IN_SECOND_SAVE = """
import io, os, signal, sys, torch
from detectron2.checkpoint import DetectionCheckpointer
from softteacher.engine import SafeCheckpointer
cls = {"SafeCheckpointer": SafeCheckpointer, "DetectionCheckpointer": DetectionCheckpointer}[sys.argv[2]]
checkpointer = cls(torch.nn.Linear(300, 300), save_dir=sys.argv[1])
checkpointer.save("model_0000001", iteration=1)
real_save = torch.save
def save(obj, f, *args, **kwargs):
    buffer = io.BytesIO()
    real_save(obj, buffer)
    f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = save
checkpointer.save("model_0000002", iteration=2)
"""


def loads(path):
    try:
        torch.load(path, weights_only=True)
        return True
    except Exception:
        return False


@pytest.mark.parametrize("checkpointer,complete", [("SafeCheckpointer", True), ("DetectionCheckpointer", False)])
def test_a_kill_halfway_through_a_save_leaves_every_checkpoint_name_complete(tmp_path, checkpointer, complete):
    """detectron2's own checkpointer leaves a truncated model_0000002.pth: the check can fail."""
    proc = subprocess.run([sys.executable, "-c", DIE_IN_SECOND_SAVE, str(tmp_path), checkpointer])
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    named = sorted(p for p in tmp_path.glob("model_*.pth"))
    assert all(loads(p) for p in named) == complete
    assert torch.load(tmp_path / "model_0000001.pth", weights_only=True)["iteration"] == 1


def same(a, b, where="checkpoint"):
    """Assert two nested states (dicts, lists, tensors, numbers) are identical."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def resumed_state_matches_the_checkpoint(out_dir, max_iter, period):
    """Resume in this process; check every restored part against the file last_checkpoint names.
    Returns (checkpoint file, its iteration, the first iteration the resumed run trains)."""
    from kill_worker import kill_cfg

    name = (out_dir / "last_checkpoint").read_text()
    saved = torch.load(out_dir / name, weights_only=True)
    trainer = SoftTeacherTrainer(kill_cfg(str(out_dir), max_iter, period))
    trainer.resume_or_load(resume=True)
    same(saved["model"], trainer.student.state_dict(), "student")
    same(saved["teacher"], trainer.teacher.state_dict(), "teacher")
    # the optimizer (and an AMP scaler) are saved by the step, the LR schedule and EMA by hooks
    same(saved["trainer"]["_trainer"]["optimizer"], trainer.optimizer.state_dict(), "optimizer")
    same(saved["trainer"]["_trainer"], trainer._trainer.state_dict(), "step")
    same(saved["trainer"]["hooks"]["LRScheduler"], trainer.scheduler.state_dict(), "scheduler")
    ema = next(h for h in trainer._hooks if isinstance(h, EMATeacherHook))
    assert ema.step == saved["trainer"]["hooks"]["EMATeacherHook"]["step"]
    return name, saved["iteration"], trainer.start_iter


def read_progress(out_dir):
    """The last finished iteration the worker wrote, or -1 before its first (or mid-write)."""
    path = out_dir / "progress"
    text = path.read_text() if path.exists() else ""
    return int(text) if text else -1


def kill_trial(root, out_dir, max_iter, period, kill_after=None, die_in_save=0):
    """Train in a subprocess and SIGKILL it (after iteration ``kill_after`` plus a random part of
    a step, or halfway through its ``die_in_save``-th checkpoint); check the resumed state; then
    resume to the end. Returns the trial's record."""
    cmd = [sys.executable, KILL_WORKER, str(root), str(out_dir), str(max_iter), str(period)]
    if die_in_save:
        proc = subprocess.run(cmd + ["--die-in-save", str(die_in_save)], capture_output=True)
    else:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while read_progress(out_dir) < kill_after and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(random.uniform(0.0, 0.3))
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
    killed_after = read_progress(out_dir)
    name, saved_iter, start_iter = resumed_state_matches_the_checkpoint(out_dir, max_iter, period)
    assert all(loads(p) for p in out_dir.glob("model_*.pth"))
    lost_steps = killed_after + 1 - start_iter
    assert start_iter == saved_iter + 1
    assert 0 <= lost_steps <= period
    subprocess.run(cmd + ["--resume"], check=True, capture_output=True)
    assert read_progress(out_dir) == max_iter - 1
    assert (out_dir / "last_checkpoint").read_text() == "model_final.pth"
    return dict(kill="during save %d" % die_in_save if die_in_save else "random",
                last_finished_iteration=killed_after, checkpoint=name, resumed_at=start_iter,
                lost_steps=lost_steps, state_identical=True)


def run_kill_trials(root, tmp_path, trials, max_iter=10, period=2, seed=0):
    rng = random.Random(seed)
    records = []
    for index, die_in_save in enumerate(trials):
        kill_after = rng.randint(period, max_iter - 4)
        out_dir = tmp_path / f"trial{index}"
        out_dir.mkdir()
        records.append(kill_trial(root, out_dir, max_iter, period, kill_after, die_in_save))
    print("\nkill trials:\n" + "\n".join(json.dumps(r) for r in records))
    return records


def test_a_killed_run_resumes_from_its_last_complete_checkpoint(tiny_semi, tiny_shapes, tmp_path):
    """Fast variant: one kill at a random moment, one halfway through the second save."""
    records = run_kill_trials(tiny_shapes, tmp_path, trials=[0, 2])
    assert records[1]["checkpoint"] == "model_0000001.pth"  # the first save (iteration 1) stands


@pytest.mark.slow
def test_killed_runs_resume_from_their_last_complete_checkpoint_many_trials(tiny_semi, tiny_shapes, tmp_path):
    records = run_kill_trials(tiny_shapes, tmp_path, trials=[0, 0, 0, 0, 0, 3], max_iter=14, seed=1)
    assert len(records) == 6


def test_the_amp_scaler_state_is_saved_and_restored(tiny_semi, tmp_path):
    overrides = {"TEST.EVAL_PERIOD": "0", "SEMI.EVAL_MODELS": "()"}
    first = SoftTeacherTrainer(soft_teacher_cfg(*tiny_semi, tmp_path, **overrides))
    first._trainer.grad_scaler = torch.amp.GradScaler("cpu", init_scale=512.0, growth_interval=7)
    first._trainer.grad_scaler.load_state_dict(
        {"scale": 128.0, "growth_factor": 3.0, "backoff_factor": 0.25, "growth_interval": 7, "_growth_tracker": 5}
    )
    first.iter = 0
    first.checkpointer.save("model_0000000", iteration=0)
    second = SoftTeacherTrainer(soft_teacher_cfg(*tiny_semi, tmp_path, **overrides))
    second._trainer.grad_scaler = torch.amp.GradScaler("cpu")
    second.resume_or_load(resume=True)
    assert second._trainer.grad_scaler.state_dict() == {
        "scale": 128.0, "growth_factor": 3.0, "backoff_factor": 0.25, "growth_interval": 7, "_growth_tracker": 5
    }


class RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoints_are_read_without_running_pickled_code(tmp_path):
    marker = str(tmp_path / "code_ran")
    path = str(tmp_path / "model_0000001.pth")
    torch.save({"model": {}, "payload": RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):
        SafeCheckpointer(torch.nn.Linear(2, 2)).load(path)
    assert not os.path.exists(marker)
    torch.load(path, weights_only=False)  # what an unguarded load does
    assert os.path.exists(marker)


def test_resume_follows_last_checkpoint_only_to_a_pth_file(tmp_path):
    with open(tmp_path / "model_zoo.pkl", "wb") as f:
        pickle.dump({"model": {}, "__author__": "someone"}, f)
    (tmp_path / "last_checkpoint").write_text("model_zoo.pkl")
    checkpointer = SafeCheckpointer(torch.nn.Linear(2, 2), save_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"last_checkpoint names .*model_zoo.pkl.*only reads \.pth"):
        checkpointer.resume_or_load("", resume=True)


# ---------------------------------------------------------------- training health

def test_a_non_finite_loss_stops_naming_term_and_iteration_and_keeps_the_last_checkpoint(tiny_semi, tmp_path):
    cfg = soft_teacher_cfg(*tiny_semi, tmp_path, max_iter=6, **{
        "SOLVER.CHECKPOINT_PERIOD": "2", "TEST.EVAL_PERIOD": "0", "SEMI.EVAL_MODELS": "()"})
    trainer = SoftTeacherTrainer(cfg)
    make_loss_non_finite(trainer, "unsup_loss_cls", iteration=3)
    trainer.resume_or_load(resume=False)
    with pytest.raises(FloatingPointError, match=r"iteration 3: unsup_loss_cls = nan\. Stopped before"):
        trainer.train()
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (tmp_path / "model_0000003.pth").exists()
    saved = torch.load(tmp_path / "model_0000001.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    assert all(torch.isfinite(p).all() for p in trainer.student.parameters())
    assert all(torch.isfinite(p).all() for p in trainer.teacher.parameters())


# ---------------------------------------------------------------- bad unlabeled images

def write_image(path, array, mode=None, **save_args):
    Image.fromarray(array, mode).save(path, **save_args)
    return str(path)


@pytest.fixture
def odd_images(tmp_path):
    """file name -> (path, expected BGR colour of every pixel of the view, or None)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    return {
        "grayscale": (write_image(tmp_path / "gray.png", np.full((20, 30), 77, np.uint8)), (77, 77, 77)),
        "rgba": (write_image(tmp_path / "rgba.png", np.tile(np.array([10, 20, 30, 0], np.uint8), (20, 30, 1))),
                 (30, 20, 10)),
        "16-bit": (write_image(tmp_path / "deep.png", np.full((20, 30), 0x8080, np.uint16)), (128, 128, 128)),
        "exif-rotated": (write_image(tmp_path / "exif.jpg", np.full((20, 40, 3), 200, np.uint8), exif=exif), None),
        "1x1": (write_image(tmp_path / "dot.png", np.array([[[1, 2, 3]]], np.uint8)), (3, 2, 1)),
    }


@pytest.fixture
def unreadable_images(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG")
    paths = {
        "corrupt": tmp_path / "corrupt.jpg",
        "truncated": tmp_path / "truncated.jpg",
        "empty": tmp_path / "empty.png",
        "missing": tmp_path / "missing.jpg",
    }
    paths["corrupt"].write_bytes(b"this is not an image" * 20)
    paths["truncated"].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    paths["empty"].write_bytes(b"")
    return {kind: str(path) for kind, path in paths.items()}


def test_16_bit_images_are_scaled_to_8_bits_not_clipped(odd_images):
    path = odd_images["16-bit"][0]
    assert read_image_any_depth(path, "BGR").max() == 128
    assert read_image(path, format="BGR").max() == 255  # detectron2's reader clips to white


def test_odd_unlabeled_images_are_converted_into_three_channel_views(tiny_semi, odd_images):
    mapper = WeakStrongDatasetMapper(semi_cfg(*tiny_semi), is_train=True)
    for kind, (path, colour) in odd_images.items():
        out = mapper({"file_name": path, "image_id": kind})
        assert out is not None and SKIPPED_KEY not in out, kind
        for view in ("weak", "strong"):
            assert out[view]["image"].shape[0] == 3, kind
        weak = out["weak"]["image"]
        if colour is not None:
            assert weak.flatten(1).unique(dim=1).T.tolist() == [list(colour)], kind
    exif = mapper({"file_name": odd_images["exif-rotated"][0], "image_id": "exif"})
    assert (exif["height"], exif["width"]) == (40, 20)  # displayed upright: taller than wide
    assert exif["weak"]["image"].shape[1:] == (256, 128)  # short side 128, the long one doubled


def test_unreadable_unlabeled_images_are_skipped_and_reported_with_the_next_image(
    tiny_semi, odd_images, unreadable_images
):
    mapper = WeakStrongDatasetMapper(semi_cfg(*tiny_semi), is_train=True)
    for kind, path in unreadable_images.items():
        assert mapper({"file_name": path, "image_id": kind}) is None, kind
    out = mapper({"file_name": odd_images["grayscale"][0], "image_id": "good"})
    reported = out[SKIPPED_KEY]
    assert [name for name, _ in reported] == list(unreadable_images.values())
    assert "FileNotFoundError" in reported[3][1] and "truncated" in reported[1][1]
    assert SKIPPED_KEY not in mapper({"file_name": odd_images["grayscale"][0], "image_id": "next"})


def test_skipped_images_are_counted_every_time_and_named_once(caplog):
    skipped = SkippedImages()
    with caplog.at_level(logging.WARNING, logger="softteacher.data.image_reading"):
        assert skipped.update([{SKIPPED_KEY: [("a.jpg", "OSError: x")]}, {}]) == 1
        assert skipped.update([{SKIPPED_KEY: [("a.jpg", "OSError: x"), ("b.jpg", "OSError: y")]}]) == 3
    assert [r.getMessage() for r in caplog.records] == [
        "Skipped unlabeled image a.jpg: OSError: x", "Skipped unlabeled image b.jpg: OSError: y"
    ]


def test_training_skips_and_counts_unreadable_unlabeled_images(tiny_semi, tiny_shapes, unreadable_images, tmp_path):
    good = sorted(os.path.join(tiny_shapes, "val", f) for f in os.listdir(os.path.join(tiny_shapes, "val")))[:2]
    dicts = [{"file_name": f, "image_id": i} for i, f in enumerate(good + list(unreadable_images.values()))]
    DatasetCatalog.register("bad_unlabeled", lambda: dicts)
    cfg = soft_teacher_cfg(tiny_semi[0], "bad_unlabeled", tmp_path, max_iter=3,
                           **{"TEST.EVAL_PERIOD": "0", "SEMI.EVAL_MODELS": "()"})
    trainer = SoftTeacherTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 3
    # three steps of two images draw the whole shuffled epoch of six: every bad file at least once
    skipped = trainer._trainer.skipped_images
    assert skipped.named == set(unreadable_images.values())
    assert skipped.count >= 4
    assert logged_at(tmp_path / "metrics.json", 2)["data/skipped_unlabeled_images"] == skipped.count


# ---------------------------------------------------------------- labeled data and jsons

def coco_json(path, images, annotations, categories=({"id": 7, "name": "thing"},)):
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": list(categories)}))
    return str(path)


def image_entry(i, width=64, height=48):
    return {"id": i, "file_name": f"{i}.png", "width": width, "height": height}


def box(i, image_id, bbox, category_id=7):
    return {"id": i, "image_id": image_id, "bbox": bbox, "category_id": category_id, "area": 1, "iscrowd": 0}


def test_labeled_boxes_are_clipped_to_the_image_and_empty_ones_dropped(tiny_semi, tmp_path):
    write_image(tmp_path / "1.png", np.zeros((48, 64, 3), np.uint8))
    json_file = coco_json(tmp_path / "labeled.json", [image_entry(1), image_entry(2)], [
        box(1, 1, [-10, -5, 30, 20]),   # sticks out top-left
        box(2, 1, [40, 30, 50, 50]),    # sticks out bottom-right
        box(3, 1, [10, 10, 0, 8]),      # zero width
        box(4, 1, [30, 10, -10, 5]),    # negative width
        box(5, 1, [70, 10, 10, 10]),    # wholly outside
    ])
    register_checked_coco("boxes_test", json_file, str(tmp_path))
    dicts = get_detection_dataset_dicts(["boxes_test"], filter_empty=True)
    assert [d["image_id"] for d in dicts] == [1]  # the image without annotations is left out
    assert [a["bbox"] for a in dicts[0]["annotations"]] == [[-10, -5, 30, 20], [40, 30, 50, 50], [70, 10, 10, 10]]
    cfg = semi_cfg(*tiny_semi)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.RANDOM_FLIP, cfg.INPUT.LABELED_COLOR_AUG = (48,), "none", False
    with EventStorage(0):
        instances = LabeledDatasetMapper(cfg, is_train=True)(dicts[0])["instances"]
    assert instances.gt_boxes.tensor.tolist() == [[0, 0, 20, 15], [40, 30, 64, 48]]
    assert dicts[0]["annotations"][0]["bbox_mode"] == BoxMode.XYWH_ABS


@pytest.mark.parametrize("content,message", [
    ("{not json", r"bad\.json: not valid json"),
    (json.dumps({"annotations": [], "categories": []}), r"bad\.json: missing top-level key 'images'"),
    (json.dumps({"images": [{"id": 1, "file_name": "1.png", "width": 4}], "categories": []}),
     r"bad\.json: images\[0\] has no key 'height'"),
    (json.dumps({"images": [image_entry(1)], "annotations": [box(1, 1, [0, 0, 2, 2], category_id=3)],
                 "categories": [{"id": 7, "name": "thing"}]}),
     r"bad\.json: annotations\[0\]\['category_id'\] = 3 is not in 'categories'"),
])
def test_a_bad_json_stops_at_registration_naming_file_and_key(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        register_checked_coco("bad_json_test", str(tmp_path / "bad.json"), str(tmp_path))
