#!/usr/bin/env python
"""What one Soft Teacher step costs, part by part, against the work no semi-supervised method avoids.

    python bench/cost.py [--weights output/shapes/soft_teacher_10pct_demo/model_final.pth] [--steps 20]
                         [--amp] [KEY VALUE ...]

On the same prefetched batches, in one run, alternating which goes first:

- the product's Soft Teacher step (``SoftTeacherStep.run_step`` and the EMA hook), split by
  wrapping what it calls into teacher pseudo-labelling (teacher forward on the weak views), box
  jitter, mapping (pseudo-boxes into the strong views, statistics), the teacher scoring the
  student's background samples, the optimizer step, the EMA update, and the rest (student
  forward + backward, loss weighting, the non-finite check, metrics);
- the unavoidable work: detectron2's own supervised step (``SimpleTrainer``, ``AMPTrainer`` on
  CUDA with AMP) on the same labeled and strong-view images, the pseudo-boxes as targets, and one
  teacher forward on the weak views.

Then it counts, per step, the operators dispatched and the host synchronisations of the Soft
Teacher step and of that supervised step (``softteacher.profiling``), on a step that is not a
logging step, under ``counts.<--counts-as>`` (other keys already in the file are kept);
``--count-only`` does only that.

And, on validation images, the exported plain detectron2 model against this project's model with
the same weights (inference, one image per call). The weights are a trained checkpoint (the demo's
by default): with random weights the teacher finds no pseudo-box and the step has nothing to do.
Writes ``bench/results/cost.json`` (``ratio_step_over_unavoidable``, ``jitter_share`` and every
timing).
"""

import argparse
import collections
import contextlib
import itertools
import os
import platform
import resource
import statistics
import sys
import time

import torch
from bench_common import counts_with, write_counts_only, write_result
from detectron2.data import build_detection_test_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from softteacher import SoftTeacherTrainer, load_config
from softteacher.data import build_labeled_unlabeled_loader
from softteacher.engine import EMATeacherHook, SoftTeacherStep
from softteacher.export import detectron2_only, load_checkpoint
from softteacher.modeling import PseudoLabeler
from softteacher.modeling import pseudo_labels as pseudo_labels_module
from softteacher.profiling import count_device_work

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "Shapes", "soft_teacher_R18_FPN_10pct.yaml")
DEFAULT_WEIGHTS = os.path.join(REPO, "output", "shapes", "soft_teacher_10pct_demo", "model_final.pth")
TARGETS = {"ratio_step_over_unavoidable": 1.2, "jitter_share": 0.10, "exported_inference_ratio": 1.05}


class Clock:
    """Accumulates wall time per section; synchronises CUDA so that GPU work is counted."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.times = {}

    def now(self):
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    @contextlib.contextmanager
    def section(self, name):
        start = self.now()
        yield
        self.times[name] = self.times.get(name, 0.0) + self.now() - start

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            with self.section(name):
                return fn(*args, **kwargs)

        return timed


def with_pseudo_boxes(labeler, batches):
    """Per batch, the labeled images and the strong views with their pseudo-boxes as ground truth
    (found untimed and uncounted): what a supervised step on the same images trains on."""
    data = []
    with torch.no_grad(), EventStorage(0):
        for labeled, unlabeled in batches:
            targets = labeler(unlabeled)[0]["cls_targets"]
            data.append(labeled + [{**u["strong"], "instances": t} for u, t in zip(unlabeled, targets)])
    return data


def supervised_step(student, optimizer, data, amp):
    """detectron2's own supervised step over ``data`` (AMPTrainer on CUDA with AMP, else
    SimpleTrainer, under bfloat16 autocast on the CPU with AMP), as a callable."""
    cuda = next(student.parameters()).device.type == "cuda"
    trainer = AMPTrainer(student, data, optimizer) if amp and cuda else SimpleTrainer(student, data, optimizer)

    def run():
        with autocast(student, amp and not cuda):
            trainer.run_step()

    return trainer, run


def autocast(model, enabled):
    device = next(model.parameters()).device.type
    return torch.autocast(device, dtype=torch.float16 if device == "cuda" else torch.bfloat16, enabled=enabled)


def inference_ratio(cfg, state, images, device):
    """Seconds per image of this project's model and of the exported plain detectron2 model."""
    ours = build_model(cfg)
    plain_cfg = detectron2_only(cfg)
    plain_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    plain_cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    plain = build_model(plain_cfg)
    for model in (ours, plain):
        model.load_state_dict(state)
        model.eval()
    clock = Clock(device)
    with torch.no_grad():
        for model in (ours, plain):  # warm-up
            model(images[0])
        for i, batch in enumerate(images):
            for name, model in (("ours", ours), ("plain", plain))[:: 1 if i % 2 else -1]:
                with clock.section(name):
                    model(batch)
    return {name: t / len(images) for name, t in clock.times.items()}


