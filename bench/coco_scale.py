#!/usr/bin/env python
"""A dry run of the shipped COCO 10 % config at its own sizes, on generated COCO-like data.

    python bench/coco_scale.py [--steps 3] [--warmup 1] [--amp] [--output bench/results/coco_scale.json]

Builds ``configs/COCO-SemiSupervised/soft_teacher_R_50_FPN_10pct_180k.yaml`` as shipped (R50-FPN,
80 classes, 400-1,200 px short side up to 1,333, its RPN and ROI settings) with one GPU's share
of its batch (1 labeled + 4 unlabeled images; the config's totals are for 8 GPUs), on the embedded
pictures enlarged to COCO size with 80 COCO categories (``softteacher.datasets.synthetic.large_scale``), split
10 % labeled by ``tools/split_coco.py``'s default (the original code's selection).

Two departures, said in the result: random weights replace the ImageNet file (none is shipped),
with each frozen batch norm's statistics set from one batch so that activations keep the scale
pretrained weights give; and a random teacher finds no pseudo-box, so its thresholds let boxes
through (every detection is a pseudo-box in every branch) and its detections per image are
capped at ``--pseudo-boxes`` (COCO images hold about 7 objects). A random teacher's class scores
all sit near 1 / 81, so with no score cut each of its 1,000 proposals sends 80 boxes to NMS, which
a trained teacher's 0.05 cut never does: by default (``--teacher realistic``) the teacher's score
cut is set, on the first batch, to leave ``--boxes-before-nms`` (300) boxes an image for NMS
(``--teacher random``: no cut, as before). The optimizer runs at the
learning rate of the schedule's first iterations (the warm-up's). Then, after warm-up steps, it
times Soft Teacher steps part by part against the unavoidable work (as ``bench/cost.py``), and
the supervised twin's step (``configs/COCO-Supervised/supervised_R_50_FPN_10pct_180k.yaml``, 1
image). Records seconds by part, images/s, peak memory, pseudo-boxes per image, and the operators
and host synchronisations of a step (``counts``, as ``bench/cost.py``; ``--count-only`` adds just
those to an existing result file).
"""

import argparse
import itertools
import os
import platform
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_ROOT = os.path.join(REPO, "output", "bench", "coco_scale", "datasets")
os.environ.setdefault("DETECTRON2_DATASETS", DATA_ROOT)  # read by detectron2 at import

import torch  # noqa: E402
from bench_common import counts_with, write_counts_only, write_result  # noqa: E402
from cost import Clock, autocast, count_per_step, peak_memory_mb, time_steps  # noqa: E402
from detectron2.data import build_detection_train_loader  # noqa: E402
from detectron2.engine import DefaultTrainer  # noqa: E402
from detectron2.layers import FrozenBatchNorm2d  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from softteacher import SoftTeacherTrainer, load_config  # noqa: E402
from softteacher.data import build_labeled_unlabeled_loader  # noqa: E402
from softteacher.datasets.splits import write_split  # noqa: E402
from softteacher.datasets.synthetic.large_scale import write_coco_like  # noqa: E402
from softteacher.modeling import PseudoLabeler  # noqa: E402

SEMI_CONFIG = os.path.join("configs", "COCO-SemiSupervised", "soft_teacher_R_50_FPN_10pct_180k.yaml")
SUPERVISED_CONFIG = os.path.join("configs", "COCO-Supervised", "supervised_R_50_FPN_10pct_180k.yaml")
ORIGINAL_IMAGES_PER_S = 7  # the original code on a V100 (8 GPUs, 1 + 4 images each, fp16)


def prepare_data(num_train):
    coco_root = os.path.join(os.environ["DETECTRON2_DATASETS"], "coco")
    train_json = os.path.join(coco_root, "annotations", "instances_train2017.json")
    if not os.path.exists(train_json):
        write_coco_like(os.environ["DETECTRON2_DATASETS"], num_train=num_train)
    write_split(train_json, 10, 1, out_dir=os.path.join(coco_root, "annotations", "semi_supervised"))


def calibrate_frozen_batch_norms(model, images):
    """Set every frozen batch norm's statistics to those of its input on ``images`` (one
    forward), layer after layer: random weights then keep activations at unit scale."""

    def set_statistics(module, args):
        x = args[0].float()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)) + module.eps)

    handles = [m.register_forward_pre_hook(set_statistics) for m in model.modules()
               if isinstance(m, FrozenBatchNorm2d)]
    with torch.no_grad():
        model.backbone(model.preprocess_image(images).tensor)
    for handle in handles:
        handle.remove()
    return len(handles)


