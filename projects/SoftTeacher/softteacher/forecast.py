"""Will unlabeled images pay? The supervised learning curve of a labeled set, the AP it promises
with more labels, and the gain semi-supervised training is expected to give, from a calibration
measured on the generated datasets and checked on COCO's published curve
(``forecast_calibration.json`` beside this file, written by ``bench/forecast_calibration.py``).

The learning curve is one of ``CURVES``: a log-logistic AP(n) = c / (1 + (h / n)^b), S-shaped in
log n, that saturates at c, or a power law AP(n) = c - a * n^-b, n labeled images. The calibration
names the curve of each use (``USES``): on the generated datasets the log-logistic forecast 2x the
labels the better, the power law the converged fully labeled model (bench/README.md). The gain of training
with the unlabeled images is forecast from the gap to the model that had every image labeled,
gap = AP(labeled + unlabeled) - AP(labeled), by the calibration's relation (``RELATIONS``), its
coefficient k measured per recipe and start (pretrained or from scratch).
"""

import json
import math
import os

import numpy as np

CALIBRATION_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forecast_calibration.json")
SLOPES = np.linspace(0.1, 4.0, 79)  # the grids the log-logistic's b and log h are fitted on
LOG_MIDPOINTS = np.linspace(0.0, 14.0, 281)
EXPONENTS = np.linspace(0.02, 3.0, 299)  # the grid the power law's b is fitted on
MAX_AP = 100.0
MIN_POINTS, MIN_IMAGES = 3, 8  # fewer labeled parts, or a smallest part under this, and no curve is fitted
HELPS = 1.5  # AP: a gain under this "will not help much"
USES = ("more_labels", "all_labeled")  # what a curve forecasts: AP with 2x and 4x the labels; with every image labeled
# the gain is k * RELATIONS[relation](gap, AP with everything labeled)
RELATIONS = {
    "share": lambda gap, full: gap,  # a recipe closes the same share of every gap
    "share_by_gap_fraction": lambda gap, full: gap * gap / full,  # ... a share that grows with gap / full
    # ... a share that grows with gap / full and with the teacher's start, twin / full = 1 - gap / full
    "share_by_gap_and_twin": lambda gap, full: gap * (gap / full) * (1 - gap / full),
}


class NoForecast(ValueError):
    """The data cannot support a forecast; the message says why."""


def fit_learning_curve(counts, aps, curve="log_logistic"):
    """Least-squares fit of one of ``CURVES`` (its AP bounded by 100) to (labeled images, AP)
    points (several seeds of a count are separate points). Returns {"curve", "c", "b", "rmse"} and
    the curve's own parameter ("h" or "a")."""
    n = np.asarray(counts, dtype=float)
    y = np.asarray(aps, dtype=float)
    if len(set(n.tolist())) < MIN_POINTS:
        raise NoForecast(f"{len(set(n.tolist()))} distinct labeled counts: a curve needs {MIN_POINTS}")
    if n.min() < MIN_IMAGES:
        raise NoForecast(f"the smallest labeled part has {n.min():g} images: too few for a curve "
                         f"(at least {MIN_IMAGES}); label more first")
    if np.corrcoef(np.log(n), y)[0, 1] <= 0:
        raise NoForecast("AP does not rise with more labeled images in these runs: no curve to extrapolate "
                         "(train longer per run, or check the labels)")
    fit, errors = CURVES[curve][0](n, y)
    return {"curve": curve, **fit, "rmse": math.sqrt(errors / len(y))}


def _fit_log_logistic(n, y):
    """For each (b, log h) of a grid c is linear (clamped to 100); the pair with the least squared
    error wins."""
    shapes = 1.0 / (1.0 + np.exp(SLOPES[:, None, None] * (LOG_MIDPOINTS[None, :, None] - np.log(n)[None, None])))
    c = np.clip((shapes * y).sum(-1) / (shapes * shapes).sum(-1), 0.0, MAX_AP)
    errors = ((c[..., None] * shapes - y) ** 2).sum(-1)
    i, j = np.unravel_index(np.argmin(errors), errors.shape)
    return {"c": float(c[i, j]), "h": float(math.exp(LOG_MIDPOINTS[j])), "b": float(SLOPES[i])}, float(errors[i, j])


