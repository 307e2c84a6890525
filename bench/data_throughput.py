#!/usr/bin/env python
"""Data-loading throughput of the unlabeled stream (weak + strong views per image).

    python bench/data_throughput.py [--config-file ...] [--steps 60] [--workers 0 2]

Times the same number of batches of the paired-view loader with each worker count, in one run,
and writes bench/results/data_throughput.json (images/s, and the ratio to 0 workers).
"""

import argparse
import itertools
import os
import platform
import time

import torch
from bench_common import write_result
from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts
from detectron2.utils.env import seed_all_rng

from softteacher import load_config
from softteacher.data import WeakStrongDatasetMapper

HERE = os.path.dirname(os.path.abspath(__file__))


def images_per_second(cfg, workers, steps, warmup=5):
    dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN_UNLABELED, filter_empty=False)
    loader = build_detection_train_loader(
        dicts,
        mapper=WeakStrongDatasetMapper(cfg, is_train=True),
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH_UNLABELED,
        num_workers=workers,
    )
    it = iter(loader)
    for _ in range(warmup):  # worker start-up and first reads are not throughput
        next(it)
    start = time.perf_counter()
    images = sum(len(batch) for batch in itertools.islice(it, steps))
    return images / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default=os.path.join(
        HERE, "..", "configs", "Shapes", "soft_teacher_R18_FPN_10pct.yaml"))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--output", default=os.path.join(HERE, "results", "data_throughput.json"))
    args = parser.parse_args()
    cfg = load_config(args.config_file)
    torch.set_num_threads(1)
    seed_all_rng(0)
    rates = {str(w): images_per_second(cfg, w, args.steps) for w in args.workers}
    base = rates[str(args.workers[0])]
    result = {
        "what": "unlabeled images/s (each: read, weak view, strong view, weak->strong matrix)",
        "config": os.path.relpath(args.config_file),
        "batch": cfg.SOLVER.IMS_PER_BATCH_UNLABELED,
        "steps": args.steps,
        "images_per_s": {w: round(r, 1) for w, r in rates.items()},
        "ratio_to_first": {w: round(r / base, 2) for w, r in rates.items()},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
    }
    write_result(args.output, result)


if __name__ == "__main__":
    main()