@torch.no_grad()
def realistic_score_cut(teacher, weak_views, boxes_per_image):
    """Set the teacher's test score threshold so that about ``boxes_per_image`` (proposal, class)
    pairs an image pass it and go to NMS, as a trained detector's 0.05 cut leaves a few hundred (a
    random one's scores all sit near 1 / (classes + 1), so with no cut every pair would). Returns
    (threshold, pairs an image above it), measured on ``weak_views``."""
    images = teacher.preprocess_image(weak_views)
    features = teacher.backbone(images.tensor)
    proposals, _ = teacher.proposal_generator(images, features, None)
    heads = teacher.roi_heads
    scores, _ = heads.box_predictions(features, [p.proposal_boxes for p in proposals])
    foreground = torch.softmax(scores.float(), dim=-1)[:, :-1].flatten()
    threshold = foreground.topk(boxes_per_image * len(weak_views)).values[-1].item()
    heads.box_predictor.test_score_thresh = threshold
    return threshold, (foreground >= threshold).sum().item() / len(weak_views)


def first_steps_optimizer(cfg, model):
    """The config's optimizer at the learning rate of its first iterations (the linear warm-up
    starts at BASE_LR * WARMUP_FACTOR; a random network diverges at the full rate)."""
    optimizer = DefaultTrainer.build_optimizer(cfg, model)
    for group in optimizer.param_groups:
        group["lr"] = cfg.SOLVER.BASE_LR * cfg.SOLVER.WARMUP_FACTOR
    return optimizer


def device_overrides(device):
    return ["MODEL.DEVICE", device, "MODEL.WEIGHTS", "", "DATALOADER.NUM_WORKERS", "2"]