def _fit_power_law(n, y):
    """For each b of a grid (c, a) is a linear least-squares fit, c clamped to 100 and a >= 0 (a
    curve that does not fall with n); the b with the least squared error wins."""
    x = n[None, :] ** -EXPONENTS[:, None]  # (b, point)
    xm, ym = x.mean(1, keepdims=True), y.mean()
    a = np.maximum(-((x - xm) * (y - ym)).sum(1) / ((x - xm) ** 2).sum(1), 0.0)
    c = ym + a * xm[:, 0]
    over = c > MAX_AP  # clamped: a refitted with c = 100
    a[over] = np.maximum(((MAX_AP - y) * x[over]).sum(1) / (x[over] ** 2).sum(1), 0.0)
    c[over] = MAX_AP
    errors = ((c[:, None] - a[:, None] * x - y) ** 2).sum(1)
    i = int(np.argmin(errors))
    return {"c": float(c[i]), "a": float(a[i]), "b": float(EXPONENTS[i])}, float(errors[i])


CURVES = {  # name: (fit, AP at n)
    "log_logistic": (_fit_log_logistic, lambda fit, n: fit["c"] / (1.0 + (fit["h"] / n) ** fit["b"])),
    "power_law": (_fit_power_law, lambda fit, n: fit["c"] - fit["a"] * n ** -fit["b"]),
}


def curve_at(fit, n):
    return CURVES[fit["curve"]][1](fit, n)


def fit_curves(counts, aps, curves):
    """{use: the fit of the curve ``curves`` names for it} (one fit where both name the same)."""
    fits = {curve: fit_learning_curve(counts, aps, curve) for curve in set(curves.values())}
    return {use: fits[curves[use]] for use in USES}


def all_labeled_ap(fits, num_labeled, total):
    """AP with ``total`` images labeled: the all_labeled curve's, and never under what the
    more_labels curve gives 4x the labels where that is fewer images (AP rises with labels)."""
    everything = curve_at(fits["all_labeled"], total)
    if 4 * num_labeled <= total:
        everything = max(everything, curve_at(fits["more_labels"], 4 * num_labeled))
    return everything


def load_calibration(path=CALIBRATION_FILE):
    with open(path) as f:
        return json.load(f)


def coefficient(relation, gain, gap, full):
    """k of a measured point: its gain / RELATIONS[relation](gap, full)."""
    return gain / RELATIONS[relation](gap, full)


def start_name(pretrained):
    return "pretrained" if pretrained else "scratch"


def gain_coefficient(calibration, recipe, pretrained):
    """(k, its interval [low, high]) of a recipe for a start: the mean and range over the
    calibration's measured points of gain / RELATIONS[relation](gap, full)."""
    start = start_name(pretrained)
    ks = [coefficient(calibration["relation"], p["gap_closed"][recipe] * p["gap"], p["gap"], p["full_ap"])
          for p in calibration["points"] if p["start"] == start and recipe in p["gap_closed"]]
    if not ks:
        raise NoForecast(f"the calibration has no point for {recipe} from a {start} start")
    return float(np.mean(ks)), (min(ks), max(ks))


def calibrated_ratios(calibration, pretrained):
    """(lowest, highest) partial-twin AP / fully labeled AP among the calibration's points of a start."""
    start = start_name(pretrained)
    ratios = [1 - p["gap"] / p["full_ap"] for p in calibration["points"] if p["start"] == start]
    return min(ratios), max(ratios)


