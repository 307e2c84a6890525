#!/usr/bin/env python
"""The semi-supervised gain on two generated datasets: the same model, iterations and seeds per arm.

    python bench/quality.py [--dataset shapes glyphs] [--seeds 1 2] [--arms soft_teacher ...] [--parallel N]
                            [--report-only] [KEY VALUE ...]

Per dataset (``shapes``: the embedded data; ``glyphs``: printed characters, registered through
DATASETS.CUSTOM as a user's own data would be), the arms of ``ARMS``: the supervised twins on 10 %
and 100 % (labeled images augmented as Soft Teacher's labeled stream), Soft Teacher as published
on 10 % + the other 90 % unlabeled, its ablations (hard background, no box jitter, alpha 0), the
"plus, no box jitter" recipe (uncertain detections ignored, no unlabeled regression) and its
variants, and the adaptive box jitter variants. Every run is ``train_net.py`` in its own process
under ``output/bench/quality/<dataset>/<arm>_seed<seed>``; a finished run is read back, not
repeated, so an interrupted benchmark continues; runs already recorded in the result file and
absent from the work dir (another machine's) stay in it. ``--parallel N`` trains N runs at once
(on 2 cores, 1). Trailing KEY VALUE pairs go to every run (e.g. ``SOLVER.MAX_ITER 400``).

Writes ``bench/results/quality.json``: per dataset (``datasets.<name>``) every arm's teacher and
student AP/AP50/AP75 per seed with mean and spread, ``gap_closed`` ((soft_teacher - supervised_10pct)
/ (supervised_100pct - supervised_10pct), teacher AP), ``gap_closed_plus`` (the same for
plus_no_box_jitter), ``ratio`` (soft_teacher / supervised_10pct), ``jitter_gain_ap75``
(adaptive_box_jitter_unturned - soft_teacher_no_box_jitter, AP75) and ``jitter_gain_ap75_faithful``
(soft_teacher - soft_teacher_no_box_jitter), and per Soft Teacher arm the first seed's
classification pseudo-box recall, precision, boxes and ignored regions an image over iterations
800-1,600, 1,600-2,400, 2,400-3,200. Also ``quality.md`` (tables), ``quality.png`` (bars) and
``quality_curves_<dataset>.png`` (AP over iterations of every arm, first seed).
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
from concurrent.futures import ThreadPoolExecutor

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = {"shapes": os.path.join("configs", "Shapes"), "glyphs": os.path.join("configs", "Glyphs")}
SEMI_CONFIG = "soft_teacher_R18_FPN_10pct.yaml"
PLUS_CONFIG = "soft_teacher_plus_no_box_jitter_R18_FPN_10pct.yaml"
MIXED_CONFIG = "soft_teacher_plus_no_box_jitter_mixpl_R18_FPN_10pct.yaml"  # PLUS_CONFIG + PSEUDO_MIXING
ADAPTIVE_JITTER = ["SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH.ENABLED", "True"]
IGNORE_UNCERTAIN = ["SEMI.IGNORE_UNCERTAIN", "True", "MODEL.PROPOSAL_GENERATOR.NAME", "PseudoLabelRPN"]
PREDICTION_GUIDED = ["SEMI.PREDICTION_GUIDED_ASSIGNMENT.ENABLED", "True"]
PSEUDO_MIXING = ["SEMI.PSEUDO_MIXING.MOSAIC", "True", "SEMI.PSEUDO_MIXING.MIXUP", "True"]
PLUS = "plus_no_box_jitter"
ARMS = {
    "supervised_10pct": ("supervised, 10 % labeled", "supervised_R18_FPN_10pct.yaml", []),
    "supervised_100pct": ("supervised, 100 % labeled", "supervised_R18_FPN_100pct.yaml", []),
    "soft_teacher": ("Soft Teacher as published, 10 % labeled + 90 % unlabeled", SEMI_CONFIG, []),
    "soft_teacher_hard_background": ("soft_teacher without soft background weighting", SEMI_CONFIG,
                                     ["SEMI.SOFT_BG_WEIGHT", "False"]),
    "soft_teacher_no_box_jitter": ("soft_teacher without box jitter (no unlabeled regression)", SEMI_CONFIG,
                                   ["SEMI.BOX_JITTER", "False"]),
    PLUS: ("soft_teacher_no_box_jitter with uncertain detections (0.3-0.9) ignored, not background",
           PLUS_CONFIG, []),
    "plus": ("soft_teacher with uncertain detections (0.3-0.9) ignored, box jitter on: the COCO and VOC plus "
             "configs' recipe", SEMI_CONFIG, IGNORE_UNCERTAIN + ["SEMI.IGNORE_MIN_SCORE", "0.3"]),
    f"{PLUS}_ignore_from_0.5": (f"{PLUS} ignoring uncertain detections only down to 0.5", PLUS_CONFIG,
                                ["SEMI.IGNORE_MIN_SCORE", "0.5"]),
    "soft_teacher_ignore_uncertain": ("soft_teacher with uncertain detections (0.5-0.9) ignored, not background",
                                      SEMI_CONFIG, IGNORE_UNCERTAIN),
    f"{PLUS}_alpha_decay": (f"{PLUS} with alpha decayed to 0 over the last 800 iterations", PLUS_CONFIG,
                            ["SEMI.UNSUP_WEIGHT_DECAY_ITERS", "800"]),
    f"{PLUS}_translate_only": (f"{PLUS} with strong views only translated, never rotated or sheared",
                               PLUS_CONFIG, ["INPUT.STRONG.GEOMETRIC_OPS", "('translate_x', 'translate_y')"]),
    f"{PLUS}_burn_in_1600": (f"{PLUS} with a supervised burn-in of 1,600 iterations (half the run), not 800",
                             PLUS_CONFIG, ["SEMI.BURN_IN_ITERS", "1600"]),
    f"{PLUS}_ema_during_burn_in": (f"{PLUS} with a teacher that averages the student during the burn-in too",
                                   PLUS_CONFIG, ["SEMI.EMA_DURING_BURN_IN", "True"]),
    "soft_teacher_score_0.7": ("soft_teacher with RPN and classification pseudo-boxes above 0.7, not 0.9",
                               SEMI_CONFIG, ["SEMI.RPN_PSEUDO_THRESH", "0.7", "SEMI.CLS_PSEUDO_THRESH", "0.7"]),
    "soft_teacher_score_0.5": ("soft_teacher with RPN and classification pseudo-boxes above 0.5, not 0.9",
                               SEMI_CONFIG, ["SEMI.RPN_PSEUDO_THRESH", "0.5", "SEMI.CLS_PSEUDO_THRESH", "0.5"]),
    "soft_teacher_focal": ("soft_teacher with a focal unlabeled classification loss (gamma 1.5, Unbiased Teacher's)",
                           SEMI_CONFIG, ["SEMI.UNSUP_CLS_FOCAL_GAMMA", "1.5"]),
    f"{PLUS}_focal": (f"{PLUS} with a focal unlabeled classification loss (gamma 1.5)", PLUS_CONFIG,
                      ["SEMI.UNSUP_CLS_FOCAL_GAMMA", "1.5"]),
    f"{PLUS}_strong_scales": (f"{PLUS} with strong views of their own scale (short side 96-160, the weak 128)",
                              PLUS_CONFIG, ["INPUT.STRONG.MIN_SIZE_TRAIN", "(96, 160)"]),
    "soft_teacher_pla": ("soft_teacher with PseCo's prediction-guided label assignment and consistency voting",
                         SEMI_CONFIG, PREDICTION_GUIDED + ["SEMI.CONSISTENCY_VOTING", "True"]),
    f"{PLUS}_pla": (f"{PLUS} with PseCo's prediction-guided label assignment", PLUS_CONFIG, PREDICTION_GUIDED),
    "soft_teacher_mixpl": ("soft_teacher with MixPL's mixed pseudo-labels (a mosaic and mixups of cached views)",
                           SEMI_CONFIG, PSEUDO_MIXING),
    f"{PLUS}_mixpl": (f"{PLUS} with MixPL's mixed pseudo-labels", MIXED_CONFIG, []),
    f"{PLUS}_mixpl_loss_matched": (f"{PLUS}_mixpl with alpha halved: its unlabeled loss weights (alpha x (1 + 0.5 "
                                   "+ 0.5)) sum to plus's alpha", MIXED_CONFIG, ["SEMI.UNSUP_WEIGHT", "1.0"]),
    f"{PLUS}_mixpl_erase": (f"{PLUS}_mixpl with MixPL's erasing of mixed views (1-5 patches, boxes 70 % erased "
                            "dropped)", MIXED_CONFIG, ["SEMI.PSEUDO_MIXING.ERASE_PATCHES", "(1, 5)"]),
    f"{PLUS}_mosaic": (f"{PLUS} with MixPL's mosaic only", PLUS_CONFIG, ["SEMI.PSEUDO_MIXING.MOSAIC", "True"]),
    f"{PLUS}_mixup": (f"{PLUS} with MixPL's mixup only", PLUS_CONFIG, ["SEMI.PSEUDO_MIXING.MIXUP", "True"]),
    f"{PLUS}_label_distribution": (
        f"{PLUS} with per-class thresholds from the labeled class distribution (LabelMatch)", PLUS_CONFIG,
        ["SEMI.LABEL_DISTRIBUTION_THRESH.ENABLED", "True"]),
    f"{PLUS}_mixpl_label_distribution": (
        f"{PLUS}_mixpl with per-class thresholds from the labeled class distribution (LabelMatch)", MIXED_CONFIG,
        ["SEMI.LABEL_DISTRIBUTION_THRESH.ENABLED", "True"]),
    "soft_teacher_alpha_0": ("soft_teacher with alpha 0: supervised training with an EMA teacher", SEMI_CONFIG,
                             ["SEMI.UNSUP_WEIGHT", "0.0"]),
    "adaptive_box_jitter": ("soft_teacher with adaptive box jitter: the less uncertain half of the confident "
                            "pseudo-boxes", SEMI_CONFIG, ADAPTIVE_JITTER),
    "adaptive_box_jitter_unturned": ("adaptive_box_jitter regressing only in strong views that are not rotated "
                                     "or sheared", SEMI_CONFIG,
                                     ADAPTIVE_JITTER + ["SEMI.REG_SKIP_TURNED_VIEWS", "True"]),
    "adaptive_box_jitter_all_scores": ("adaptive_box_jitter choosing among all pseudo-boxes (score > 0.5)",
                                       SEMI_CONFIG,
                                       ADAPTIVE_JITTER + ["SEMI.ADAPTIVE_REG_UNCERTAINTY_THRESH.MIN_SCORE", "0.5"]),
    "adaptive_box_jitter_unturned_adaptive_scores": (
        "adaptive_box_jitter_unturned with adaptive score thresholds", SEMI_CONFIG,
        ADAPTIVE_JITTER + ["SEMI.REG_SKIP_TURNED_VIEWS", "True", "SEMI.ADAPTIVE_SCORE_THRESH.ENABLED", "True"]),
}
# the letters of release 0.1's result files
LEGACY_ARM_NAMES = {
    "a": "supervised_10pct", "b": "supervised_100pct", "c": "soft_teacher", "d": "soft_teacher_hard_background",
    "e": "soft_teacher_no_box_jitter", "f": PLUS, "g": "adaptive_box_jitter_unturned_adaptive_scores",
    "h": f"{PLUS}_alpha_decay", "i": "adaptive_box_jitter_all_scores", "j": "adaptive_box_jitter",
    "k": "soft_teacher_ignore_uncertain", "l": "adaptive_box_jitter_unturned", "m": f"{PLUS}_ignore_from_0.5",
    "n": f"{PLUS}_translate_only", "q": "soft_teacher_alpha_0", "r": f"{PLUS}_burn_in_1600",
    "s": f"{PLUS}_ema_during_burn_in",
}
SUPERVISED = ("supervised_10pct", "supervised_100pct")
METRICS = ("AP", "AP50", "AP75")
TARGETS = {"ratio": 1.3, "gap_closed": 0.6}
PLUS_TARGETS = {"gap_closed_plus": 0.75, "jitter_gain_ap75": 1.0}


def read_metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def evaluations(records, model):
    """[(iteration, {AP, AP50, AP75})] of one model ("teacher", "student", or "" for supervised)."""
    prefix = f"{model}/bbox/" if model else "bbox/"
    # a resumed run evaluates again the iterations after its last checkpoint: the later one counts
    found = {r["iteration"]: {m: r[prefix + m] for m in METRICS} for r in records if prefix + "AP" in r}
    return sorted(found.items())


def config_file(dataset, arm):
    return os.path.join(DATASETS[dataset], ARMS[arm][1])


def semi_eval_period(dataset):
    from softteacher import load_config

    return load_config(os.path.join(REPO, config_file(dataset, "soft_teacher"))).TEST.EVAL_PERIOD


def prepare_dataset(dataset):
    """Generate a dataset's files before its runs start (the embedded one is generated on use)."""
    if dataset == "glyphs":
        from softteacher.datasets.synthetic.glyphs import ensure_glyphs

        ensure_glyphs()


