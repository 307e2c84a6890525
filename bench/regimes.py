#!/usr/bin/env python
"""A COCO-like regime for the generated datasets: the label fraction at which a supervised model
started from pretrained features reaches about two thirds of the fully labeled one, and the method
and the paper's ablations measured there.

    python bench/regimes.py [--dataset shapes glyphs] [--seeds 1 2] [--percents 1 2 5 10 100]
                            [--percent P] [--arms soft_teacher ...] [--parallel N] [--report-only]
                            [--eval-score-thresh 0.001] [--ceiling-schedules 1 2 4] [--schedules 1]
                            [--twin-schedules K ...] [--retrain-for-test] [--start scratch]

COCO runs start from ImageNet features, and at 10 % labels the supervised model reaches 66 % of the
fully labeled one (26.9 / 40.9 AP, the Soft Teacher paper's Table 1). Here the start is the other
generated dataset's fully labeled supervised model (bench/quality.py's ``supervised_100pct``, seed
1; trained here when missing, never downloaded): its ResNet (``backbone.bottom_up``) alone, as an
ImageNet file holds only the ResNet, saved as a detectron2 checkpoint that every run loads through
MODEL.WEIGHTS. Shapes start from glyphs and glyphs from shapes. Everything else is bench/quality.py's
config and schedule; the labeled images are fold 1 of each percent, seeds change the training seed.

1. Curve: the supervised twin at every percent of ``--percents``, every seed (100 % first, then in
   the order given).
2. Choice: the percent whose twin's mean teacher AP is closest to 2/3 of the 100 % twin's (or
   ``--percent``).
3. Arms: ``--arms`` (bench/quality.py's arms; by default the published method, plus, the paper's
   ablations, then the opt-ins of later methods) at the chosen percent, every seed and every
   ``--schedules`` (the twin there at ``--twin-schedules``, by default the same). Plus at a longer
   schedule is the mixed recipe's compute-matched control (``compute_matched_plus``), the recipe
   recommended from either start (``gap_closed_recommended``). With
   ``--fractions``, the arms also at those percents and schedules (against the 1x twin there and the
   same ceiling): the points tools/forecast.py's calibration reads.
4. Rescoring: every finished run's final model evaluated once more keeping detections down to
   ``--eval-score-thresh`` (1e-3, as the original reports its best figures), under ``rescored``.

Runs go under ``output/bench/regimes/<dataset>/``; a run finished there or recorded in the result
file is read back, not repeated. Writes ``bench/results/regimes.json`` (start, curves, choice, arms
with seeds and spreads), ``regimes.md``, ``regimes_curves.png`` (the twin against the label fraction),
``regimes_training_<dataset>.png`` (the regime's arms' AP over iterations, first seed) and per dataset the block
``regimes.pretrained_<P>pct`` (``supervised_ratio``, ``gap_closed``, ``gap_closed_plus`` and every arm's
``gap_closed_by_arm``) of ``bench/results/quality.json``.

``--start scratch`` measures the same from random initial weights (the configs' own start, as
bench/quality.py trains them): runs under ``output/bench/regimes_scratch/``, files named
``regimes_scratch*`` and the block ``regimes.scratch_<P>pct``.
"""

import argparse
import contextlib
import fcntl
import json
import os
import re
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import quality
import torch
from quality import PLUS, REPO, plt, save_figure, summarise, table_lines

from softteacher.datasets.splits import split_paths, write_split
from softteacher.datasets.synthetic.glyphs import ensure_glyphs

SOURCE = {"shapes": "glyphs", "glyphs": "shapes"}  # where each dataset's pretrained start comes from
COCO_SUPERVISED_RATIO = 26.9 / 40.9
DEFAULT_ARMS = ("soft_teacher", PLUS, "soft_teacher_alpha_0",  # alpha 0: the EMA teacher's share of the gain
                "soft_teacher_hard_background", "soft_teacher_no_box_jitter",
                "soft_teacher_score_0.7", "soft_teacher_score_0.5",  # the paper's ablations
                "plus",  # the COCO plus configs' recipe: box jitter on
                "soft_teacher_pla", f"{PLUS}_pla", "soft_teacher_mixpl", f"{PLUS}_mixpl",  # later methods' gains
                "soft_teacher_focal", f"{PLUS}_focal", f"{PLUS}_strong_scales")
# (arm, the arm it changes one thing of, the sign its source found for the arm against that one):
# the paper's ablation studies (soft background weighting and box jitter add AP, 0.9 is the best
# pseudo-label threshold), box jitter inside plus, and the later methods' gains
COMPARISONS = (("soft_teacher_hard_background", "soft_teacher", "lower"),
               ("soft_teacher_no_box_jitter", "soft_teacher", "lower"),
               ("soft_teacher_score_0.7", "soft_teacher", "not higher"),
               ("soft_teacher_score_0.5", "soft_teacher", "not higher"),
               ("plus", PLUS, "higher"),
               ("soft_teacher_pla", "soft_teacher", "higher"), (f"{PLUS}_pla", PLUS, "higher"),
               ("soft_teacher_mixpl", "soft_teacher", "higher"), (f"{PLUS}_mixpl", PLUS, "higher"),
               ("soft_teacher_focal", "soft_teacher", "higher"), (f"{PLUS}_focal", PLUS, "higher"),
               (f"{PLUS}_strong_scales", PLUS, "higher"),
               (f"{PLUS}_mixpl_loss_matched", PLUS, "higher"), (f"{PLUS}_mosaic", PLUS, "higher"),
               (f"{PLUS}_mixup", PLUS, "higher"), (f"{PLUS}_label_distribution", PLUS, "higher"),
               (f"{PLUS}_mixpl_label_distribution", f"{PLUS}_mixpl", "higher"),
               (f"{PLUS}_mixpl_erase", f"{PLUS}_mixpl", "higher"))