def forecast(counts, aps, num_labeled, num_unlabeled, pretrained, calibration):
    """The forecast of a labeled set of ``num_labeled`` images and ``num_unlabeled`` unlabeled
    ones, from supervised runs on parts of it (``counts``: labeled images of each run, ``aps``: its
    AP). Raises NoForecast when the runs do not support one."""
    fits = fit_curves(counts, aps, calibration["curves"])
    measured = [ap for n, ap in zip(counts, aps) if n == max(counts)]
    now = float(np.mean(measured))
    everything = all_labeled_ap(fits, num_labeled, num_labeled + num_unlabeled)
    gap = everything - now
    more = fits["more_labels"]
    out = {
        "fits": fits, "now": now, "pretrained": pretrained,
        "labels_2x": curve_at(more, 2 * num_labeled), "labels_4x": curve_at(more, 4 * num_labeled),
        "all_labeled": everything, "gap": gap, "recipes": {},
    }
    scale = RELATIONS[calibration["relation"]](gap, everything)
    for recipe in calibration["recipes"]:
        k, (low, high) = gain_coefficient(calibration, recipe, pretrained)
        out["recipes"][recipe] = {"share": k * scale / gap if gap else 0.0, "gain": k * scale,
                                  "interval": (low * scale, high * scale),
                                  "loo_error": calibration["leave_one_out"].get(recipe, {}).get(
                                      start_name(pretrained))}
    recommended = out["recipes"][calibration["recommended"]]
    out["verdict"], out["reason"] = verdict(out["labels_2x"] - now, recommended["gain"], recommended["loo_error"])
    out["ratio"] = now / everything
    low, high = calibrated_ratios(calibration, pretrained)
    if not low <= out["ratio"] <= high:
        out["reason"] += (f"; outside the calibration: its twins reached {low:.2f}-{high:.2f} of the AP with "
                          f"everything labeled, yours {out['ratio']:.2f}, so the gain forecast extrapolates")
    reach = (num_labeled + num_unlabeled) / max(counts)
    out["extrapolation"] = reach
    out["all_labeled_error"] = ceiling_error(calibration, reach)
    if out["all_labeled_error"] is not None and out["all_labeled_error"] > abs(gap):
        out["reason"] += (f"; uncertain: on the calibration curves, extrapolating as far ({reach:.0f}x the largest "
                          f"part), the AP-with-everything-labeled forecast erred by up to "
                          f"{out['all_labeled_error']:.1f} AP, more than the {gap:+.1f} AP gap it gives here")
    return out


def ceiling_error(calibration, reach):
    """The largest error the AP-with-everything-labeled forecast made on the calibration curves
    when extrapolating as far as ``reach`` (images / largest part) or the nearest farther; beyond
    every calibrated reach, the largest of all. None without calibrated errors."""
    rows = calibration.get("ceiling_errors") or []
    if not rows:
        return None
    farther = [r["reach"] for r in rows if r["reach"] >= reach]
    nearest = min(farther) if farther else None
    return max(abs(r["error"]) for r in rows if nearest is None or r["reach"] == nearest)


def verdict(label_gain, semi_gain, semi_error=None, helps=HELPS):
    """("label more" | "train semi-supervised" | "neither will help much", the reason in numbers):
    the larger of twice the labels and training with the unlabeled images, when it reaches
    ``helps`` AP; the unlabeled images cost no labelling, so a tie goes to them. A choice between
    two gains closer than ``semi_error`` (the gain forecast's leave-one-out error) is called close."""
    if max(label_gain, semi_gain) < helps:
        return "neither will help much", (f"twice the labels: {label_gain:+.1f} AP, the unlabeled images: "
                                          f"{semi_gain:+.1f} AP, both under {helps:g}")
    if semi_gain >= label_gain:
        name, reason = "train semi-supervised", (f"the unlabeled images: {semi_gain:+.1f} AP, at least twice "
                                                 f"the labels' {label_gain:+.1f} AP, and they need no labelling")
    else:
        name, reason = "label more", (f"twice the labels: {label_gain:+.1f} AP, "
                                      f"the unlabeled images: {semi_gain:+.1f} AP")
    margin = abs(semi_gain - label_gain)
    if semi_error is not None and margin <= semi_error:
        reason += (f"; a close call: the two differ by {margin:.1f} AP, within the "
                   f"{semi_error:.1f} AP the gain forecast erred by on a dataset left out")
    return name, reason
