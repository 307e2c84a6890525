"""Will the unlabeled images pay on your data? Trains the supervised model on nested parts of your
labeled set within a time budget, fits its learning curve, and forecasts: the AP with 2x and 4x the
labels, the AP if every unlabeled image were labeled, the gain of training with the unlabeled
images (published method and recommended recipe, from a calibration on the generated datasets,
with its measured error), and a verdict.

    python tools/forecast.py --config-file configs/my_data.yaml --output output/forecast [--budget 30]

The config is one with DATASETS.CUSTOM (as tools/init_config.py writes); its val set scores the
runs. Writes OUTPUT/forecast.json, OUTPUT/forecast.png and prints the verdict.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import time

import numpy as np

from softteacher import load_config
from softteacher.datasets.coco_files import count_images
from softteacher.datasets.splits import load_coco_dict
from softteacher.forecast import NoForecast, curve_at, forecast, load_calibration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
PROBE_ITERS = 20  # a first short run times an iteration and the start-up and evaluation around it
MIN_RUN_ITERS = 100  # the smallest part's run: fewer and the budget is too small for a curve
PART_SEED = 0  # the nested parts: one fixed order of the labeled images, every part a prefix of it


def nested_parts(coco, percents, out_dir):
    """Write the labeled json's nested parts (each a prefix of one fixed shuffle of its images, so
    a smaller part is inside every larger one); returns {percent: (json path, image count)}."""
    ids = [im["id"] for im in coco["images"]]
    random.Random(PART_SEED).shuffle(ids)
    os.makedirs(out_dir, exist_ok=True)
    parts = {}
    for p in sorted(percents):
        keep = set(ids[: max(1, round(len(ids) * p / 100))])
        part = {**coco, "images": [im for im in coco["images"] if im["id"] in keep],
                "annotations": [a for a in coco.get("annotations", []) if a["image_id"] in keep]}
        path = os.path.join(out_dir, f"labeled_{p:g}pct.json")
        with open(path, "w") as f:
            json.dump(part, f)
        parts[p] = (path, len(keep))
    return parts


def supervised_opts(cfg, part_json, iters, seed, out_dir):
    """Overrides that train the config's supervised twin on one part for ``iters`` iterations and
    evaluate it once at the end on the val set."""
    name = cfg.DATASETS.CUSTOM.NAME
    steps = tuple(round(iters * f) for f in (0.75, 0.9))
    return ["MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "MODEL.ROI_HEADS.NAME", "StandardROIHeads",
            "MODEL.PROPOSAL_GENERATOR.NAME", "RPN",
            "DATASETS.CUSTOM.LABELED_JSON", part_json, "DATASETS.CUSTOM.UNLABELED_JSON", "",
            "DATASETS.CUSTOM.UNLABELED_IMAGES", "", "DATASETS.CUSTOM.TEST_JSON", "", "DATASETS.CUSTOM.TEST_IMAGES", "",
            "DATASETS.TRAIN", f"('{name}_labeled',)", "DATASETS.TRAIN_LABELED", "()", "DATASETS.TRAIN_UNLABELED", "()",
            "DATASETS.TEST", f"('{name}_val',)", "SOLVER.IMS_PER_BATCH", str(cfg.SOLVER.IMS_PER_BATCH_LABELED),
            "SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", str(steps),
            "SOLVER.WARMUP_ITERS", str(min(cfg.SOLVER.WARMUP_ITERS, iters // 10)),
            "SOLVER.CHECKPOINT_PERIOD", str(iters + 1), "TEST.EVAL_PERIOD", "0", "SEED", str(seed),
            "OUTPUT_DIR", out_dir]


def train_part(config_file, opts, log_path):
    """One supervised run (train_net.py, its own process); returns (AP on val, seconds per
    iteration, wall seconds)."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        done = subprocess.run([sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", config_file, *opts],
                              cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"a supervised run failed (exit {done.returncode}): see {log_path}")
    out_dir = opts[opts.index("OUTPUT_DIR") + 1]
    with open(os.path.join(out_dir, "metrics.json")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    ap = [r["bbox/AP"] for r in records if "bbox/AP" in r][-1]
    times = [r["time"] for r in records if "time" in r]
    return ap, (float(np.median(times)) if times else 0.0), wall


def plan(budget_s, probe, sizes, max_iters, seeds):
    """Iterations per labeled image of every run (as many epochs for every part, so a small part is
    not trained for as long as a large one; the largest at most the config's MAX_ITER) and the seeds,
    within the budget left after the probe: a second seed only when one seed's runs would all reach
    MAX_ITER (training length matters more than seed noise here). (None, []) when the smallest
    part's run would get under MIN_RUN_ITERS."""
    seconds_per_iter, probe_wall = probe
    overhead = max(0.0, probe_wall - PROBE_ITERS * seconds_per_iter)  # start-up and evaluation
    largest = max(sizes.values())
    for n in range(len(seeds), 0, -1):
        left = budget_s - probe_wall - n * len(sizes) * overhead
        per_image = min(left / max(seconds_per_iter, 1e-6) / n / sum(sizes.values()), max_iters / largest)
        if min(iterations(per_image, sizes).values()) >= MIN_RUN_ITERS and (n == 1 or per_image == max_iters / largest):
            return per_image, seeds[:n]
    return None, []


def iterations(per_image, sizes):
    return {p: int(per_image * size) for p, size in sizes.items()}


def replan(budget_left_s, seconds_per_iter, overhead, sizes_left, per_image):
    """Iterations per labeled image of the runs still to train (``sizes_left``: their images, one
    entry a run) within what is left of the budget, at the speed the finished runs showed: as
    planned, or fewer where they were slower than the probe said (never under MIN_RUN_ITERS for
    the smallest)."""
    fits = (budget_left_s - len(sizes_left) * overhead) / max(seconds_per_iter, 1e-6) / sum(sizes_left)
    return max(min(per_image, fits), MIN_RUN_ITERS / min(sizes_left))


def plot(path, counts, aps, result, num_labeled, num_unlabeled):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(counts, aps, color="black", zorder=3, label="supervised runs (parts of your labels)")
    total = num_labeled + num_unlabeled
    n = np.geomspace(min(counts) / 1.5, total * 1.5, 200)
    for (use, fit), style in zip(result["fits"].items(), ("-", "--")):
        if use == "all_labeled" and fit["curve"] == result["fits"]["more_labels"]["curve"]:
            continue  # one curve serves both
        ax.plot(n, [curve_at(fit, x) for x in n], style, color="tab:blue",
                label=f"fitted learning curve ({fit['curve'].replace('_', ' ')}), for {use.replace('_', ' ')}")
    ax.scatter([2 * num_labeled, 4 * num_labeled], [result["labels_2x"], result["labels_4x"]], marker="s",
               color="tab:blue", zorder=3, label="2x and 4x the labels (forecast)")
    ax.scatter([total], [result["all_labeled"]], marker="*", s=150, color="tab:green", zorder=3,
               label="every unlabeled image labeled (forecast)")
    for (recipe, r), color in zip(result["recipes"].items(), ("tab:orange", "tab:red")):
        low, high = r["interval"]
        ax.errorbar([num_labeled], [result["now"] + r["gain"]], yerr=[[r["gain"] - low], [high - r["gain"]]],
                    fmt="o", color=color, capsize=4, label=f"{recipe} recipe with the unlabeled images (forecast)")
    ax.set_xscale("log")
    ax.set_xlabel("labeled images")
    ax.set_ylabel("AP on val")
    ax.set_title(f"verdict: {result['verdict']}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(result, num_labeled, num_unlabeled):
    lines = [f"AP now ({num_labeled} labeled images): {result['now']:.1f}",
             f"with 2x the labels: {result['labels_2x']:.1f}   with 4x: {result['labels_4x']:.1f}   "
             f"(fitted {result['fits']['more_labels']['curve'].replace('_', ' ')} curve)",
             f"if the {num_unlabeled} unlabeled images were labeled too: {result['all_labeled']:.1f} "
             f"(fitted {result['fits']['all_labeled']['curve'].replace('_', ' ')} curve; gap {result['gap']:+.1f} AP"
             + (f"; this forecast erred by up to {result['all_labeled_error']:.1f} AP on the calibration curves)"
                if result.get("all_labeled_error") is not None else ")")]
    for recipe, r in result["recipes"].items():
        low, high = r["interval"]
        err = f"; leave-one-dataset-out error up to {r['loo_error']:.1f} AP" if r["loo_error"] is not None else ""
        lines.append(f"{recipe} recipe with the unlabeled images: {r['gain']:+.1f} AP "
                     f"(range {low:+.1f} to {high:+.1f}{err})")
    lines.append(f"verdict: {result['verdict']} ({result['reason']})")
    return "\n".join(lines)


def main(argv=None, train=train_part, clock=time.perf_counter):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, help="a config with DATASETS.CUSTOM (tools/init_config.py)")
    parser.add_argument("--output", required=True, help="folder for forecast.json, forecast.png and the runs")
    parser.add_argument("--budget", type=float, default=30.0, help="minutes of training in all")
    parser.add_argument("--parts", type=float, nargs="+", default=[12.5, 25, 50, 100],
                        help="nested parts of the labeled set, percent")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="seeds where the budget allows")
    parser.add_argument("--iters", type=int, default=0, help="iterations per run (default: from --budget)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    custom = cfg.DATASETS.CUSTOM
    if not (custom.NAME and custom.LABELED_JSON and custom.VAL_JSON):
        raise SystemExit(f"{args.config_file}: the forecast reads DATASETS.CUSTOM (NAME, LABELED_JSON, VAL_JSON); "
                         "write such a config with tools/init_config.py")
    coco = load_coco_dict(custom.LABELED_JSON)
    num_labeled, num_unlabeled = len(coco["images"]), count_images(custom.UNLABELED_JSON, custom.UNLABELED_IMAGES)
    output = os.path.abspath(args.output)  # the runs start in the repository, wherever you are
    parts = nested_parts(coco, args.parts, os.path.join(output, "parts"))
    config_file = os.path.abspath(args.config_file)
    runs = []  # (labeled images, seed, AP)

    def run(p, seed, iters):
        path, count = parts[p]
        out_dir = os.path.join(output, "runs", f"{p:g}pct_seed{seed}_{iters}it")
        os.makedirs(os.path.dirname(out_dir), exist_ok=True)
        opts = [*args.opts, *supervised_opts(cfg, path, iters, seed, out_dir)]
        return count, train(config_file, opts, out_dir + ".log")

    start = clock()
    sizes = {p: n for p, (_, n) in parts.items()}
    if args.iters:
        for seed, p in [(seed, p) for seed in args.seeds for p in sorted(parts)]:
            count, (ap, _, _) = run(p, seed, args.iters)
            runs.append((count, seed, ap, args.iters))
    else:
        count, (ap, per_iter, probe_wall) = run(max(parts), args.seeds[0], PROBE_ITERS)
        per_image, seeds = plan(args.budget * 60, (per_iter, probe_wall), sizes, cfg.SOLVER.MAX_ITER, args.seeds)
        if per_image is None:
            raise SystemExit(f"--budget {args.budget:g} minutes gives the smallest part's run under {MIN_RUN_ITERS} "
                             f"iterations (an iteration takes {per_iter:.2f} s here, start-up and evaluation "
                             f"{probe_wall:.0f} s a run): raise it, or give fewer --parts")
        overhead = max(0.0, probe_wall - PROBE_ITERS * per_iter)
        jobs = [(seed, p) for seed in seeds for p in sorted(parts)]  # in training order
        trained_s, trained_iters = 0.0, 0
        for i, (seed, p) in enumerate(jobs):
            if trained_iters:  # the speed the runs so far showed, not the probe's
                per_image = replan(args.budget * 60 - (clock() - start), trained_s / trained_iters,
                                   overhead, [sizes[q] for _, q in jobs[i:]], per_image)
            iters = max(int(per_image * sizes[p]), 1)
            count, (ap, _, wall) = run(p, seed, iters)
            runs.append((count, seed, ap, iters))
            trained_s, trained_iters = trained_s + max(wall - overhead, 0.0), trained_iters + iters
    counts, aps = [r[0] for r in runs], [r[2] for r in runs]
    out = {"config": config_file, "labeled": num_labeled, "unlabeled": num_unlabeled,
           "minutes": round((clock() - start) / 60, 1), "budget_minutes": args.budget,
           "runs": [{"labeled": c, "seed": s, "AP": a, "iterations": n} for c, s, a, n in runs]}
    try:
        result = forecast(counts, aps, num_labeled, num_unlabeled, bool(cfg.MODEL.WEIGHTS), load_calibration())
    except NoForecast as e:
        out["no_forecast"] = str(e)
        with open(os.path.join(output, "forecast.json"), "w") as f:
            json.dump(out, f, indent=1)
        print(f"No forecast: {e}")
        return out
    out.update(result)
    with open(os.path.join(output, "forecast.json"), "w") as f:
        json.dump(out, f, indent=1)
    plot(os.path.join(output, "forecast.png"), counts, aps, result, num_labeled, num_unlabeled)
    print(report(result, num_labeled, num_unlabeled) + f"\npicture: {os.path.join(output, 'forecast.png')}")
    return out


if __name__ == "__main__":
    main()