def timed_soft_teacher_step(cfg, student, labeler, optimizer, batches, clock, amp):
    """The product's ``SoftTeacherStep`` over ``batches``, its parts timed by wrapping what it calls
    (the pseudo-labeller, the teacher's detections, box jitter, the background scoring, the
    optimizer step) and its EMA hook called after each step, as the trainer's hook does."""
    step = SoftTeacherStep(student, batches, optimizer, labeler, cfg, amp=amp)
    step.iter = cfg.SEMI.BURN_IN_ITERS  # the unsupervised loss is on
    ema = EMATeacherHook(labeler.teacher, student, cfg.SEMI.EMA_MOMENTUM)
    ema.step = 10**6  # the steady momentum, past the warm-up
    step.register_hooks([ema])
    labeler.teacher_detections = clock.wrap("teacher_pseudo_labelling", labeler.teacher_detections)
    pseudo_labels_module.jitter_uncertainty = clock.wrap("box_jitter", pseudo_labels_module.jitter_uncertainty)
    optimizer.step = clock.wrap("optimizer_step", optimizer.step)
    real_call = type(labeler).__call__

    def labeled_and_scored(unlabeled, **kwargs):  # the background scoring the student calls back
        inputs, stats = real_call(labeler, unlabeled, **kwargs)
        inputs["background_probs"] = clock.wrap("teacher_background_scoring", inputs["background_probs"])
        return inputs, stats

    step.pseudo_labeler = clock.wrap("pseudo_labels_total", labeled_and_scored)

    def run():
        step.run_step()
        with clock.section("ema_update"):
            ema.after_step()

    return step, run


