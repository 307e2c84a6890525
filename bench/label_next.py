#!/usr/bin/env python
"""Does labeling the images the model is least sure of beat labeling random ones?

    python bench/label_next.py [--seeds 1 2] [--extra-percent 5] [KEY VALUE ...]

On the embedded data, with 10 % of the training pool labeled (fold 1):

1. the ranker: the supervised 10 % model (``configs/Shapes/supervised_R18_FPN_10pct.yaml``, seed 1);
2. ``tools/label_next.py`` ranks the other 90 % by that model's uncertainty;
3. per seed, two supervised runs on 10 % + ``--extra-percent`` % more labeled images, the same
   config, iterations and seed: the extra images (a) the top of the ranking, (b) drawn at random
   (with the seed).

Every run is ``train_net.py`` in its own process under ``output/bench/label_next/``; a finished run
is read back, not repeated. Writes ``bench/results/label_next.json`` after every run: AP, AP50 and
AP75 per arm and seed, their means and spreads, and ranked - random.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
from bench_common import write_result
from quality import METRICS, evaluations, read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "Shapes", "supervised_R18_FPN_10pct.yaml")
LABELED = "shapes_train.1@10"
UNLABELED = "shapes_train.1@10-unlabeled"


def train(out_dir, log, opts):
    """Run train_net.py unless ``out_dir`` holds a finished run; return its final AP metrics."""
    done = os.path.join(out_dir, "bench_run.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    start = time.perf_counter()
    if not os.path.exists(os.path.join(out_dir, "model_final.pth")):  # else: trained, not yet summarised
        run_train_net(out_dir, log, opts)
    result = {
        "final": evaluations(read_metrics(os.path.join(out_dir, "metrics.json")), "")[-1][1],
        "wall_s": round(time.perf_counter() - start, 1),
    }
    with open(done, "w") as f:
        json.dump(result, f, indent=1)
    return result


def run_train_net(out_dir, log, opts):
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", CONFIG, *opts, "OUTPUT_DIR", out_dir]
    print("[label_next] " + " ".join(cmd[1:]), flush=True)
    with open(log, "w") as f:
        subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=True)


def extended_labeled_json(path, labeled_json, pool_json, extra_ids):
    """Write ``labeled_json`` plus the images ``extra_ids`` of ``pool_json`` with their boxes."""
    with open(labeled_json) as f:
        labeled = json.load(f)
    with open(pool_json) as f:
        pool = json.load(f)
    extra = set(extra_ids)
    labeled["images"] += [im for im in pool["images"] if im["id"] in extra]
    labeled["annotations"] += [a for a in pool["annotations"] if a["image_id"] in extra]
    with open(path, "w") as f:
        json.dump(labeled, f)
    return path


def summarise(runs):
    out = {}
    for metric in METRICS:
        values = [r["final"][metric] for r in runs.values()]
        out[metric] = {"mean": round(statistics.fmean(values), 2), "spread": round(max(values) - min(values), 2)}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--extra-percent", type=float, default=5.0)
    parser.add_argument("--work-dir", default=os.path.join(REPO, "output", "bench", "label_next"))
    parser.add_argument("--output", default=os.path.join(REPO, "bench", "results", "label_next.json"))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import softteacher  # noqa: F401  (registers the embedded data)
    from softteacher.datasets.builtin import shapes_json
    from softteacher.datasets.splits import split_paths

    pool = DatasetCatalog.get(UNLABELED)  # writes the split files when missing
    labeled_json, unlabeled_json = split_paths(shapes_json("train"), 10, 1)
    num_extra = int(round(len(DatasetCatalog.get("shapes_train")) * args.extra_percent / 100))
    image_root = MetadataCatalog.get(UNLABELED).image_root

    ranker_dir = os.path.join(args.work_dir, "ranker")
    ranker = train(ranker_dir, os.path.join(args.work_dir, "ranker.log"), ["SEED", "1", *args.opts])
    ranker_weights = os.path.join(ranker_dir, "model_final.pth")
    runs = {"random": {}, "ranked": {}}
    ranking = None
    for arm in runs:  # the random arms first: they do not wait for the ranking
        for seed in args.seeds:
            if arm == "random":
                ids = np.random.default_rng(seed).choice(
                    sorted(record["image_id"] for record in pool), num_extra, replace=False
                ).tolist()
            else:
                ranking = ranking or rank(args, ranker_weights, num_extra)
                ids = [entry["image_id"] for entry in ranking["images"][:num_extra]]
            name = f"{arm}_seed{seed}"
            json_file = extended_labeled_json(
                os.path.join(args.work_dir, f"{name}.json"), labeled_json, unlabeled_json, ids
            )
            runs[arm][str(seed)] = train(
                os.path.join(args.work_dir, name), os.path.join(args.work_dir, f"{name}.log"),
                ["DATASETS.CUSTOM.NAME", name, "DATASETS.CUSTOM.LABELED_JSON", json_file,
                 "DATASETS.CUSTOM.LABELED_IMAGES", image_root, "DATASETS.TRAIN", f"('{name}_labeled',)",
                 "SEED", str(seed), *args.opts],
            )
            write_results(args, ranker, ranking, runs, num_extra)


def rank(args, weights, top):
    """The ranking of the unlabeled pool by tools/label_next.py (written once, then read)."""
    ranking_file = os.path.join(args.work_dir, "ranking.json")
    if not os.path.exists(ranking_file):
        from softteacher.tools import label_next

        label_next.main(["--config-file", CONFIG, "--weights", weights, "--input", UNLABELED,
                         "--output", args.work_dir, "--top", str(top), *args.opts])
    with open(ranking_file) as f:
        return json.load(f)


def write_results(args, ranker, ranking, runs, num_extra):
    arms = {arm: {"seeds": done, "mean": summarise(done)} for arm, done in runs.items() if done}
    result = {
        "question": f"supervised on 10 % + {args.extra_percent:g} % more labeled images: the "
                    "images ranked most uncertain by the 10 % model vs images drawn at random",
        "extra_images": num_extra,
        "measure": ranking["measure"] if ranking else None,
        "ranker_ap": ranker["final"],
        "arms": arms,
        "overrides": args.opts,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/label_next.py " + " ".join(sys.argv[1:]),
    }
    if len(arms) == 2:
        common = sorted(set(runs["ranked"]) & set(runs["random"]))
        result["ranked_minus_random"] = {
            metric: round(statistics.fmean(
                runs["ranked"][s]["final"][metric] - runs["random"][s]["final"][metric] for s in common
            ), 2)
            for metric in METRICS
        } if common else {}
    write_result(args.output, result)


if __name__ == "__main__":
    main()
