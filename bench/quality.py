#!/usr/bin/env python
"""The semi-supervised gain on the embedded data: five arms, the same model, iterations and seeds.

    python bench/quality.py [--seeds 1 2] [--arms a c] [KEY VALUE ...]

(a) supervised on 10 %, (b) supervised on 100 %, (c) Soft Teacher on 10 % + the other 90 %
unlabeled, (d) (c) without soft background weighting, (e) (c) without box jitter (no unlabeled box
regression). Every run is ``train_net.py`` in its own process under ``output/bench/quality/``; a
run that already finished is read back, not repeated, so an interrupted benchmark continues.
Trailing KEY VALUE pairs go to every run (e.g. ``SOLVER.MAX_ITER 400`` for a quick look).

Writes ``bench/results/quality.json`` (every arm's teacher and student AP/AP50/AP75 per seed, mean
and spread; ``ratio`` = (c) teacher AP / (a) AP; ``gap_closed`` = ((c) - (a)) / ((b) - (a))),
``quality.md`` (the table), ``quality.png`` (bars) and ``quality_curves.png`` (AP over
iterations of every arm, teacher and student).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = os.path.join("configs", "Shapes")
SEMI_CONFIG = os.path.join(SHAPES, "soft_teacher_R18_FPN_10pct.yaml")
ARMS = {
    "a": ("supervised, 10 % labeled", os.path.join(SHAPES, "supervised_R18_FPN_10pct.yaml"), []),
    "b": ("supervised, 100 % labeled", os.path.join(SHAPES, "supervised_R18_FPN_100pct.yaml"), []),
    "c": ("Soft Teacher, 10 % labeled + 90 % unlabeled", SEMI_CONFIG, []),
    "d": ("(c) without soft background weighting", SEMI_CONFIG, ["SEMI.SOFT_BG_WEIGHT", "False"]),
    "e": ("(c) without box jitter (no unlabeled regression)", SEMI_CONFIG, ["SEMI.BOX_JITTER", "False"]),
}
METRICS = ("AP", "AP50", "AP75")
TARGETS = {"ratio": 1.3, "gap_closed": 0.6}


def read_metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def evaluations(records, model):
    """[(iteration, {AP, AP50, AP75})] of one model ("teacher", "student", or "" for supervised)."""
    prefix = f"{model}/bbox/" if model else "bbox/"
    return [
        (r["iteration"], {m: r[prefix + m] for m in METRICS})
        for r in records
        if prefix + "AP" in r
    ]


def semi_eval_period():
    from softteacher import load_config

    return load_config(os.path.join(REPO, SEMI_CONFIG)).TEST.EVAL_PERIOD


def run_arm(arm, seed, out_root, extra_opts):
    """Train one arm with one seed (unless already done) and return its final evaluations."""
    _, config, opts = ARMS[arm]
    out_dir = os.path.join(out_root, f"{arm}_seed{seed}")
    done = os.path.join(out_dir, "quality_run.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", os.path.join(REPO, config),
           *opts, "SEED", str(seed), "OUTPUT_DIR", out_dir, *extra_opts]
    # the supervised twins evaluate as often as Soft Teacher does, for the curves
    if arm in ("a", "b") and "TEST.EVAL_PERIOD" not in extra_opts:
        cmd += ["TEST.EVAL_PERIOD", str(semi_eval_period())]
    print(f"[quality] arm {arm} seed {seed}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    with open(os.path.join(out_root, f"{arm}_seed{seed}.log"), "w") as log:
        subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
    records = read_metrics(os.path.join(out_dir, "metrics.json"))
    models = ("",) if arm in ("a", "b") else ("teacher", "student")
    curves = {m or "model": evaluations(records, m) for m in models}
    result = {
        "wall_s": round(time.perf_counter() - start, 1),
        "curves": curves,
        "final": {name: curve[-1][1] for name, curve in curves.items()},
    }
    if arm in ("a", "b"):  # one model: it is both "teacher" and "student" in the tables
        result["final"] = {"teacher": result["final"]["model"], "student": result["final"]["model"]}
    with open(done, "w") as f:
        json.dump(result, f, indent=1)
    return result


def summarise(runs):
    """Mean and population spread (max - min) over seeds of every model's metrics."""
    out = {}
    for model in ("teacher", "student"):
        out[model] = {}
        for metric in METRICS:
            values = [r["final"][model][metric] for r in runs.values()]
            out[model][metric] = {
                "mean": round(statistics.fmean(values), 2),
                "spread": round(max(values) - min(values), 2),
            }
    return out