MIXED = f"{PLUS}_mixpl"  # the mixed recipe: plus's longer schedules are matched to its wall-clock
# the recipe recommended from each start (bench/README.md, section 18): plus trained as long as the
# mixed recipe takes (mixing led that control on neither dataset, pretrained or from random weights)
RECOMMENDED = {"pretrained": "compute_matched_plus", "scratch": "compute_matched_plus"}
KEEP_PREFIX = "backbone.bottom_up."
TWIN_NAME = re.compile(r"^supervised_([0-9.]+)pct$")
START = {"pretrained": "pretrained start", "scratch": "random initial weights"}
_SOURCE_LOCKS = {source: threading.Lock() for source in SOURCE}
_WRITE_LOCK = threading.Lock()


def pretrained_start(dataset, quality_work_dir, work_dir):
    """The ResNet of the other dataset's fully labeled model as a checkpoint (made once)."""
    source = SOURCE[dataset]
    path = os.path.join(work_dir, "pretrained", f"{source}_supervised_100pct_bottom_up.pth")
    with _SOURCE_LOCKS[source]:
        if not os.path.exists(path):
            make_start(source, quality_work_dir, path)
    return path


def file_stem(start):
    """What a start's work dir and result files are named after."""
    return "regimes" if start == "pretrained" else "regimes_scratch"


def work_dir(args):
    return args.work_dir or os.path.join(REPO, "output", "bench", file_stem(args.start))


def result_path(results_dir, start, suffix):
    return os.path.join(results_dir, file_stem(start) + suffix)


def start_title(d):
    return f"pretrained start from {d['source']}" if d.get("source") else START[d.get("start", "pretrained")]