def run_arm(dataset, arm, seed, out_root, extra_opts, run_name=None):
    """Train one arm with one seed (unless already done) and return its final evaluations; the run
    is ``<run_name or arm>_seed<seed>`` under ``out_root``."""
    opts = ARMS[arm][2]
    run_name = run_name or arm
    out_dir = os.path.join(out_root, f"{run_name}_seed{seed}")
    done = os.path.join(out_dir, "quality_run.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    # --resume: a run stopped part-way (a session's end) continues from its last checkpoint
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--resume", "--config-file",
           os.path.join(REPO, config_file(dataset, arm)), *opts, "SEED", str(seed), "OUTPUT_DIR", out_dir,
           "SOLVER.CHECKPOINT_PERIOD", str(semi_eval_period(dataset)), *extra_opts]
    # the supervised twins evaluate as often as Soft Teacher does, for the curves
    if arm in SUPERVISED and "TEST.EVAL_PERIOD" not in extra_opts:
        cmd += ["TEST.EVAL_PERIOD", str(semi_eval_period(dataset))]
    print(f"[quality] {dataset} {run_name} seed {seed}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    with open(os.path.join(out_root, f"{run_name}_seed{seed}.log"), "a") as log:
        subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
    records = read_metrics(os.path.join(out_dir, "metrics.json"))
    models = ("",) if arm in SUPERVISED else ("teacher", "student")
    curves = {m or "model": evaluations(records, m) for m in models}
    result = {
        "wall_s": round(time.perf_counter() - start, 1),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "curves": curves,
        "final": {name: curve[-1][1] for name, curve in curves.items()},
    }
    if arm in SUPERVISED:  # one model: it is both "teacher" and "student" in the tables
        result["final"] = {"teacher": result["final"]["model"], "student": result["final"]["model"]}
    with open(done, "w") as f:
        json.dump(result, f, indent=1)
    return result


def rescore(out_dir, thresh):
    """AP, AP50, AP75 of a finished run's final model (the teacher of a Soft Teacher run) evaluated
    with TEST.EVAL_SCORE_THRESH ``thresh``, or None without a final model. The original reports its
    best figures keeping detections down to 1e-3 (its README); training evaluates at 0.05."""
    return evaluate_final(out_dir, f"eval_score_thresh_{thresh:g}", ["TEST.EVAL_SCORE_THRESH", str(thresh)],
                          f"at score threshold {thresh:g}")


def test_split_opts(dataset):
    """Overrides that evaluate on the dataset's test split: images no choice is made on."""
    if dataset == "glyphs":
        from softteacher.datasets.synthetic.glyphs import default_glyphs_root

        root = default_glyphs_root()
        return ["DATASETS.CUSTOM.TEST_JSON", os.path.join(root, "annotations", "instances_test.json"),
                "DATASETS.CUSTOM.TEST_IMAGES", os.path.join(root, "test"), "DATASETS.TEST", "('glyphs_test',)"]
    return ["DATASETS.TEST", f"('{dataset}_test',)"]


def evaluate_on_test(out_dir, dataset):
    """AP, AP50, AP75 of a finished run's final model on the test split (None without one)."""
    prepare_dataset(dataset)
    return evaluate_final(out_dir, "eval_test", test_split_opts(dataset), "on the test split")


def evaluate_final(out_dir, eval_name, opts, what):
    """``train_net.py --eval-only`` of a run's final model with ``opts``; its AP, AP50, AP75."""
    weights = os.path.join(out_dir, "model_final.pth")
    if not os.path.exists(weights):
        return None
    eval_dir = os.path.join(out_dir, eval_name)
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--eval-only", "--config-file",
           os.path.join(out_dir, "config.yaml"), "MODEL.WEIGHTS", weights, "OUTPUT_DIR", eval_dir, *opts]
    print(f"[quality] evaluating {out_dir} {what}", flush=True)
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    os.makedirs(eval_dir, exist_ok=True)
    with open(os.path.join(eval_dir, "eval.log"), "w") as log:
        log.write(out.stdout + out.stderr)
    out.check_returncode()
    return copypaste_metrics(out.stdout + out.stderr)