def time_steps(cfg, student, labeler, optimizer, batches, warmup, amp, device):
    """Train ``batches`` with the Soft Teacher step and with the unavoidable work (one teacher
    forward on the weak views and detectron2's supervised step on the labeled and strong-view
    images), alternating which goes first; the first ``warmup`` batches are not counted. Returns
    mean seconds per step (total and by section) of both, and the classification pseudo-boxes per
    unlabeled image."""
    supervised_data = with_pseudo_boxes(labeler, batches)
    step_clock, base_clock = Clock(device), Clock(device)
    clock_now = {"clock": step_clock}  # the optimizer step is timed on the clock of the run
    real_optimizer_step = optimizer.step

    def timed_optimizer_step(*args, **kwargs):
        with clock_now["clock"].section("optimizer_step"):
            return real_optimizer_step(*args, **kwargs)

    saved = labeler.teacher_detections, pseudo_labels_module.jitter_uncertainty
    per_step, per_base = [], []
    try:
        optimizer.step = timed_optimizer_step
        with EventStorage(0) as storage:  # the losses log to it, as in training
            step, run_step = timed_soft_teacher_step(cfg, student, labeler, optimizer, batches, step_clock, amp)
            base, run_base = supervised_step(student, optimizer, supervised_data, amp)
            step.storage = base.storage = storage
            for i, (_, unlabeled) in enumerate(batches):
                if i == warmup:  # warm-up done: count from here
                    for collected in (per_step, per_base, step_clock.times, base_clock.times):
                        collected.clear()
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                for run in ("step", "base") if i % 2 else ("base", "step"):
                    clock_now["clock"], times = (step_clock, per_step) if run == "step" else (base_clock, per_base)
                    start = clock_now["clock"].now()
                    if run == "step":
                        run_step()
                    else:
                        with base_clock.section("teacher_forward"), torch.no_grad(), autocast(student, amp):
                            labeler.teacher([u["weak"] for u in unlabeled])
                        run_base()
                    times.append(clock_now["clock"].now() - start)
    finally:
        labeler.teacher_detections, pseudo_labels_module.jitter_uncertainty = saved
        optimizer.step = real_optimizer_step
    n = len(per_step)
    step = {k: v / n for k, v in step_clock.times.items()}
    step.setdefault("box_jitter", 0.0)  # never called with SEMI.BOX_JITTER False
    step["mapping_and_statistics"] = (
        step.pop("pseudo_labels_total") - step["teacher_pseudo_labelling"] - step["box_jitter"]
    )
    step["student_forward_backward"] = statistics.fmean(per_step) - sum(step.values())  # the rest of the step
    base = {k: v / n for k, v in base_clock.times.items()}
    base["student_forward_backward"] = statistics.fmean(per_base) - sum(base.values())
    boxes = [sum(int((x["instances"].gt_classes >= 0).sum()) for x in data[len(labeled):]) / len(unlabeled)
             for data, (labeled, unlabeled) in zip(supervised_data[warmup:], batches[warmup:])]
    return {
        "step_s": statistics.fmean(per_step),
        "step_sections_s": step,
        "unavoidable_s": statistics.fmean(per_base),
        "unavoidable_sections_s": base,
        "pseudo_boxes_cls_per_image": statistics.fmean(boxes),
        "steps": n,
    }


def count_per_step(cfg, student, labeler, optimizer, batches, amp):
    """Operators dispatched and host synchronisations per step (``softteacher.profiling``), of the
    product's Soft Teacher step (with its EMA update) and of detectron2's own supervised step on
    the same images (the labeled ones and the strong views with their pseudo-boxes as ground
    truth). Means over ``batches``."""
    ema = EMATeacherHook(labeler.teacher, student, cfg.SEMI.EMA_MOMENTUM)
    ema.step = 10**6
    soft_teacher = SoftTeacherStep(student, batches, optimizer, labeler, cfg, amp=amp)
    soft_teacher.register_hooks([ema])

    def soft_teacher_step():
        soft_teacher.run_step()
        ema.after_step()

    supervised, supervised_run = supervised_step(student, optimizer, with_pseudo_boxes(labeler, batches), amp)
    out = {}
    for name, trainer, run in (("soft_teacher", soft_teacher, soft_teacher_step),
                               ("supervised", supervised, supervised_run)):
        trainer.iter = cfg.SEMI.BURN_IN_ITERS  # the unsupervised loss is on; not a logging iteration
        ops, syncs, by_op = [], [], collections.Counter()
        with EventStorage(trainer.iter) as storage:
            trainer.storage = storage
            for _ in batches:
                with count_device_work() as counts:
                    run()
                ops.append(counts.ops)
                syncs.append(counts.host_syncs)
                by_op.update(counts.syncs_by_op)
        out[name] = {
            "ops_per_step": round(statistics.fmean(ops), 1),
            "host_syncs_per_step": round(statistics.fmean(syncs), 1),
            "host_syncs_by_op_per_step": {k: round(v / len(batches), 1) for k, v in by_op.most_common()},
        }
    return out


