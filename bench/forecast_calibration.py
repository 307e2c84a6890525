#!/usr/bin/env python
"""The calibration of tools/forecast.py, from runs already recorded, and its leave-one-dataset-out
errors.

    python bench/forecast_calibration.py

Reads ``bench/results/regimes.json`` (pretrained start: the supervised twin at 1, 2, 5, 10 and
100 %, the recipes at the COCO-like fraction and at bench/regimes.py's ``--fractions``) and
``regimes_scratch.json`` (the same from random weights) or, where that has no point,
``quality.json`` (from scratch: the twins at 10 and 100 %, the recipes at 10 %). For each point,
the gap (fully labeled twin minus the partial one) and the share of it each recipe closed (teacher
AP, mean of the recorded seeds).

Leave one dataset out:
- gain: each relation of ``softteacher.forecast.RELATIONS`` (gain = k * f(gap, fully labeled AP)),
  k measured on the other dataset (same start), against the gain measured here; within target when
  the error is at most half the measured gain or 1.5 AP. The calibration keeps the relation with
  the fewest misses, the simplest (first) on a tie;
- ceiling: each learning curve of ``softteacher.forecast.CURVES`` fitted to the twin's points at and
  under a fraction (at least three), and to the parts tools/forecast.py trained (``--tool-forecasts``;
  by default its forecast.json files kept in ``bench/results/forecast_runs/``), extrapolated to
  every training image, against the fully labeled twin (the ceiling);
- more labels: the same fits at each recorded twin up to 4x beyond the largest part fitted.
For each of the two uses (``softteacher.forecast.USES``) the calibration keeps the curve with the
fewest errors beyond 3 AP on the generated datasets, the smaller largest error on a tie; leaving
one dataset out, the other chooses, and the choice's errors on the one left out are reported.

The same two forecasts are checked on published curves this project never trained on
(``bench/published_curves.json``: COCO's supervised models at 1, 5, 10 and 100 % and the published
method at the partial fractions), with k measured on both generated datasets; they do not choose
the relation or the curve.

Writes ``bench/results/forecast_calibration.json`` (points, forecasts, errors) and the calibration
the tool reads, ``projects/SoftTeacher/softteacher/forecast_calibration.json``.
"""

import argparse
import glob
import json
import os
import statistics
import sys
import time