def copypaste_metrics(log_text):
    """AP, AP50, AP75 of the last bbox evaluation detectron2 printed ("copypaste:" lines)."""
    rows = [line.split("copypaste: ", 1)[1].strip() for line in log_text.splitlines() if "copypaste: " in line]
    for i in range(len(rows) - 3, -1, -1):
        if rows[i] == "Task: bbox":
            values = dict(zip(rows[i + 1].split(","), map(float, rows[i + 2].split(","))))
            return {metric: values[metric] for metric in METRICS}
    raise ValueError("no bbox evaluation in the log")


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


def machine():
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return f"{platform.machine()}, {os.cpu_count()} cores, {device}"


def teacher(arms, arm, metric="AP"):
    return arms[arm]["mean"]["teacher"][metric]["mean"] if arm in arms else None


def gap_figures(arms, partial="supervised_10pct", full="supervised_100pct"):
    """supervised_ratio (partial twin / fully labeled twin), gap_closed (soft_teacher),
    gap_closed_plus (plus_no_box_jitter) and gap_closed_by_arm (every semi-supervised arm), teacher
    AP, where their arms have run."""
    out = {}
    a, b = teacher(arms, partial), teacher(arms, full)
    if a is not None and b:
        out["supervised_ratio"] = round(a / b, 4)
    if a is None or b is None or b == a:
        return out
    by_arm = {arm: round((teacher(arms, arm) - a) / (b - a), 4) for arm in arms if arm not in (partial, full)}
    for key, arm in (("gap_closed", "soft_teacher"), ("gap_closed_plus", PLUS)):
        if arm in by_arm:
            out[key] = by_arm[arm]
    if by_arm:
        out["gap_closed_by_arm"] = by_arm
    return out