def peak_memory_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--inference-images", type=int, default=40)
    parser.add_argument("--amp", action="store_true", help="float16 on CUDA, bfloat16 on the CPU")
    parser.add_argument("--count-steps", type=int, default=3, help="steps whose operators and syncs are counted")
    parser.add_argument("--counts-as", default="after",
                        help="the key under ``counts`` (e.g. before / after a change); other keys are kept")
    parser.add_argument("--count-only", action="store_true",
                        help="only count (no timing): --count-steps steps, into the existing result file")
    parser.add_argument("--output", default=os.path.join(REPO, "bench", "results", "cost.json"))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    if not os.path.exists(args.weights):
        sys.exit(f"{args.weights} does not exist: run `make demo` first, or pass --weights of a trained "
                 "Soft Teacher checkpoint")

    cfg = load_config(args.config_file, args.opts)
    cfg.DATALOADER.NUM_WORKERS = 0
    device = torch.device(cfg.MODEL.DEVICE)
    torch.manual_seed(0)

    checkpoint = load_checkpoint(args.weights)
    student = build_model(cfg)
    student.load_state_dict(checkpoint["model"])
    teacher = SoftTeacherTrainer.build_teacher(cfg)
    teacher.load_state_dict(checkpoint.get("teacher", checkpoint["model"]))
    optimizer = DefaultTrainer.build_optimizer(cfg, student)
    labeler = PseudoLabeler(cfg, teacher)

    batches = list(itertools.islice(build_labeled_unlabeled_loader(cfg), args.warmup + args.steps))
    command = "python bench/cost.py " + " ".join(sys.argv[1:])
    if args.count_only:
        counts = count_per_step(cfg, student, labeler, optimizer, batches[-args.count_steps:], args.amp)
        write_counts_only(args.output, args.counts_as, {**counts, "command": command})
        return
    timing = time_steps(cfg, student, labeler, optimizer, batches, args.warmup, args.amp, device)
    step, base = timing["step_sections_s"], timing["unavoidable_sections_s"]
    step_total, base_total = timing["step_s"], timing["unavoidable_s"]

    test_loader = build_detection_test_loader(cfg, cfg.DATASETS.TEST[0])
    images = list(itertools.islice(test_loader, args.inference_images))
    inference = inference_ratio(cfg, checkpoint.get("teacher", checkpoint["model"]), images, device)

    per_step_images = len(batches[0][0]) + len(batches[0][1])
    result = {
        "ratio_step_over_unavoidable": round(step_total / base_total, 4),
        "jitter_share": round(step["box_jitter"] / step_total, 4),
        "exported_inference_ratio": round(inference["ours"] / inference["plain"], 4),
        "targets": TARGETS,
        "step_s": round(step_total, 4),
        "step_sections_s": {k: round(v, 4) for k, v in step.items()},
        "step_section_shares": {k: round(v / step_total, 4) for k, v in step.items()},
        "unavoidable_s": round(base_total, 4),
        "unavoidable_sections_s": {k: round(v, 4) for k, v in base.items()},
        "images_per_step": per_step_images,
        "images_per_s": round(per_step_images / step_total, 2),
        "pseudo_boxes_cls_per_image": round(timing["pseudo_boxes_cls_per_image"], 2),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        "peak_memory_kind": "CUDA max_memory_allocated" if device.type == "cuda" else "process max RSS",
        "inference_s_per_image": {k: round(v, 5) for k, v in inference.items()},
        "steps": timing["steps"],
        "amp": args.amp,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "config": os.path.relpath(args.config_file, REPO),
        "overrides": args.opts,
        "weights": os.path.relpath(args.weights, REPO),
        "date": time.strftime("%Y-%m-%d"),
        "command": command,
    }
    result["met"] = {k: result[k] <= v for k, v in TARGETS.items()}
    counts = count_per_step(cfg, student, labeler, optimizer, batches[-args.count_steps:], args.amp)
    result["counts"] = counts_with(args.output, args.counts_as, {**counts, "command": result["command"]})
    write_result(args.output, result)


if __name__ == "__main__":
    main()