from softteacher.forecast import (
    CALIBRATION_FILE,
    CURVES,
    RELATIONS,
    USES,
    NoForecast,
    all_labeled_ap,
    coefficient,
    curve_at,
    fit_curves,
    fit_learning_curve,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# each recipe's run at a fraction p, per start (bench/README.md, section 18: the recommended recipe
# from either start is plus trained as long as the mixed recipe takes, 1.7x its iterations)
RECIPE_RUNS = {start: {"published": "soft_teacher_{p:g}pct", "recommended": "plus_no_box_jitter_{p:g}pct_1.7x"}
               for start in ("pretrained", "scratch")}
SCRATCH_ARMS = {"published": "soft_teacher"}  # the recipes bench/quality.py ran from scratch (at 1x)
TRAIN_IMAGES = 2000  # both generated datasets' training pool
GAIN_TOLERANCE = (0.5, 1.5)  # half the measured gain, or 1.5 AP, whichever is larger
CEILING_TOLERANCE = 3.0  # AP
PUBLISHED_CURVES = os.path.join(REPO, "bench", "published_curves.json")
TOOL_RUNS = os.path.join(REPO, "bench", "results", "forecast_runs")  # tools/forecast.py's forecast.json, one a run


def teacher_ap(block):
    return statistics.fmean(run["final"]["teacher"]["AP"] for run in block["seeds"].values())


def ceiling_ap(d):
    """The fully labeled twin's val AP at the schedule val chose (bench/regimes.py's ceiling), else
    at the config's schedule."""
    top = d.get("ceiling")
    return top["schedules"][top["chosen"]]["val_ap"] if top else teacher_ap(d["curve"]["supervised_100pct"])


def points(results):
    out = []
    for name, start in (("regimes.json", "pretrained"), ("regimes_scratch.json", "scratch")):
        path = os.path.join(results, name)
        if os.path.exists(path):
            with open(path) as f:
                out += regime_points(json.load(f)["datasets"], start)
    with open(os.path.join(results, "quality.json")) as f:
        quality = json.load(f)["datasets"]
    measured = {(p["dataset"], p["start"]) for p in out}
    for dataset, d in quality.items():  # bench/quality.py's from-scratch runs, where regimes_scratch has none
        arms = d.get("arms", {})
        if (dataset, "scratch") in measured or "supervised_10pct" not in arms or "supervised_100pct" not in arms:
            continue
        twin, full = teacher_ap(arms["supervised_10pct"]), teacher_ap(arms["supervised_100pct"])
        gains = {r: teacher_ap(arms[arm]) - twin for r, arm in SCRATCH_ARMS.items() if arm in arms}
        out.append(point(dataset, "scratch", 10, twin, full, gains))
    return out


def runs_by_name(d):
    """Every recipe run block of a dataset's bench/regimes.py result, by run name."""
    out = {b["run"]: b for b in d["arms"].values()}
    for f in (d.get("fractions") or {}).values():
        out.update({b["run"]: b for b in f["arms"].values()})
    for schedules in (d.get("arm_schedules") or {}).values():
        out.update(schedules["runs"])
    out.update(d.get("other_runs") or {})
    return out


def regime_points(datasets, start):
    """A point per fraction with a recipe run: the regime's and bench/regimes.py --fractions'."""
    out = []
    for dataset, d in datasets.items():
        if not d.get("choice"):
            continue
        full, named = ceiling_ap(d), runs_by_name(d)
        fractions = {d["choice"]["percent"], *(float(q) for q in d.get("fractions") or {})}
        for p in sorted(fractions):
            twin = teacher_ap(d["curve"][f"supervised_{p:g}pct"])
            runs = {r: named.get(run.format(p=p)) for r, run in RECIPE_RUNS[start].items()}
            gains = {r: teacher_ap(b) - twin for r, b in runs.items() if b}
            if gains:
                out.append(point(dataset, start, p, twin, full, gains))
    return out


def point(dataset, start, percent, twin, full, gains):
    gap = full - twin
    return {"dataset": dataset, "start": start, "percent": percent, "labeled": round(TRAIN_IMAGES * percent / 100),
            "twin_ap": round(twin, 2), "full_ap": round(full, 2), "gap": round(gap, 2),
            "gain": {r: round(g, 2) for r, g in gains.items()},
            "gap_closed": {r: round(g / gap, 4) for r, g in gains.items()}}


def within(error, measured, tolerance=GAIN_TOLERANCE):
    return abs(error) <= max(tolerance[0] * abs(measured), tolerance[1])


def forecast_gain(others, recipe, relation, gap, full):
    """The gain forecast for a gap, k the mean over ``others`` (calibration points) of the recipe's
    gain / f(gap, full); None when none has the recipe."""
    ks = [coefficient(relation, q["gain"][recipe], q["gap"], q["full_ap"]) for q in others if recipe in q["gain"]]
    return statistics.fmean(ks) * RELATIONS[relation](gap, full) if ks else None


def gain_loo(pts, relation):
    rows = []
    for p in pts:
        others = [q for q in pts if q["dataset"] != p["dataset"] and q["start"] == p["start"]]
        for recipe, measured in p["gain"].items():
            forecast = forecast_gain(others, recipe, relation, p["gap"], p["full_ap"])
            if forecast is not None:
                rows.append(gain_row(p["dataset"], p["start"], p["percent"], recipe, measured, forecast, relation))
    return rows


def choose_relation(pts):
    """(the relation with the fewest leave-one-dataset-out misses, the simplest on a tie, its rows,
    every relation's misses)."""
    rows = {relation: gain_loo(pts, relation) for relation in RELATIONS}
    misses = {relation: sum(not r["within_target"] for r in rs) for relation, rs in rows.items()}
    best = min(RELATIONS, key=lambda relation: misses[relation])  # min keeps the first of equals
    return best, rows[best], misses


def gain_row(dataset, start, percent, recipe, measured, forecast, relation):
    return {"dataset": dataset, "start": start, "percent": percent, "recipe": recipe, "relation": relation,
            "measured_gain": round(measured, 2), "forecast_gain": round(forecast, 2),
            "error": round(forecast - measured, 2), "within_target": within(forecast - measured, measured)}


def ceiling_row(dataset, start, parts, counts, aps, measured_full, train_images, curve):
    """The ``curve`` fitted to (counts, aps), extrapolated to ``train_images``, against the measured
    fully labeled model."""
    top = max(parts)
    try:
        fit = fit_learning_curve(counts, aps, curve)
    except NoForecast as e:
        return {"dataset": dataset, "start": start, "percent": top, "no_forecast": str(e)}
    forecast = curve_at(fit, train_images)
    return {"dataset": dataset, "start": start, "percent": top, "parts": parts, "reach": round(100 / top, 2),
            "measured_full": round(measured_full, 2), "forecast_full": round(forecast, 2),
            "error": round(forecast - measured_full, 2),
            "within_target": abs(forecast - measured_full) <= CEILING_TOLERANCE}


def pretrained_regimes(results):
    with open(os.path.join(results, "regimes.json")) as f:
        return json.load(f)["datasets"]


def nested_twins(regimes):
    """(dataset, its regimes block, parts, counts, aps): each dataset's recorded twins at and under
    each partial fraction (three fractions at least; ``parts`` the percents, a point per seed)."""
    for dataset, d in regimes.items():
        twins = {b["percent"]: b for b in d["curve"].values()}
        for top in sorted(p for p in twins if p != 100):
            parts = [p for p in twins if p <= top]
            if len(parts) >= 3:
                runs = [(TRAIN_IMAGES * p / 100, run["final"]["teacher"]["AP"])
                        for p in parts for run in twins[p]["seeds"].values()]
                yield dataset, d, parts, [n for n, _ in runs], [ap for _, ap in runs]


def tool_forecasts(paths, regimes):
    """(dataset, path, forecast.json) of each tool run, its dataset named by its config."""
    for path in paths:
        with open(path) as f:
            fc = json.load(f)
        yield next(d for d in regimes if f"fc_{d}" in json.dumps(fc["config"]) or f"/{d}_" in fc["config"]), path, fc


def tool_parts(fc):
    """(labeled images, AP) of a tool run's parts, as two lists."""
    return [r["labeled"] for r in fc["runs"]], [r["AP"] for r in fc["runs"]]


def ceiling_loo(results, curve):
    """The ``curve`` fitted to the recorded pretrained twins at and under each fraction (three at least)
    against the ceiling."""
    return [ceiling_row(dataset, "pretrained", parts, counts, aps, ceiling_ap(d), TRAIN_IMAGES, curve)
            for dataset, d, parts, counts, aps in nested_twins(pretrained_regimes(results))]


def published_rows(path, pts, relation, curve):
    """Published curves: the ceiling fitted to every partial fraction against the published fully
    labeled model, and each recipe's gain forecast by the relation, k measured on the generated
    datasets (same start), against the published gain."""
    with open(path) as f:
        curves = json.load(f)["curves"]
    ceilings, gains = [], []
    for name, c in curves.items():
        full = c["supervised"]["100"]
        parts = sorted(float(p) for p in c["supervised"] if float(p) != 100)
        counts = [c["train_images"] * p / 100 for p in parts]
        aps = [c["supervised"][f"{p:g}"] for p in parts]
        ceilings.append(ceiling_row(name, c["start"], parts, counts, aps, full, c["train_images"], curve))
        same_start = [q for q in pts if q["start"] == c["start"]]
        for recipe, results in c["recipes"].items():
            for percent, ap in results.items():
                twin = c["supervised"][percent]
                gains.append(gain_row(name, c["start"], float(percent), recipe, ap - twin,
                                      forecast_gain(same_start, recipe, relation, full - twin, full), relation))
    return ceilings, gains


def tool_rows(paths, pts, results, relation, curves):
    """The tool's forecasts (forecast.json of runs on a generated dataset's regime split), the
    ``curves`` ({use: curve}) fitted to its runs as the tool does, against what was measured there:
    its ceiling against the fully labeled twin, and its gain forecast by the relation, k measured on
    the other dataset, against the gain measured here."""
    regimes = pretrained_regimes(results)
    rows = []
    for dataset, path, fc in tool_forecasts(paths, regimes):
        row = {"dataset": dataset, "forecast_json": os.path.relpath(path, REPO), "labeled": fc["labeled"],
               "iterations": [r.get("iterations") for r in fc["runs"]], "minutes": fc["minutes"],
               "budget_minutes": fc["budget_minutes"], "runs": len(fc["runs"])}
        if "no_forecast" in fc:
            rows.append({**row, "no_forecast": fc["no_forecast"]})
            continue
        full = ceiling_ap(regimes[dataset])
        counts, aps = tool_parts(fc)
        everything = all_labeled_ap(fit_curves(counts, aps, curves), fc["labeled"], fc["labeled"] + fc["unlabeled"])
        gap = everything - statistics.fmean(ap for n, ap in zip(counts, aps) if n == max(counts))
        row.update(reach=round((fc["labeled"] + fc["unlabeled"]) / max(counts), 2), measured_full=round(full, 2),
                   forecast_full=round(everything, 2), ceiling_error=round(everything - full, 2),
                   ceiling_within_target=abs(everything - full) <= CEILING_TOLERANCE, gains={})
        here = next((p for p in pts if p["dataset"] == dataset and p["start"] == "pretrained"
                    and p["labeled"] == fc["labeled"]), {"gain": {}})  # no recipe measured at that count: no check
        others = [q for q in pts if q["dataset"] != dataset and q["start"] == "pretrained"]
        for recipe, measured in here["gain"].items():
            forecast = forecast_gain(others, recipe, relation, gap, everything)
            row["gains"][recipe] = {"measured": round(measured, 2), "forecast": round(forecast, 2),
                                    "error": round(forecast - measured, 2),
                                    "within_target": within(forecast - measured, measured)}
        rows.append(row)
    return rows


def more_labels_rows(results, paths, curve):
    """The ``curve`` fitted to the recorded pretrained twins at and under each fraction (three at
    least), and to each tool run's parts, at every recorded twin of more labeled images, up to 4x
    the largest part: the forecast of more labels against the twin measured there."""
    regimes = pretrained_regimes(results)
    fits = [(dataset, "recorded twins", counts, aps) for dataset, _, _, counts, aps in nested_twins(regimes)]
    fits += [(dataset, os.path.relpath(path, REPO), *tool_parts(fc))
             for dataset, path, fc in tool_forecasts(paths, regimes) if "no_forecast" not in fc]
    rows = []
    for dataset, source, counts, aps in fits:
        fit = fit_learning_curve(counts, aps, curve)
        for b in regimes[dataset]["curve"].values():
            n = TRAIN_IMAGES * b["percent"] / 100
            if max(counts) < n <= 4 * max(counts) and b["percent"] != 100:
                measured, forecast = teacher_ap(b), curve_at(fit, n)
                rows.append({"dataset": dataset, "source": source, "largest_part": max(counts), "labeled": n,
                             "measured": round(measured, 2), "forecast": round(forecast, 2),
                             "error": round(forecast - measured, 2)})
    return rows


def ceiling_errors(ceilings, tool):
    """[row with "dataset", "reach", "error"] of each ceiling forecast: the recorded twins' rows and
    the tool's."""
    return ([{k: r[k] for k in ("dataset", "reach", "error")} for r in ceilings if "error" in r]
            + [{"dataset": r["dataset"], "reach": r["reach"], "error": r["ceiling_error"]}
               for r in tool if "ceiling_error" in r])


def errors_by_dataset(rows):
    """{dataset: [its rows' errors]}."""
    out = {}
    for r in rows:
        out.setdefault(r["dataset"], []).append(r["error"])
    return out


def choose_curve(errors):
    """``errors``: {curve: {dataset: [ceiling errors]}} on the generated datasets. (The curve with
    the fewest errors beyond CEILING_TOLERANCE, the smaller largest error on a tie, the first of
    CURVES on a tie of both; {curve: (misses, largest error)}; leave one dataset out: {dataset:
    {curve the other datasets choose, its errors on this one}})."""
    def rank(curve, datasets):
        found = [abs(e) for d in datasets for e in errors[curve].get(d, [])]
        return sum(e > CEILING_TOLERANCE for e in found), max(found, default=0.0)

    def best(datasets):
        return min(CURVES, key=lambda curve: rank(curve, datasets))  # min keeps the first of equals

    datasets = sorted({d for by_dataset in errors.values() for d in by_dataset})
    loo = {}
    for d in datasets:
        chosen = best([o for o in datasets if o != d])
        loo[d] = {"curve": chosen, "errors": errors[chosen].get(d, [])}
    return best(datasets), {curve: rank(curve, datasets) for curve in CURVES}, loo


def loo_summary(rows):
    """Per recipe and start, the largest absolute error of the gain forecast."""
    out = {}
    for r in rows:
        key = out.setdefault(r["recipe"], {})
        key[r["start"]] = max(key.get(r["start"], 0.0), abs(r["error"]))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    parser.add_argument("--calibration", default=CALIBRATION_FILE)
    parser.add_argument("--tool-forecasts", nargs="*", default=sorted(glob.glob(os.path.join(TOOL_RUNS, "*.json"))),
                        help="forecast.json files of tools/forecast.py run on a dataset's regime split "
                             "(default: those kept in bench/results/forecast_runs)")
    parser.add_argument("--published", default=PUBLISHED_CURVES,
                        help="published curves the forecast is also checked on")
    args = parser.parse_args()
    pts = points(args.results)
    relation, generated_gains, misses = choose_relation(pts)
    by_curve = {curve: (ceiling_loo(args.results, curve),
                        tool_rows(args.tool_forecasts, pts, args.results, relation, dict.fromkeys(USES, curve)))
                for curve in CURVES}
    nearer = {curve: more_labels_rows(args.results, args.tool_forecasts, curve) for curve in CURVES}
    errors = {"all_labeled": {c: errors_by_dataset(ceiling_errors(*rows)) for c, rows in by_curve.items()},
              "more_labels": {c: errors_by_dataset(rows) for c, rows in nearer.items()}}
    choices = {use: dict(zip(("curve", "misses_and_largest_error", "leave_one_out"), choose_curve(errors[use])))
               for use in USES}
    curve = choices["all_labeled"]["curve"]
    generated_ceilings = by_curve[curve][0]
    tool = tool_rows(args.tool_forecasts, pts, args.results, relation, {u: c["curve"] for u, c in choices.items()})
    published_ceilings, published_gains = published_rows(args.published, pts, relation, curve)
    gains, ceilings = generated_gains + published_gains, generated_ceilings + published_ceilings
    calibration = {
        "what": "gap (fully labeled twin - partial twin, teacher AP) and share of it each recipe closed, per "
                "dataset and start, and the relation of gain to gap the forecast uses (softteacher.forecast."
                "RELATIONS); written by bench/forecast_calibration.py from bench/results",
        "recipes": {r: {start: runs[r] for start, runs in RECIPE_RUNS.items()} for r in RECIPE_RUNS["pretrained"]},
        "recommended": "recommended", "relation": relation,
        "curves": {use: choice["curve"] for use, choice in choices.items()},
        "points": [{k: p[k] for k in ("dataset", "start", "percent", "gap", "full_ap", "gap_closed")} for p in pts],
        "leave_one_out": loo_summary(gains),
        # the errors of the AP-with-everything-labeled forecast by how far it extrapolated (training
        # images / the largest part fitted): the kept curve fitted to recorded twins and the tool's own runs
        "ceiling_errors": [{"reach": r["reach"], "error": r["error"]} for r in ceiling_errors(ceilings, tool)],
    }
    report = {"command": "python bench/forecast_calibration.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "points": pts, "gain_leave_one_out": gains,
              "relation": relation, "relation_misses": misses, "ceiling_leave_one_out": ceilings,
              "curves": choices, "more_labels": nearer[choices["more_labels"]["curve"]], "tool_forecasts": tool,
              "targets": {"gain": "error within max(50 % of the measured gain, 1.5 AP)",
                          "ceiling": f"error within {CEILING_TOLERANCE:g} AP"},
              "met": {"gain": all(r["within_target"] for r in gains),
                      # each generated dataset by the curve the other chose, and the published curves
                      "ceiling": all(abs(e) <= CEILING_TOLERANCE for d in choices["all_labeled"]["leave_one_out"]
                                     .values() for e in d["errors"])
                      and all(r.get("within_target", False) for r in published_ceilings)}}
    written = ((os.path.join(args.results, "forecast_calibration.json"), report), (args.calibration, calibration))
    for path, data in written:
        with open(path, "w") as f:
            json.dump(data, f, indent=1)
        print(path)
    print(f"relation: {relation} (leave-one-dataset-out misses: {misses})")
    for use, choice in choices.items():
        print(f"curve for {use}: {choice['curve']} (errors beyond {CEILING_TOLERANCE:g} AP, largest error: "
              f"{choice['misses_and_largest_error']}); leaving one dataset out: "
              + "; ".join(f"{d}: {c['curve']}, errors {c['errors']}" for d, c in choice["leave_one_out"].items()))
    for r in gains:
        print(f"{r['dataset']:6} {r['start']:10} {r['percent']:>4g} % {r['recipe']:11} "
              f"measured {r['measured_gain']:+5.1f} forecast {r['forecast_gain']:+5.1f} error {r['error']:+5.1f} "
              f"{'ok' if r['within_target'] else 'MISSED'}")
    for r in ceilings:
        if "no_forecast" in r:
            print(f"{r['dataset']:6} ceiling from <= {r['percent']:g} %: {r['no_forecast']}")
        else:
            print(f"{r['dataset']:6} ceiling from <= {r['percent']:g} %: measured {r['measured_full']:.1f} forecast "
                  f"{r['forecast_full']:.1f} error {r['error']:+.1f} {'ok' if r['within_target'] else 'MISSED'}")
    for r in tool:
        head = f"{r['dataset']:6} tools/forecast.py ({r['runs']} runs, {r['minutes']:g} min): "
        if "no_forecast" in r:
            print(head + r["no_forecast"])
            continue
        gains = ", ".join(f"{k} gain {g['forecast']:+.1f} against {g['measured']:+.1f}" for k, g in r["gains"].items())
        print(head + f"ceiling {r['forecast_full']:.1f} against {r['measured_full']:.1f} "
              f"({r['ceiling_error']:+.1f}); {gains}")


if __name__ == "__main__":
    main()