def supervised_steps(device, steps, warmup, amp, images):
    """Seconds per step of the supervised twin with ``images`` a step (one GPU's share: 1)."""
    cfg = load_config(os.path.join(REPO, SUPERVISED_CONFIG),
                      [*device_overrides(device), "SOLVER.IMS_PER_BATCH", str(images)])
    model = build_model(cfg)
    batches = list(itertools.islice(build_detection_train_loader(cfg), warmup + steps))
    calibrate_frozen_batch_norms(model, batches[0])
    model.train()
    optimizer = first_steps_optimizer(cfg, model)
    clock, times = Clock(torch.device(device)), []
    with EventStorage(0):
        for i, batch in enumerate(batches):
            if i == warmup and device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            start = clock.now()
            with autocast(model, amp):
                loss = sum(model(batch).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if i >= warmup:
                times.append(clock.now() - start)
    return {"step_s": round(sum(times) / len(times), 3), "images_per_step": images,
            "images_per_s": round(images * len(times) / sum(times), 3),
            "peak_memory_mb": round(peak_memory_mb(torch.device(device)), 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--labeled", type=int, default=1, help="labeled images a step (one GPU's share: 1)")
    parser.add_argument("--unlabeled", type=int, default=4, help="unlabeled images a step (one GPU's share: 4)")
    parser.add_argument("--teacher", choices=("realistic", "random"), default="realistic",
                        help="realistic: a score cut leaves --boxes-before-nms detections an image for NMS; "
                             "random: every (proposal, class) pair goes to NMS")
    parser.add_argument("--boxes-before-nms", type=int, default=300,
                        help="the realistic teacher's (proposal, class) pairs an image before NMS")
    parser.add_argument("--pseudo-boxes", type=int, default=8, help="the teacher's detections per image after NMS")
    parser.add_argument("--num-train", type=int, default=40, help="generated train2017 images (10 %% labeled)")
    parser.add_argument("--amp", action="store_true", help="float16 on CUDA, bfloat16 on the CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default=os.path.join(REPO, "bench", "results", "coco_scale.json"))
    parser.add_argument("--count-steps", type=int, default=1, help="steps whose operators and syncs are counted")
    parser.add_argument("--counts-as", default="after", help="the key under ``counts``; other keys are kept")
    parser.add_argument("--count-only", action="store_true",
                        help="only count (no timing): one step on one batch, into the existing result file")
    args = parser.parse_args()
    torch.manual_seed(0)
    prepare_data(args.num_train)
    # the supervised twin first: on the CPU, peak memory is the process's maximum so far
    supervised = None if args.count_only else supervised_steps(args.device, args.steps, args.warmup, args.amp,
                                                                args.labeled)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    overrides = [
        *device_overrides(args.device),
        "SOLVER.IMS_PER_BATCH_LABELED", str(args.labeled), "SOLVER.IMS_PER_BATCH_UNLABELED", str(args.unlabeled),
        "SEMI.PSEUDO_SCORE_THRESH", "0.0", "SEMI.RPN_PSEUDO_THRESH", "0.0", "SEMI.CLS_PSEUDO_THRESH", "0.0",
        "SEMI.REG_UNCERTAINTY_THRESH", "1e9", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
        "TEST.DETECTIONS_PER_IMAGE", str(args.pseudo_boxes),
    ]
    cfg = load_config(os.path.join(REPO, SEMI_CONFIG), overrides)
    device = torch.device(cfg.MODEL.DEVICE)
    start = time.perf_counter()
    student = build_model(cfg)
    build_s = time.perf_counter() - start
    batches = list(itertools.islice(build_labeled_unlabeled_loader(cfg), args.warmup + args.steps))
    norms = calibrate_frozen_batch_norms(student, batches[0][0] + [u["weak"] for u in batches[0][1]])
    teacher = SoftTeacherTrainer.build_teacher(cfg)
    teacher.load_state_dict(student.state_dict())
    optimizer = first_steps_optimizer(cfg, student)
    labeler = PseudoLabeler(cfg, teacher)
    teacher_departure = "random: every (proposal, class) pair of the teacher goes to NMS"
    if args.teacher == "realistic":
        cut, before_nms = realistic_score_cut(teacher, [u["weak"] for u in batches[0][1]], args.boxes_before_nms)
        teacher_departure = (f"realistic: a score cut of {cut:.5f} leaves {before_nms:.0f} (proposal, class) pairs "
                             "an image for NMS, as a trained teacher's 0.05 cut does")
    command = "python bench/coco_scale.py " + " ".join(sys.argv[1:])
    if args.count_only:
        counts = count_per_step(cfg, student, labeler, optimizer, batches[:1], args.amp)
        write_counts_only(args.output, args.counts_as, {**counts, "teacher": teacher_departure, "command": command})
        return
    timing = time_steps(cfg, student, labeler, optimizer, batches, args.warmup, args.amp, device)
    semi_peak = peak_memory_mb(device)
    counts = count_per_step(cfg, student, labeler, optimizer, batches[-args.count_steps:], args.amp)
    counts = counts_with(args.output, args.counts_as, {**counts, "teacher": teacher_departure, "command": command})

    step = timing["step_s"]
    images = len(batches[0][0]) + len(batches[0][1])
    sizes = sorted({tuple(x["image"].shape[1:]) for labeled, unlabeled in batches for x in labeled})
    result = {
        "config": SEMI_CONFIG,
        "supervised_config": SUPERVISED_CONFIG,
        "per_gpu_batch": {"labeled": args.labeled, "unlabeled": args.unlabeled},
        "departures": {
            "weights": "random (no ImageNet file); frozen batch norms' statistics set from one batch "
                       f"({norms} layers)",
            "pseudo_labels": "every teacher detection is a pseudo-box in every branch (thresholds 0, "
                             f"jitter filter off), at most {args.pseudo_boxes} detections an image",
            "teacher": teacher_departure,
            "learning_rate": "the warm-up's first rate, BASE_LR * WARMUP_FACTOR = "
                             f"{cfg.SOLVER.BASE_LR * cfg.SOLVER.WARMUP_FACTOR:g}",
            "overrides": overrides,
        },
        "soft_teacher": {
            "step_s": round(step, 3),
            "step_sections_s": {k: round(v, 4) for k, v in timing["step_sections_s"].items()},
            "step_section_shares": {k: round(v / step, 4) for k, v in timing["step_sections_s"].items()},
            "unavoidable_s": round(timing["unavoidable_s"], 3),
            "unavoidable_sections_s": {k: round(v, 4) for k, v in timing["unavoidable_sections_s"].items()},
            "ratio_step_over_unavoidable": round(step / timing["unavoidable_s"], 4),
            "images_per_step": images,
            "images_per_s": round(images / step, 3),
            "pseudo_boxes_cls_per_image": round(timing["pseudo_boxes_cls_per_image"], 2),
            "peak_memory_mb": round(semi_peak, 1),
        },
        "supervised": supervised,
        "counts": counts,
        "labeled_input_sizes_hw": [list(s) for s in sizes],
        "steps": timing["steps"],
        "warmup_steps": args.warmup,
        "model_build_s": round(build_s, 2),
        "amp": args.amp,
        "original_code_images_per_s_per_v100": ORIGINAL_IMAGES_PER_S,
        "peak_memory_kind": "CUDA max_memory_allocated" if device.type == "cuda" else "process max RSS",
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d"),
        "command": command,
    }
    write_result(args.output, result)


if __name__ == "__main__":
    main()