def headline(arms):
    a = arms["a"]["mean"]["teacher"]["AP"]["mean"]
    b = arms["b"]["mean"]["teacher"]["AP"]["mean"]
    c = arms["c"]["mean"]["teacher"]["AP"]["mean"]
    return {"ratio": round(c / a, 4), "gap_closed": round((c - a) / (b - a), 4) if b != a else None}


def write_table(path, arms, top):
    lines = ["| arm | what | teacher AP | AP50 | AP75 | student AP | AP50 | AP75 | seeds |", "|" + "---|" * 9]
    for arm, result in arms.items():
        cells = []
        for model in ("teacher", "student"):
            for metric in METRICS:
                value = result["mean"][model][metric]
                cells.append(f"{value['mean']:.1f}" + (f" ±{value['spread'] / 2:.1f}" if value["spread"] else ""))
        lines.append(f"| ({arm}) | {result['what']} | " + " | ".join(cells) + f" | {len(result['seeds'])} |")
    if top:
        lines += ["", f"ratio (c)/(a) teacher AP: **{top['ratio']:.3f}** (target ≥ {TARGETS['ratio']}); "
                  f"gap closed ((c)−(a))/((b)−(a)): **{top['gap_closed']:.3f}** "
                  f"(target ≥ {TARGETS['gap_closed']})"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot_bars(path, arms):
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(arms)
    for offset, model in ((-0.2, "teacher"), (0.2, "student")):
        means = [arms[n]["mean"][model]["AP"]["mean"] for n in names]
        spreads = [arms[n]["mean"][model]["AP"]["spread"] / 2 for n in names]
        ax.bar([i + offset for i in range(len(names))], means, 0.4, yerr=spreads, label=model, capsize=3)
    ax.set_xticks(range(len(names)), [f"({n})\n" + textwrap.fill(arms[n]["what"], 22) for n in names], fontsize=7)
    ax.set_ylabel("COCO AP on shapes_val")
    ax.set_title("Embedded data: supervised vs Soft Teacher (same model and iterations)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(path, arms):
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm, result in arms.items():
        run = next(iter(result["seeds"].values()))
        for model, curve in run["curves"].items():
            style = "--" if model == "student" else "-"
            last = curve[-1][0]  # the final evaluation is logged at MAX_ITER, the others one before
            ax.plot([min(i + 1, last) for i, _ in curve], [m["AP"] for _, m in curve], style, marker="o",
                    label=f"({arm}) {model}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("AP")
    ax.set_title("AP over training (first seed)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--work-dir", default=os.path.join(REPO, "output", "bench", "quality"))
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    os.makedirs(args.results, exist_ok=True)

    runs = {arm: {} for arm in args.arms}
    for seed in args.seeds:  # every arm once before any arm twice, and results after each run
        for arm in args.arms:
            runs[arm][str(seed)] = run_arm(arm, seed, args.work_dir, args.opts)
            write_results(args, runs)


def write_results(args, runs):
    arms = {
        arm: {"what": ARMS[arm][0], "config": ARMS[arm][1], "overrides": ARMS[arm][2],
              "seeds": done, "mean": summarise(done)}
        for arm, done in runs.items()
        if done
    }
    top = headline(arms) if {"a", "b", "c"} <= set(arms) else {}
    result = {
        **top,
        "targets": TARGETS,
        "met": {k: top[k] is not None and top[k] >= v for k, v in TARGETS.items()} if top else {},
        "arms": arms,
        "overrides": args.opts,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/quality.py " + " ".join(sys.argv[1:]),
    }
    with open(os.path.join(args.results, "quality.json"), "w") as f:
        json.dump(result, f, indent=1)
    write_table(os.path.join(args.results, "quality.md"), arms, top)
    plot_bars(os.path.join(args.results, "quality.png"), arms)
    plot_curves(os.path.join(args.results, "quality_curves.png"), arms)
    with open(os.path.join(args.results, "quality.md")) as f:
        print(f.read(), flush=True)


if __name__ == "__main__":
    main()