def dataset_summary(arms):
    """gap_closed, gap_closed_plus, ratio and the box jitter gains, where their arms have run."""
    out = {k: v for k, v in gap_figures(arms).items() if k not in ("supervised_ratio", "gap_closed_by_arm")}
    a = teacher(arms, "supervised_10pct")
    if a is not None and "soft_teacher" in arms:
        out["ratio"] = round(teacher(arms, "soft_teacher") / a, 4)
    gains = (("jitter_gain_ap75", ("adaptive_box_jitter_unturned", "soft_teacher_no_box_jitter")),
             ("jitter_gain_ap75_faithful", ("soft_teacher", "soft_teacher_no_box_jitter")))
    for key, (with_jitter, without) in gains:
        if with_jitter in arms and without in arms:
            out[key] = round(teacher(arms, with_jitter, "AP75") - teacher(arms, without, "AP75"), 2)
    return out


def table_lines(arms, summary):
    lines = ["| arm | what | teacher AP | AP50 | AP75 | student AP | AP50 | AP75 | seeds |", "|" + "---|" * 9]
    for arm, result in arms.items():
        cells = []
        for model in ("teacher", "student"):
            for metric in METRICS:
                value = result["mean"][model][metric]
                cells.append(f"{value['mean']:.1f}" + (f" ±{value['spread'] / 2:.1f}" if value["spread"] else ""))
        lines.append(f"| {arm} | {result['what']} | " + " | ".join(cells) + f" | {len(result['seeds'])} |")
    words = {"supervised_ratio": "supervised twin / fully labeled twin AP",
             "gap_closed": "gap closed by soft_teacher", "gap_closed_plus": f"gap closed by {PLUS}",
             "ratio": "soft_teacher / supervised_10pct AP",
             "jitter_gain_ap75": "adaptive box jitter's AP75 gain "
                                 "(adaptive_box_jitter_unturned - soft_teacher_no_box_jitter)",
             "jitter_gain_ap75_faithful": "box jitter's AP75 gain (soft_teacher - soft_teacher_no_box_jitter)"}
    if summary:
        lines += ["", "; ".join(f"{words[k]}: **{v:+.2f}**" if k.startswith("jitter") else f"{words[k]}: **{v:.3f}**"
                                for k, v in summary.items() if k in words)]
    if "gap_closed_by_arm" in summary:
        lines += ["", "Gap closed by each arm: " + ", ".join(f"{arm} {v:.3f}"
                                                          for arm, v in summary["gap_closed_by_arm"].items())]
    return lines


