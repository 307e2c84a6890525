#!/usr/bin/env python
"""Does ``torch.compile`` or channels-last speed up the backbone passes of a Soft Teacher step?

    python bench/compile.py [--config-file ...] [--steps 6] [--amp] [--mode default] [KEY VALUE ...]

detectron2's heads have data-dependent shapes (proposals, samples, pseudo-boxes), so the part of a
step a compiler can take whole is the backbone (ResNet + FPN): per step the student's
forward + backward over the labeled images and the strong views, and the teacher's forward over the
weak views, at the sizes the loader gives (shapes vary: ``dynamic=True``). On the step's own
batches, in one run, alternating which goes first, this times those passes eager, compiled
(``--mode``), and eager in channels-last memory format; checks that each variant's features match
the eager ones; and writes ``bench/results/compile.json`` (time per step of each, the ratios to
eager, the compile time).
"""

import argparse
import itertools
import os
import platform
import statistics
import sys
import time

import torch
from bench_common import write_result
from detectron2.modeling import build_model

from softteacher import load_config
from softteacher.data import build_labeled_unlabeled_loader

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "Shapes", "soft_teacher_R18_FPN_10pct.yaml")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def backbone_passes(model, backbone, batch, amp, channels_last):
    """The student's forward + backward (labeled, strong) and the teacher's forward (weak)."""
    labeled, unlabeled = batch
    groups = [labeled, [u["strong"] for u in unlabeled], [u["weak"] for u in unlabeled]]
    outputs = []
    with torch.autocast(model.device.type, dtype=torch.float16 if model.device.type == "cuda" else torch.bfloat16,
                        enabled=amp):
        for i, group in enumerate(groups):
            images = model.preprocess_image(group).tensor
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if i < 2:
                features = backbone(images)
                sum(f.float().square().mean() for f in features.values()).backward()
            else:
                with torch.no_grad():
                    features = backbone(images)
            outputs.append({k: v.detach().float() for k, v in features.items()})
    return outputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--amp", action="store_true", help="float16 on CUDA, bfloat16 on the CPU")
    parser.add_argument("--mode", default="default", help="torch.compile mode (e.g. max-autotune-no-cudagraphs)")
    parser.add_argument("--output", default=os.path.join(REPO, "bench", "results", "compile.json"))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()

    cfg = load_config(args.config_file, args.opts)
    cfg.DATALOADER.NUM_WORKERS = 0
    device = torch.device(cfg.MODEL.DEVICE)
    torch.manual_seed(0)
    model = build_model(cfg)
    eager = model.backbone
    batches = list(itertools.islice(build_labeled_unlabeled_loader(cfg), args.steps))

    start = time.perf_counter()
    compiled = torch.compile(eager, dynamic=True, mode=args.mode)
    for batch in batches:  # compiles for every new input shape; the timed steps reuse them
        backbone_passes(model, compiled, batch, args.amp, False)
    sync(device)
    compile_s = time.perf_counter() - start

    variants = {"eager": (eager, False), "compiled": (compiled, False), "channels_last": (eager, True)}
    times = {name: [] for name in variants}
    differences = {name: 0.0 for name in variants}
    for i, batch in enumerate(batches):
        order = list(variants) if i % 2 == 0 else list(reversed(variants))
        results = {}
        for name in order:
            backbone, channels_last = variants[name]
            if channels_last:
                model.to(memory_format=torch.channels_last)
            sync(device)
            start = time.perf_counter()
            results[name] = backbone_passes(model, backbone, batch, args.amp, channels_last)
            sync(device)
            times[name].append(time.perf_counter() - start)
            if channels_last:
                model.to(memory_format=torch.contiguous_format)
            model.zero_grad(set_to_none=True)
        reference = results["eager"]
        for name, outputs in results.items():
            scale = max(f.abs().max().item() for group in reference for f in group.values())
            diff = max((a - b).abs().max().item() for ga, gb in zip(reference, outputs)
                       for a, b in zip(ga.values(), gb.values()))
            differences[name] = max(differences[name], diff / max(scale, 1e-12))
    per_step = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "per_step_s": {k: round(v, 4) for k, v in per_step.items()},
        "ratio_to_eager": {k: round(v / per_step["eager"], 4) for k, v in per_step.items()},
        "max_relative_feature_difference": {k: float(f"{v:.3g}") for k, v in differences.items()},
        "compile_s": round(compile_s, 1),
        "steps": args.steps,
        "images_per_step": len(batches[0][0]) + 2 * len(batches[0][1]),
        "amp": args.amp,
        "mode": args.mode,
        "device": str(device),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/compile.py " + " ".join(sys.argv[1:]),
    }
    write_result(args.output, result)


if __name__ == "__main__":
    main()