def make_start(source, quality_work_dir, path):
    source_root = os.path.join(quality_work_dir, source)
    os.makedirs(source_root, exist_ok=True)
    quality.prepare_dataset(source)
    quality.run_arm(source, "supervised_100pct", 1, source_root, [])
    state = torch.load(os.path.join(source_root, "supervised_100pct_seed1", "model_final.pth"),
                       map_location="cpu", weights_only=True)["model"]
    kept = {k: v for k, v in state.items() if k.startswith(KEEP_PREFIX)}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({"model": kept, "__source__": f"{source} supervised_100pct seed 1"}, path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


def split_overrides(dataset, percent, semi):
    """Config overrides that train on fold 1's ``percent`` % labeled (and, for ``semi``, the rest
    unlabeled)."""
    if dataset == "shapes":
        labeled = "shapes_train" if percent == 100 else f"shapes_train.1@{percent:g}"
        if semi:
            return ["DATASETS.TRAIN_LABELED", f"('{labeled}',)",
                    "DATASETS.TRAIN_UNLABELED", f"('shapes_train.1@{percent:g}-unlabeled',)"]
        return ["DATASETS.TRAIN", f"('{labeled}',)"]
    train = ensure_glyphs()["train"]
    labeled, unlabeled = split_paths(train, percent, 1)
    if percent == 100:
        labeled = train
    elif not os.path.exists(unlabeled):
        write_split(train, percent, 1)  # as ensure_glyphs writes its 10 % split
    return ["DATASETS.CUSTOM.LABELED_JSON", labeled] + (["DATASETS.CUSTOM.UNLABELED_JSON", unlabeled] if semi else [])


def twin(percent):
    return f"supervised_{percent:g}pct"


class Regime:
    """One dataset's runs from the pretrained start: the curve's twins and the arms."""

    def __init__(self, dataset, args, recorded):
        self.dataset, self.args = dataset, args
        self.root = os.path.join(work_dir(args), dataset)
        self.recorded = recorded  # {run name: {seed: run}} from the result file
        os.makedirs(self.root, exist_ok=True)

    def run(self, name, arm, percent, seed, schedule=1):
        """One run's result: recorded, finished under the work dir, or trained now (also when
        --retrain-for-test and it was recorded without a test figure and its model is gone)."""
        out_dir = os.path.join(self.root, f"{name}_seed{seed}")
        done = os.path.join(out_dir, "quality_run.json")
        if os.path.exists(done):  # finished here: newer than what the result file holds
            with open(done) as f:
                self.recorded.setdefault(name, {})[str(seed)] = json.load(f)
        recorded = self.recorded.get(name, {}).get(str(seed))
        if (recorded is not None and self.args.retrain_for_test and "test" not in recorded
                and not os.path.exists(os.path.join(out_dir, "model_final.pth"))):
            del self.recorded[name][str(seed)]
            recorded = None
        if recorded is None:
            semi = arm not in quality.SUPERVISED
            start = [] if self.args.start == "scratch" else [
                "MODEL.WEIGHTS", pretrained_start(self.dataset, self.args.quality_work_dir, work_dir(self.args))]
            opts = [*start, *split_overrides(self.dataset, percent, semi),
                    *schedule_opts(self.dataset, arm, schedule), *self.args.opts]
            result = quality.run_arm(self.dataset, arm, seed, self.root, opts, run_name=name)
            self.recorded.setdefault(name, {})[str(seed)] = result
        self.test(name, seed)
        self.rescore(name, seed)
        return self.recorded[name][str(seed)]

    def test(self, name, seed):
        """Add the final model's AP on the test split to a run's result, once, where the run's
        folder still holds its final model."""
        result = self.recorded[name][str(seed)]
        if "test" in result:
            return
        out_dir = os.path.join(self.root, f"{name}_seed{seed}")
        metrics = quality.evaluate_on_test(out_dir, self.dataset)
        if metrics is not None:
            result["test"] = metrics
            save_to_run(out_dir, "test", metrics)

    def rescore(self, name, seed):
        """Add the final model's AP at --eval-score-thresh to a run's result, once, where the run's
        folder still holds its final model."""
        thresh = self.args.eval_score_thresh
        result = self.recorded[name][str(seed)]
        if thresh <= 0 or f"{thresh:g}" in result.get("rescored", {}):
            return
        out_dir = os.path.join(self.root, f"{name}_seed{seed}")
        metrics = quality.rescore(out_dir, thresh)
        if metrics is None:
            return
        result.setdefault("rescored", {})[f"{thresh:g}"] = metrics
        save_to_run(out_dir, "rescored", result["rescored"])


def save_to_run(out_dir, key, value):
    """Keep ``value`` under ``key`` in the run folder's result file too (read back on a rerun)."""
    done = os.path.join(out_dir, "quality_run.json")
    if os.path.exists(done):
        with open(done) as f:
            saved = json.load(f)
        saved[key] = value
        dump_json(done, saved)


def schedule_name(name, schedule):
    return name if schedule == 1 else f"{name}_{schedule:g}x"


def schedule_opts(dataset, arm, schedule):
    """The arm's schedule stretched ``schedule`` times: iterations, learning-rate steps, burn-in,
    and the evaluation and checkpoint periods (so every schedule is evaluated as often)."""
    if schedule == 1:
        return []
    from softteacher import load_config

    cfg = load_config(os.path.join(REPO, quality.config_file(dataset, arm)))
    period = round(quality.semi_eval_period(dataset) * schedule)
    opts = ["SOLVER.MAX_ITER", str(round(cfg.SOLVER.MAX_ITER * schedule)),
            "SOLVER.STEPS", str(tuple(round(step * schedule) for step in cfg.SOLVER.STEPS)),
            "TEST.EVAL_PERIOD", str(period), "SOLVER.CHECKPOINT_PERIOD", str(period)]
    if arm not in quality.SUPERVISED:
        opts += ["SEMI.BURN_IN_ITERS", str(round(cfg.SEMI.BURN_IN_ITERS * schedule))]
    return opts


def runs_of(regimes):
    """{run name: {seed: run}} of a dataset's block in regimes.json."""
    runs = {name: dict(block["seeds"]) for name, block in regimes.get("curve", {}).items()}
    for key in ("ceiling", "twin_schedules"):
        for name, block in ((regimes.get(key) or {}).get("runs") or {}).items():
            runs[name] = dict(block["seeds"])
    for block in regimes.get("arms", {}).values():
        runs[block["run"]] = dict(block["seeds"])
    for schedules in (regimes.get("arm_schedules") or {}).values():
        for name, block in schedules["runs"].items():
            runs[name] = dict(block["seeds"])
    for fraction in (regimes.get("fractions") or {}).values():
        for block in fraction["arms"].values():
            runs[block["run"]] = dict(block["seeds"])
    for name, block in (regimes.get("other_runs") or {}).items():
        runs[name] = dict(block["seeds"])
    return runs


def choose(curve, percents, full):
    """The percent whose twin (mean teacher AP) is closest to COCO's 2/3 of the fully labeled twin
    ``full`` (a block: the ceiling), once every percent of the curve has a run (None before)."""
    candidates = [p for p in percents if p != 100]
    if not candidates or full is None or any(twin(p) not in curve for p in candidates):
        return None
    ratios = {p: curve[twin(p)]["mean"]["teacher"]["AP"]["mean"] / full["mean"]["teacher"]["AP"]["mean"]
              for p in candidates}
    percent = min(ratios, key=lambda p: abs(ratios[p] - COCO_SUPERVISED_RATIO))
    return {"percent": percent, "supervised_ratio": round(ratios[percent], 4),
            "ratios": {f"{p:g}": round(r, 4) for p, r in sorted(ratios.items())},
            "target_ratio": round(COCO_SUPERVISED_RATIO, 4)}


def schedule_choice(dataset, runs, base, what):
    """A run (``base``, e.g. the fully labeled twin) at every schedule trained (``base`` is 1x,
    ``base_2x`` twice as long, ...): its val and test teacher AP, and the schedule val chooses
    (the highest val AP; the shortest among equals). None before a run."""
    pattern = re.compile(rf"^{re.escape(base)}(?:_([0-9.]+)x)?$")
    schedules = {}
    for name, seeds in runs.items():
        m = pattern.match(name)
        if not m or not seeds:
            continue
        k = float(m.group(1) or 1)
        tested = [r["test"]["AP"] for r in seeds.values() if "test" in r]
        schedules[f"{k:g}"] = {
            "run": name, "iterations": round(base_iters(dataset) * k), "seeds": sorted(seeds),
            "val_ap": round(statistics.fmean(r["final"]["teacher"]["AP"] for r in seeds.values()), 2),
            "test_ap": round(statistics.fmean(tested), 2) if len(tested) == len(seeds) else None}
    if not schedules:
        return None
    chosen = max(sorted(schedules, key=float), key=lambda k: schedules[k]["val_ap"])
    stretched = {b["run"]: block(b["run"], f"{what}, {k}x schedule", runs[b["run"]])
                 for k, b in schedules.items() if k != "1"}
    return {"schedules": dict(sorted(schedules.items(), key=lambda kv: float(kv[0]))), "chosen": chosen,
            "run": schedules[chosen]["run"], "iterations": schedules[chosen]["iterations"], "runs": stretched}


def ceiling(dataset, runs, start):
    """The fully labeled twin's schedules and the one val chooses: the ceiling (``start``: how the
    runs began, in words)."""
    return schedule_choice(dataset, runs, twin(100), f"supervised, 100 % labeled, {start}")


def base_iters(dataset):
    """SOLVER.MAX_ITER of the dataset's fully labeled twin: one schedule (1x)."""
    from softteacher import load_config

    return load_config(os.path.join(REPO, quality.config_file(dataset, "supervised_100pct"))).SOLVER.MAX_ITER


def final_means(arms, metrics_of):
    """{arm: {AP, AP50, AP75} mean over the seeds that have the metrics ``metrics_of(run)`` gives} and
    {arm: how many seeds that is}, of the arms with at least one."""
    measured = {arm: [m for m in map(metrics_of, b["seeds"].values()) if m is not None] for arm, b in arms.items()}
    means = {arm: {m: round(statistics.fmean(x[m] for x in runs), 2) for m in quality.METRICS}
             for arm, runs in measured.items() if runs}
    return means, {arm: len(measured[arm]) for arm in means}


def gap_figures_of(means, partial, full):
    """quality.gap_figures from {arm: {AP, ...}} means."""
    as_arms = {arm: {"mean": {"teacher": {"AP": {"mean": v["AP"]}}}} for arm, v in means.items()}
    return quality.gap_figures(as_arms, partial=partial, full=full)


def test_figures(arms, partial, full):
    """gap_figures on the test split (teacher AP of each run's final model, mean over the seeds
    evaluated there; their count under ``seeds``)."""
    means, seeds = final_means(arms, lambda run: run.get("test"))
    return {**gap_figures_of(means, partial, full), "teacher_ap": {arm: v["AP"] for arm, v in means.items()},
            "seeds": seeds}


def compute_matched(result, figures):
    """The mixed recipe's compute-matched control: plus at the longer schedule whose training
    wall-clock is nearest the mixed recipe's at 1x (mean over the seeds both ran: a seed's runs
    trained beside the same load), and the gap it closed in ``figures``:
    {compute_matched_plus, compute_matched_plus_schedule, compute_matched_wall_ratio} (its
    wall-clock over the mixed recipe's), or {} before both ran."""
    longer = (result.get("arm_schedules") or {}).get(PLUS)
    if not longer or MIXED not in result["arms"]:
        return {}
    recommended = result["arms"][MIXED]["seeds"]
    candidates = {}  # schedule: (wall-clock ratio, gap closed)
    for k, b in longer["schedules"].items():
        seeds = longer["runs"][b["run"]]["seeds"] if k != "1" else {}
        paired = sorted(set(seeds) & set(recommended))
        closed = figures.get("gap_closed_by_arm", {}).get(schedule_name(PLUS, float(k)))
        if paired and closed is not None:
            candidates[k] = (statistics.fmean(seeds[s]["wall_s"] for s in paired)
                             / statistics.fmean(recommended[s]["wall_s"] for s in paired), closed)
    if not candidates:
        return {}
    k = min(candidates, key=lambda k: abs(candidates[k][0] - 1))
    ratio, closed = candidates[k]
    return {"compute_matched_plus": closed, "compute_matched_plus_schedule": float(k),
            "compute_matched_wall_ratio": round(ratio, 3)}


def use_published_schedule(result, *figures):
    """Each of ``figures`` takes the published method's gap closed at the schedule val chose for it
    (each arm is compared at its val-chosen schedule), naming it ``published_schedule``; unchanged
    before it ran longer or where that schedule has no figure."""
    longer = (result.get("arm_schedules") or {}).get("soft_teacher")
    if not longer:
        return
    k = float(longer["chosen"])
    for f in figures:
        closed = f.get("gap_closed_by_arm", {}).get(schedule_name("soft_teacher", k))
        if closed is not None:
            f.update(gap_closed=closed, published_schedule=k)


def block(name, what, runs):
    return {"what": what, "seeds": runs, "mean": summarise(runs)} if runs else None


def dataset_result(dataset, runs, percents, args):
    start = START[args.start]
    curve = {}
    recorded = {float(m.group(1)) for m in map(TWIN_NAME.match, runs) if m}
    known = set(percents) | recorded
    for p in sorted(known):
        b = block(twin(p), f"supervised, {p:g} % labeled, {start}", runs.get(twin(p), {}))
        if b:
            curve[twin(p)] = {**b, "percent": p}
    top = ceiling(dataset, runs, start)
    full = (top["runs"].get(top["run"]) or curve.get(top["run"])) if top else None
    # the choice reads the whole recorded curve; a training run also waits for the percents it trains
    choice = choose(curve, sorted(recorded | {100} if args.report_only else known), full)
    from_curve = choice or {}
    if args.percent is not None and from_curve.get("percent") != args.percent:
        choice = {**from_curve, "percent": args.percent, "chosen_by": "--percent",
                  "supervised_ratio": from_curve.get("ratios", {}).get(f"{args.percent:g}")}
    out = {"start": args.start, "source": SOURCE[dataset] if args.start == "pretrained" else None,
           "curve": curve, "ceiling": top, "choice": choice, "arms": {}}
    if choice is None:
        return out
    p = choice["percent"]
    out["twin_schedules"] = schedule_choice(dataset, runs, twin(p), f"supervised, {p:g} % labeled, {start}")
    for arm in quality.ARMS:
        name = f"{arm}_{p:g}pct"
        what = quality.ARMS[arm][0].replace("10 % labeled + 90 % unlabeled", f"{p:g} % labeled + the rest unlabeled")
        b = block(name, f"{what}; {start}", runs.get(name, {}))
        if b and arm not in quality.SUPERVISED:
            out["arms"][arm] = {**b, "run": name}
        stretched = schedule_choice(dataset, runs, name, f"{what}; {start}")  # with or without its 1x run
        if stretched and stretched["runs"]:
            out.setdefault("arm_schedules", {})[arm] = stretched
    for q in sorted(known - {p, 100}):  # --fractions: the arms at other fractions, at each schedule run
        arms = {}
        for arm in quality.ARMS:
            if arm in quality.SUPERVISED:
                continue
            name = f"{arm}_{q:g}pct"
            b = block(name, f"{arm}, {q:g} % labeled; {start}", runs.get(name, {}))
            if b:
                arms[arm] = {**b, "run": name}
            stretched = schedule_choice(dataset, runs, name, f"{arm}, {q:g} % labeled; {start}")
            for k, s in (stretched or {}).get("schedules", {}).items():
                if k != "1":
                    arms[schedule_name(arm, float(k))] = {**stretched["runs"][s["run"]], "run": s["run"]}
        if arms and twin(q) in curve:
            out.setdefault("fractions", {})[f"{q:g}"] = {"arms": arms}
    placed = runs_of(out)  # a run of an earlier regime choice, kept (a longer schedule at another fraction)
    others = {name: block(name, "recorded outside the chosen regime", seeds)
              for name, seeds in runs.items() if name not in placed and seeds}
    if others:
        out["other_runs"] = others
    return out


def fraction_figures(d, full, full_block):
    """Gap figures (val and test) of each --fractions block: its arms against the twin at that
    fraction and the regime's ceiling (``full``, its block)."""
    for q, f in (d.get("fractions") or {}).items():
        partial = twin(float(q))
        arms = {partial: d["curve"][partial], full: full_block, **f["arms"]}
        f["figures"] = quality.gap_figures(arms, partial=partial, full=full)
        f["test"] = test_figures(arms, partial=partial, full=full)


def comparisons(arms):
    """Each arm of COMPARISONS that ran against the arm it changes: the change of mean teacher AP
    and AP75, and whether its sign is the source's. A difference within half the two arms' larger
    seed spread (max - min) is "within the seed spread"; with one seed each, every difference counts."""
    out = {}
    for arm, base, source_sign in COMPARISONS:
        if arm not in arms or base not in arms:
            continue
        a, b = arms[arm]["mean"]["teacher"], arms[base]["mean"]["teacher"]
        delta = round(a["AP"]["mean"] - b["AP"]["mean"], 2)
        noise = max(a["AP"]["spread"], b["AP"]["spread"]) / 2
        expected_higher = source_sign == "higher"  # "lower" and "not higher" both expect a drop
        if abs(delta) <= noise:
            verdict = "within the seed spread"
        else:
            verdict = "agrees" if (delta > 0) == expected_higher else "disagrees"
        out[arm] = {"against": base, "delta_ap": delta, "delta_ap75": round(a["AP75"]["mean"] - b["AP75"]["mean"], 2),
                    "source": source_sign, "verdict": verdict,
                    "seeds": min(len(arms[arm]["seeds"]), len(arms[base]["seeds"]))}
    return out


def comparison_lines(rows):
    lines = ["| arm | against | Δ teacher AP | Δ AP75 | source's sign | here | seeds |", "|" + "---|" * 7]
    for arm, r in rows.items():
        lines.append(f"| {arm} | {r['against']} | {r['delta_ap']:+.1f} | {r['delta_ap75']:+.1f} | {r['source']} | "
                     f"{r['verdict']} | {r['seeds']} |")
    return lines


def rescored_figures(arms, partial, full, thresh):
    """Teacher AP (AP50, AP75) at the rescoring threshold, mean over seeds, of the arms whose every
    seed was rescored, and the gap figures from them."""
    if thresh <= 0:
        return None
    key = f"{thresh:g}"
    means, _ = final_means({arm: b for arm, b in arms.items()
                            if all(key in r.get("rescored", {}) for r in b["seeds"].values())},
                           lambda run: run["rescored"][key])
    if not means:
        return None
    return {"score_thresh": thresh, "teacher": means, **gap_figures_of(means, partial, full)}


def schedule_lines(title, block):
    lines = ["", title, "", "| schedule | iterations | val AP | test AP | seeds |", "|---|---|---|---|---|"]
    for k, b in block["schedules"].items():
        test = "—" if b["test_ap"] is None else f"{b['test_ap']:.1f}"
        chosen = " (chosen)" if k == block["chosen"] else ""
        lines.append(f"| {k}x{chosen} | {b['iterations']} | {b['val_ap']:.1f} | {test} | {len(b['seeds'])} |")
    return lines


def test_line(figures):
    aps = ", ".join(f"{arm} {ap:.1f} ({figures['seeds'][arm]} seed{'s' if figures['seeds'][arm] > 1 else ''})"
                    for arm, ap in figures["teacher_ap"].items())
    gaps = "; ".join(f"{k.replace('_', ' ')} {figures[k]:.3f}" for k in ("supervised_ratio", "gap_closed",
                     "gap_closed_plus", "gap_closed_recommended", "compute_matched_plus") if k in figures)
    if "compute_matched_plus" in figures:
        gaps += (f" (plus at {figures['compute_matched_plus_schedule']:g}x, "
                 f"{figures['compute_matched_wall_ratio']:.2f} of the mixed recipe's wall-clock)")
    return f"teacher AP {aps}" + (f"; {gaps}" if gaps else "") + "."


def rescored_line(figures):
    arms = ", ".join(f"{arm} {v['AP']:.1f} ({v['AP50']:.1f}, {v['AP75']:.1f})"
                     for arm, v in figures["teacher"].items())
    gaps = "; ".join(f"{k.replace('_', ' ')} {figures[k]:.3f}"
                     for k in ("gap_closed", "gap_closed_plus") if k in figures)
    return (f"At test score threshold {figures['score_thresh']:g} (the original's best figures), teacher AP "
            f"(AP50, AP75): {arms}" + (f"; {gaps}" if gaps else "") + ".")


def regime_arms(result):
    """The chosen regime's twin, the ceiling and the arms, for the gap figures and the table."""
    partial, full = regime_twins(result)
    stretched = {}
    for key in ("ceiling", "twin_schedules"):
        stretched.update((result.get(key) or {}).get("runs") or {})
    twins = {name: stretched.get(name) or result["curve"].get(name) for name in (partial, full)}
    longer = {schedule_name(arm, float(k)): sched["runs"][b["run"]]
              for arm, sched in (result.get("arm_schedules") or {}).items()
              for k, b in sched["schedules"].items() if k != "1"}
    return {**{name: b for name, b in twins.items() if b}, **result["arms"], **longer}


def regime_twins(result):
    """(partial, full): the run names of the regime's twin and of the ceiling, each at the schedule
    val chose (1x in a block written before schedules were measured)."""
    p = result["choice"]["percent"]
    partial = (result.get("twin_schedules") or {}).get("run", twin(p))
    return partial, (result.get("ceiling") or {}).get("run", twin(100))


def plot_curves(path, datasets):
    """Teacher AP of the supervised twin against the label fraction, per dataset, with COCO's
    two-thirds line and the chosen percent."""
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    for ax, (dataset, d) in zip(axes[0], datasets.items()):
        points = sorted((b["percent"], b["mean"]["teacher"]["AP"]) for b in d["curve"].values())
        if not points:
            continue
        ax.errorbar([p for p, _ in points], [m["mean"] for _, m in points],
                    yerr=[m["spread"] / 2 for _, m in points], marker="o", capsize=3, label="supervised twin")
        if d.get("ceiling"):
            top = d["ceiling"]
            ax.axhline(COCO_SUPERVISED_RATIO * top["schedules"][top["chosen"]]["val_ap"], color="grey", linestyle="--",
                       label=f"2/3 of 100 % at its val-chosen {top['chosen']}x schedule (COCO 10 %'s ratio)")
        if d["choice"]:
            ax.axvline(d["choice"]["percent"], color="green", linestyle=":", label="chosen regime")
        ax.set_xscale("log")
        ax.set_xlabel("labeled images, % of the training pool")
        ax.set_ylabel("AP on val")
        ax.set_title(f"{dataset}: {start_title(d)}")
        ax.legend(fontsize=7)
    save_figure(fig, path)


@contextlib.contextmanager
def results_lock(results_dir):
    """Held while the result files are read and rewritten: by this process's threads and by other
    processes writing to the same folder (one process per dataset)."""
    os.makedirs(results_dir, exist_ok=True)
    with _WRITE_LOCK, open(os.path.join(results_dir, ".regimes.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def dump_json(path, data):
    """Written whole or not at all: a reader never sees half a file."""
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1)
    os.replace(path + ".tmp", path)


def write_results(args, runs_by_dataset):
    with results_lock(args.results):
        _write_results(args, runs_by_dataset)


def _write_results(args, runs_by_dataset):
    result = {"datasets": {}, "coco_supervised_ratio": round(COCO_SUPERVISED_RATIO, 4),
              "overrides": args.opts, "machine": quality.machine(), "date": time.strftime("%Y-%m-%d"),
              "command": "python bench/regimes.py " + " ".join(sys.argv[1:])}
    path = result_path(args.results, args.start, ".json")
    if os.path.exists(path):  # datasets this run does not train (another run may) stay as written
        with open(path) as f:
            written = json.load(f).get("datasets", {})
        result["datasets"] = {d: block for d, block in written.items() if d not in runs_by_dataset}
        for dataset, runs in runs_by_dataset.items():  # and runs another process recorded meanwhile
            for name, seeds in runs_of(written.get(dataset, {})).items():
                runs[name] = {**seeds, **runs.get(name, {})}  # this process's own run wins
    for dataset, runs in runs_by_dataset.items():
        d = dataset_result(dataset, runs, args.percents, args)
        if d["choice"]:
            p = d["choice"]["percent"]
            d["choice"]["regime"] = f"{args.start}_{p:g}pct"
            arms, (partial, full) = regime_arms(d), regime_twins(d)
            d["figures"] = quality.gap_figures(arms, partial=partial, full=full)
            d["test"] = test_figures(arms, partial=partial, full=full)
            use_published_schedule(d, d["figures"], d["test"])
            d["test"]["ceiling_iters"] = (d["ceiling"] or {}).get("iterations")  # None until a ceiling ran
            d["test"].update(compute_matched(d, d["test"]))
            recommended = RECOMMENDED[args.start]
            closed = {**d["test"].get("gap_closed_by_arm", {}), **d["test"]}.get(recommended)
            if closed is not None:
                d["test"]["gap_closed_recommended"], d["test"]["recommended"] = closed, recommended
            quality.plot_curves(result_path(args.results, args.start, f"_training_{dataset}.png"),
                                f"{dataset}, {d['choice']['regime']}", arms)
            update_quality_json(args.results, dataset, d["choice"]["regime"], {**d["figures"], "test": d["test"]})
            d["rescored"] = rescored_figures(arms, partial, full, args.eval_score_thresh)
            fraction_figures(d, full, arms.get(full))
            d["comparisons"] = comparisons(d["arms"])
        result["datasets"][dataset] = d
    result["datasets"] = {d: result["datasets"][d] for d in SOURCE if d in result["datasets"]}  # a stable order
    lines = []
    for dataset, d in result["datasets"].items():
        lines += [f"### {dataset}: {start_title(d)}", "", "Supervised twin by label fraction:", ""]
        lines += table_lines(d["curve"], {})
        if d.get("ceiling"):
            lines += schedule_lines("Fully labeled twin by schedule (the ceiling: the best val AP):", d["ceiling"])
        if d["choice"]:
            lines += ["", f"Regime {d['choice']['regime']}:", ""] + table_lines(regime_arms(d), d["figures"])
            if d.get("twin_schedules"):
                lines += schedule_lines("The regime's twin by schedule:", d["twin_schedules"])
            if d.get("test", {}).get("teacher_ap"):
                lines += ["", "On the test split: " + test_line(d["test"])]
            if d.get("rescored"):
                lines += ["", rescored_line(d["rescored"])]
            for q, f in (d.get("fractions") or {}).items():
                lines += ["", f"At {q} % labeled (val: " + ", ".join(
                    f"{arm} closes {g:.3f}" for arm, g in f["figures"].get("gap_closed_by_arm", {}).items())
                    + "); on the test split: " + test_line(f["test"])]
            if d.get("comparisons"):
                lines += ["", "Each arm against the arm it changes one thing of (teacher AP; the source's sign: "
                              "the paper's ablations, or the gain its later method reported):", ""]
                lines += comparison_lines(d["comparisons"])
        lines.append("")
    dump_json(path, result)
    with open(result_path(args.results, args.start, ".md"), "w") as f:
        f.write("\n".join(lines))
    plot_curves(result_path(args.results, args.start, "_curves.png"), result["datasets"])
    print("\n".join(lines), flush=True)


def update_quality_json(results_dir, dataset, regime, figures):
    path = os.path.join(results_dir, "quality.json")
    data = {"datasets": {}}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    regimes = data.setdefault("datasets", {}).setdefault(dataset, {}).setdefault("regimes", {})
    start = regime.split("_")[0]
    for former in [r for r in regimes if r.startswith(f"{start}_") and r != regime]:  # a regime re-chosen:
        del regimes[former]  # its figures stay in regimes.json (fractions)
    regimes[regime] = figures
    dump_json(path, data)


def recorded_runs(results_dir, start):
    path = result_path(results_dir, start, ".json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {d: runs_of(block) for d, block in json.load(f).get("datasets", {}).items()}


def arm_jobs(args, chosen):
    """The --arms' jobs at each --schedules: at the regime's percent (``chosen``: {dataset: the choice})
    and at each of --fractions."""
    return [(d, schedule_name(f"{arm}_{p:g}pct", k), arm, p, s, k)
            for s in args.seeds for d in args.dataset if chosen[d]
            for p in [chosen[d]["percent"], *(q for q in args.fractions if q != chosen[d]["percent"])]
            for k in args.schedules for arm in args.arms]


def train(regimes, args, runs, jobs):
    """Train (dataset, run name, arm, percent, seed, schedule) jobs, --parallel at once, rewriting the result
    files after each; a failed run is reported and the others go on."""

    def one(job):
        dataset, name, arm, percent, seed, schedule = job
        try:
            regimes[dataset].run(name, arm, percent, seed, schedule)
        except Exception as e:  # noqa: BLE001 - one failed run must not stop the others
            print(f"[regimes] {dataset} {name} seed {seed} failed ({e}); see its log", flush=True)
        write_results(args, runs)

    with ThreadPoolExecutor(args.parallel) as pool:
        list(pool.map(one, jobs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", nargs="+", default=["shapes", "glyphs"], choices=list(SOURCE))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--percents", type=float, nargs="+", default=[1, 2, 5, 10, 100])
    parser.add_argument("--percent", type=float, help="the regime's percent (default: chosen from the curve)")
    parser.add_argument("--arms", nargs="*", default=list(DEFAULT_ARMS),
                        choices=[a for a in quality.ARMS if a not in quality.SUPERVISED])
    parser.add_argument("--ceiling-schedules", type=float, nargs="+", default=[1, 2, 4],
                        help="schedules (multiples of the config's iterations and steps) of the fully labeled "
                             "twin; val chooses the ceiling among them")
    parser.add_argument("--schedules", type=float, nargs="+", default=[1],
                        help="schedules of the arms (at the regime's percent and --fractions) and of the twin at "
                             "the regime's percent (val chooses each one's)")
    parser.add_argument("--twin-schedules", type=float, nargs="+",
                        help="schedules of the twin at the regime's percent (default: --schedules)")
    parser.add_argument("--fractions", type=float, nargs="*", default=[],
                        help="other label fractions (each also in --percents) the --arms train at, each of "
                             "--schedules: the forecast's calibration points (the block `fractions`)")
    parser.add_argument("--retrain-for-test", action="store_true",
                        help="train again a recorded run that has no test figure and no final model left")
    parser.add_argument("--parallel", type=int, default=1, help="runs trained at once")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the result files, train nothing (finished runs are still rescored)")
    parser.add_argument("--eval-score-thresh", type=float, default=1e-3,
                        help="also evaluate each finished run's final model keeping detections down to this "
                             "score, as the original's best figures do (0: not)")
    parser.add_argument("--start", choices=list(START), default="pretrained",
                        help="the runs' initial weights: the other dataset's ResNet, or random (scratch)")
    parser.add_argument("--work-dir", help="where the runs go (default: output/bench/regimes, "
                                           "output/bench/regimes_scratch from scratch)")
    parser.add_argument("--quality-work-dir", default=os.path.join(REPO, "output", "bench", "quality"))
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    args = parser.parse_args()
    if 100 not in args.percents:
        parser.error("--percents needs 100: the fully labeled twin is the curve's reference")
    if any(q not in args.percents or q == 100 for q in args.fractions):
        parser.error("--fractions: each must be one of --percents, under 100 (its twin is the reference)")
    recorded = recorded_runs(args.results, args.start)
    runs = {d: recorded.get(d, {}) for d in args.dataset}
    regimes = {d: Regime(d, args, runs[d]) for d in args.dataset}
    if not args.report_only:
        ceilings = [(d, schedule_name(twin(100), k), "supervised_100pct", 100, s, k)
                    for s in args.seeds for k in args.ceiling_schedules for d in args.dataset]
        curve = [(d, twin(p), "supervised_10pct", p, s, 1) for s in args.seeds for p in args.percents if p != 100
                 for d in args.dataset]
        train(regimes, args, runs, curve + ceilings)  # the twins first: the regime's choice reads them
        chosen = {d: dataset_result(d, runs[d], args.percents, args)["choice"] for d in args.dataset}
        stretched_twins = [(d, schedule_name(twin(chosen[d]["percent"]), k), "supervised_10pct", chosen[d]["percent"],
                            s, k) for s in args.seeds for k in (args.twin_schedules or args.schedules) if k != 1
                           for d in args.dataset if chosen[d]]
        train(regimes, args, runs, stretched_twins + arm_jobs(args, chosen))
    for d in args.dataset:  # runs finished before rescoring or the test split existed
        for name, seeds in runs[d].items():
            for seed in seeds:
                try:
                    regimes[d].test(name, seed)
                    regimes[d].rescore(name, seed)
                except Exception as e:  # noqa: BLE001 - the result files are still written
                    print(f"[regimes] rescoring {d} {name} seed {seed} failed ({e})", flush=True)
    write_results(args, runs)


if __name__ == "__main__":
    main()