def pseudo_label_lines(arms):
    lines = []
    for arm, result in arms.items():
        key = next((k for k in result if k.startswith("pseudo_labels_seed")), None)
        if key is None:
            continue
        phases = result[key]
        parts = [f"{name}: " + ", ".join(f"{k.replace('_cls', '')} {v:.2f}" for k, v in means.items())
                 for name, means in phases.items()]
        lines.append(f"- {arm}, seed {key.rpartition('seed')[2]}: " + "; ".join(parts))
    return ["", "Classification pseudo-boxes by iterations (mean of the logged values):", ""] + lines if lines else []


def save_figure(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_bars(path, datasets):
    fig, axes = plt.subplots(1, len(datasets), figsize=(8 * len(datasets), 4.5), squeeze=False)
    for ax, (dataset, arms) in zip(axes[0], datasets.items()):
        names = list(arms)
        for offset, model in ((-0.2, "teacher"), (0.2, "student")):
            means = [arms[n]["mean"][model]["AP"]["mean"] for n in names]
            spreads = [arms[n]["mean"][model]["AP"]["spread"] / 2 for n in names]
            ax.bar([i + offset for i in range(len(names))], means, 0.4, yerr=spreads, label=model, capsize=3)
        ax.set_xticks(range(len(names)), [textwrap.fill(n.replace("_", " "), 14) for n in names], fontsize=6)
        ax.set_ylabel(f"COCO AP on {dataset} val")
        ax.set_title(f"{dataset}: supervised vs Soft Teacher vs plus (same model and iterations)")
        ax.legend()
    save_figure(fig, path)


def plot_curves(path, dataset, arms):
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # one colour an arm, for up to 20 arms
    for arm, result in arms.items():
        run = next(iter(result["seeds"].values()))
        for model, curve in run["curves"].items():
            if model == "student":
                continue
            last = curve[-1][0]  # the final evaluation is logged at MAX_ITER, the others one before
            ax.plot([min(i + 1, last) for i, _ in curve], [m["AP"] for _, m in curve], marker="o",
                    label=f"{arm} {model}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("AP")
    ax.set_title(f"{dataset}: AP over training (teacher or supervised model, first seed)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_figure(fig, path)


PSEUDO_LABEL_KEYS = ("recall_cls", "precision_cls", "pseudo_boxes_cls", "ignored_boxes_cls")


def pseudo_label_phases(metrics_path, phases=((800, 1600), (1600, 2400), (2400, 3200))):
    """Mean classification pseudo-box recall, precision, boxes and ignored regions an image over
    each phase of iterations, from a run's metrics.json (None: not logged)."""
    if not os.path.exists(metrics_path):
        return None
    records = read_metrics(metrics_path)
    out = {}
    for low, high in phases:
        phase = [r for r in records if low <= r.get("iteration", -1) < high]
        means = {}
        for key in PSEUDO_LABEL_KEYS:
            values = [r[f"semi/{key}"] for r in phase if f"semi/{key}" in r]
            if values:
                means[key] = round(statistics.fmean(values), 3)
        if means:
            out[f"{low}-{high}"] = means
    return out or None


def run_folder(work_dir, dataset, arm, seed):
    """A finished run's folder: named after its arm, or after the arm's letter in release 0.1."""
    letters = {name: letter for letter, name in LEGACY_ARM_NAMES.items()}
    for name in (arm, letters.get(arm)):
        folder = os.path.join(work_dir, dataset, f"{name}_seed{seed}")
        if name and os.path.isdir(folder):
            return folder
    return os.path.join(work_dir, dataset, f"{arm}_seed{seed}")


SCRATCH_REGIME = "scratch_10pct"  # this script's regime: random initial weights, 10 % labeled


def recorded_datasets(results_dir):
    """The ``datasets`` blocks of the current quality.json ({} if none): rewriting the file keeps
    the runs recorded there and the regimes bench/regimes.py writes."""
    path = os.path.join(results_dir, "quality.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f).get("datasets", {})


def collect(work_dir, dataset, recorded_arms):
    """Every finished run of a dataset: those under the work dir, and those of ``recorded_arms``
    (the result file's) that the work dir lacks (runs of other machines or sessions).
    Returns {arm: {seed: run}}."""
    root = os.path.join(work_dir, dataset)
    runs = {arm: dict(block["seeds"]) for arm, block in recorded_arms.items()}
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        arm, _, seed = name.partition("_seed")
        arm = LEGACY_ARM_NAMES.get(arm, arm)
        done = os.path.join(root, name, "quality_run.json")
        if arm in ARMS and os.path.exists(done):
            with open(done) as f:
                runs.setdefault(arm, {})[seed] = json.load(f)
    return {arm: runs[arm] for arm in ARMS if arm in runs}  # in the arms' order


def write_results(args):
    datasets, previous = {}, recorded_datasets(args.results)
    for dataset in DATASETS:
        recorded = previous.get(dataset, {}).get("arms", {})
        runs = collect(args.work_dir, dataset, recorded)
        arms = {
            arm: {"what": ARMS[arm][0], "config": config_file(dataset, arm), "overrides": ARMS[arm][2],
                  "seeds": done, "mean": summarise(done)}
            for arm, done in runs.items()
        }
        for arm, done in runs.items():  # the first seed's pseudo-labels, from its log or as recorded
            key = "pseudo_labels_seed" + min(done)
            folder = run_folder(args.work_dir, dataset, arm, min(done))
            phases = pseudo_label_phases(os.path.join(folder, "metrics.json")) or recorded.get(arm, {}).get(key)
            if phases and arm not in SUPERVISED:
                arms[arm][key] = phases
        if arms:
            regimes = previous.get(dataset, {}).get("regimes", {})
            if "test" not in regimes.get(SCRATCH_REGIME, {}):  # else bench/regimes.py --start scratch measured it
                regimes[SCRATCH_REGIME] = gap_figures(arms)
            datasets[dataset] = {**dataset_summary(arms), "regimes": regimes, "arms": arms}
    shapes = datasets.get("shapes", {})
    top = {k: shapes[k] for k in ("ratio", "gap_closed") if k in shapes}
    result = {
        **top,
        "targets": TARGETS,
        "met": {k: top[k] >= v for k, v in TARGETS.items() if k in top},
        "arms": shapes.get("arms", {}),
        "datasets": datasets,
        "plus_targets": PLUS_TARGETS,
        "plus_met": {f"{d}/{k}": v[k] >= t for d, v in datasets.items() for k, t in PLUS_TARGETS.items() if k in v},
        "overrides": args.opts,
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/quality.py " + " ".join(sys.argv[1:]),
    }
    write_report(result, args.results)


def write_report(result, results_dir):
    """quality.json, quality.md (tables), quality.png (bars) and quality_curves_<dataset>.png."""
    with open(os.path.join(results_dir, "quality.json"), "w") as f:
        json.dump(result, f, indent=1)
    datasets = result["datasets"]
    lines = []
    for dataset, block in datasets.items():
        summary = {k: v for k, v in block.items() if k not in ("arms", "regimes")}
        lines += [f"### {dataset}", ""] + table_lines(block["arms"], summary) + pseudo_label_lines(block["arms"]) + [""]
        plot_curves(os.path.join(results_dir, f"quality_curves_{dataset}.png"), dataset, block["arms"])
    with open(os.path.join(results_dir, "quality.md"), "w") as f:
        f.write("\n".join(lines))
    if datasets:
        plot_bars(os.path.join(results_dir, "quality.png"), {d: b["arms"] for d, b in datasets.items()})
    print("\n".join(lines), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", nargs="+", default=["shapes"], choices=list(DATASETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--parallel", type=int, default=1, help="runs trained at once")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the result files from the finished runs, train nothing")
    parser.add_argument("--work-dir", default=os.path.join(REPO, "output", "bench", "quality"))
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    args = parser.parse_args()
    os.makedirs(args.results, exist_ok=True)
    if args.report_only:
        write_results(args)
        return
    for dataset in args.dataset:
        os.makedirs(os.path.join(args.work_dir, dataset), exist_ok=True)
        prepare_dataset(dataset)
    # every arm once before any arm twice; results rewritten after each run
    jobs = [(d, arm, seed) for seed in args.seeds for d in args.dataset for arm in args.arms]

    def run(job):
        dataset, arm, seed = job
        try:
            run_arm(dataset, arm, seed, os.path.join(args.work_dir, dataset), args.opts)
        except subprocess.CalledProcessError as e:
            print(f"[quality] {dataset} arm {arm} seed {seed} failed ({e}); see its log", flush=True)
        write_results(args)

    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(run, jobs))


if __name__ == "__main__":
    main()
