"""The forecast: the learning-curve fit against a known curve, when it refuses, the verdict at its
boundaries, and the tool's report from runs on nested parts."""

import json
import os

import pytest

from softteacher.forecast import (
    HELPS,
    NoForecast,
    curve_at,
    fit_learning_curve,
    forecast,
    gain_coefficient,
    verdict,
)
from softteacher.tools import forecast as forecast_tool

from conftest import custom_cfg, custom_opts

KNOWN = {"curve": "log_logistic", "c": 70.0, "h": 60.0, "b": 1.3}
KNOWN_POWER_LAW = {"curve": "power_law", "c": 72.0, "a": 300.0, "b": 0.6}


def test_the_fit_recovers_a_known_curve_and_extrapolates_it():
    counts = [25, 50, 100, 200]
    fit = fit_learning_curve(counts, [curve_at(KNOWN, n) for n in counts])
    assert fit["c"] == pytest.approx(70.0, abs=0.3) and fit["b"] == pytest.approx(1.3, abs=0.05)
    assert fit["h"] == pytest.approx(60.0, rel=0.03)
    # 10x beyond the largest part: 70 / (1 + (60 / 2000)^1.3) = 70 / 1.0105 = 69.27
    assert curve_at(fit, 2000) == pytest.approx(69.27, abs=0.3)


def test_the_power_law_fit_recovers_a_known_curve_and_extrapolates_it():
    counts = [25, 50, 100, 200]
    fit = fit_learning_curve(counts, [curve_at(KNOWN_POWER_LAW, n) for n in counts], "power_law")
    assert fit["curve"] == "power_law" and fit["rmse"] == pytest.approx(0.0, abs=1e-6)
    assert (fit["c"], fit["a"], fit["b"]) == (pytest.approx(72.0, abs=0.01), pytest.approx(300.0, rel=1e-3),
                                              pytest.approx(0.6, abs=1e-6))
    # 10x beyond the largest part: 72 - 300 x 2000^-0.6 = 72 - 300 x 0.010457 = 68.863
    assert curve_at(fit, 2000) == pytest.approx(68.863, abs=0.01)
    # the log-logistic fitted to the same points saturates early: 1.5 AP under it at 2000
    assert curve_at(fit_learning_curve(counts, [curve_at(KNOWN_POWER_LAW, n) for n in counts]), 2000) < 67.4


def test_the_power_law_stays_under_100_ap():
    # points that rise as 80 + 10 log10(n / 10): unbounded, the fit clamps c at 100 and refits a
    counts = [10, 100, 1000]
    fit = fit_learning_curve(counts, [80.0, 90.0, 99.0], "power_law")
    assert fit["c"] == 100.0 and fit["a"] > 0 and curve_at(fit, 10**6) < 100.0


def test_two_seeds_of_each_part_fit_through_their_middle():
    counts = [20, 20, 40, 40, 80, 80, 160, 160]
    aps = [curve_at(KNOWN, n) + (1.0 if i % 2 else -1.0) for i, n in enumerate(counts)]
    fit = fit_learning_curve(counts, aps)
    assert fit["rmse"] == pytest.approx(1.0, abs=0.05)  # the seeds' +-1 is all that is left
    assert curve_at(fit, 1000) == pytest.approx(curve_at(KNOWN, 1000), abs=1.0)


@pytest.mark.parametrize("counts,aps,message", [
    ([50, 100], [30.0, 40.0], "2 distinct labeled counts: a curve needs 3"),
    ([4, 8, 16], [10.0, 20.0, 30.0], "the smallest labeled part has 4 images"),
    ([20, 40, 80], [30.0, 25.0, 20.0], "AP does not rise with more labeled images"),
])
def test_no_forecast_where_the_runs_cannot_support_one(counts, aps, message):
    with pytest.raises(NoForecast, match=message):
        fit_learning_curve(counts, aps)


@pytest.mark.parametrize("label_gain,semi_gain,expected", [
    (HELPS - 0.01, HELPS - 0.01, "neither will help much"),
    (HELPS, 0.0, "label more"),
    (0.0, HELPS, "train semi-supervised"),
    (3.0, 3.0, "train semi-supervised"),  # a tie: the unlabeled images need no labelling
    (3.01, 3.0, "label more"),
])
def test_the_verdict_at_its_boundaries(label_gain, semi_gain, expected):
    assert verdict(label_gain, semi_gain)[0] == expected


CALIBRATION = {  # twins at 58 / 70 = 0.829 and 60 / 70 = 0.857 of their fully labeled model
    "recipes": {"published": "soft_teacher", "recommended": "plus_no_box_jitter_mixpl"},
    "recommended": "recommended", "relation": "share",
    "curves": {"more_labels": "log_logistic", "all_labeled": "log_logistic"},
    "points": [{"dataset": "a", "start": "pretrained", "gap": 12.0, "full_ap": 70.0,
                "gap_closed": {"published": 0.4, "recommended": 0.7}},
               {"dataset": "b", "start": "pretrained", "gap": 10.0, "full_ap": 70.0,
                "gap_closed": {"published": 0.6, "recommended": 0.8}},
               {"dataset": "a", "start": "scratch", "gap": 5.0, "full_ap": 60.0,
                "gap_closed": {"published": 0.0, "recommended": 0.3}}],
    "leave_one_out": {"published": {"pretrained": 2.0}, "recommended": {"pretrained": 1.0}},
}


def test_the_gain_is_the_calibrated_share_of_the_gap_to_everything_labeled():
    assert gain_coefficient(CALIBRATION, "published", True) == (pytest.approx(0.5), pytest.approx((0.4, 0.6)))
    counts = [25, 50, 100, 200]
    out = forecast(counts, [curve_at(KNOWN, n) for n in counts], 200, 1800, True, CALIBRATION)
    gap = curve_at(KNOWN, 2000) - curve_at(KNOWN, 200)  # 69.3 - 57.9
    assert out["gap"] == pytest.approx(gap, abs=0.3)
    assert out["recipes"]["recommended"]["gain"] == pytest.approx(0.75 * gap, abs=0.3)
    assert out["recipes"]["published"]["interval"] == pytest.approx((0.4 * out["gap"], 0.6 * out["gap"]))
    assert out["recipes"]["published"]["loo_error"] == 2.0
    assert out["labels_2x"] == pytest.approx(curve_at(KNOWN, 400), abs=0.3)
    # 2x labels: 64.5 - 57.9 = +6.6 AP; the unlabeled images: 0.75 x 11.4 = +8.6 AP
    assert out["verdict"] == "train semi-supervised"
    assert "uncertain" not in out["reason"]  # the calibration has no ceiling error
    assert "close call" not in out["reason"]  # the two differ by 2.0 AP, the gain forecast erred by 1.0
    wider = {**CALIBRATION, "leave_one_out": {"recommended": {"pretrained": 2.5}}}
    close = forecast(counts, [curve_at(KNOWN, n) for n in counts], 200, 1800, True, wider)
    assert close["verdict"] == "train semi-supervised"
    margin = close["recipes"]["recommended"]["gain"] - (close["labels_2x"] - close["now"])
    assert margin == pytest.approx(2.0, abs=0.3)
    assert close["reason"].endswith(f"; a close call: the two differ by {margin:.1f} AP, within the 2.5 AP "
                                    "the gain forecast erred by on a dataset left out")
    assert out["ratio"] == pytest.approx(57.9 / 69.3, abs=0.005) and "outside" not in out["reason"]  # 0.835
    # errors measured at 5x, 10x (twice) and 50x: this forecast reaches 2000 / 200 = 10x
    errors = [{"reach": 5, "error": 30.0}, {"reach": 10, "error": -12.0}, {"reach": 10, "error": 3.0},
              {"reach": 50, "error": 40.0}]
    doubtful = forecast(counts, [curve_at(KNOWN, n) for n in counts], 200, 1800, True,
                        {**CALIBRATION, "ceiling_errors": errors})
    assert doubtful["all_labeled_error"] == 12.0
    assert doubtful["reason"].endswith("uncertain: on the calibration curves, extrapolating as far (10x the largest "
                                       "part), the AP-with-everything-labeled forecast erred by up to 12.0 AP, more "
                                       f"than the {out['gap']:+.1f} AP gap it gives here")
    from softteacher.forecast import ceiling_error

    assert [ceiling_error({"ceiling_errors": errors}, r) for r in (2, 7, 10, 20, 80)] == [30.0, 12.0, 12.0, 40.0, 40.0]
    assert ceiling_error({}, 10) is None
    with pytest.raises(NoForecast, match="no point for published from a scratch start"):
        gain_coefficient({**CALIBRATION, "points": CALIBRATION["points"][:2]}, "published", False)


def test_the_share_by_gap_fraction_relation_and_a_twin_outside_the_calibrated_ratios():
    """gain = k * gap^2 / full: k = 0.4 x 70 / 12 = 2.333 on a, 0.6 x 70 / 10 = 4.2 on b, mean 3.267;
    a twin at 0.83 of its ceiling, outside calibration points at 0.5 and 0.6, is said to extrapolate."""
    by_fraction = {**CALIBRATION, "relation": "share_by_gap_fraction"}
    k, (low, high) = gain_coefficient(by_fraction, "published", True)
    assert (k, low, high) == (pytest.approx(49 / 15), pytest.approx(7 / 3), pytest.approx(4.2))
    counts = [25, 50, 100, 200]
    out = forecast(counts, [curve_at(KNOWN, n) for n in counts], 200, 1800, True, by_fraction)
    scale = out["gap"] ** 2 / out["all_labeled"]  # 11.4^2 / 69.3 = 1.88
    assert out["recipes"]["published"]["gain"] == pytest.approx(49 / 15 * scale)
    assert out["recipes"]["published"]["interval"] == pytest.approx((7 / 3 * scale, 4.2 * scale))
    assert out["recipes"]["published"]["share"] == pytest.approx(49 / 15 * out["gap"] / out["all_labeled"])
    far = {**by_fraction, "points": [{**p, "gap": p["full_ap"] * (0.5 if p["dataset"] == "a" else 0.4)}
                                     for p in by_fraction["points"]]}
    out = forecast(counts, [curve_at(KNOWN, n) for n in counts], 200, 1800, True, far)
    assert "; outside the calibration: its twins reached 0.50-0.60 of the AP with everything labeled, yours " \
           "0.83, so the gain forecast extrapolates" in out["reason"]


def forecast_config(tiny_shapes, tmp_path, num_images, name):
    """A config whose labeled json has ``num_images`` images (the tests fake the runs: only the json
    is read); returns (its path, the labeled json)."""
    with open(os.path.join(tiny_shapes, "annotations", "instances_train.json")) as f:
        coco = json.load(f)
    coco["images"] = [{**coco["images"][i % len(coco["images"])], "id": i + 1} for i in range(num_images)]
    coco["annotations"] = []
    labeled = tmp_path / f"labeled{num_images}.json"
    labeled.write_text(json.dumps(coco))
    config = tmp_path / f"{name}.yaml"
    cfg = custom_cfg(custom_opts(tiny_shapes, name) + ["DATASETS.CUSTOM.LABELED_JSON", str(labeled)])
    config.write_text(cfg.dump())
    return config, coco


def test_the_tool_trains_nested_parts_and_reports_the_forecast(tiny_shapes, tmp_path, monkeypatch):
    """The tool end to end with its training replaced by the known curve: nested parts, the runs it
    asks for, forecast.json and the picture."""
    config, coco = forecast_config(tiny_shapes, tmp_path, 80, "mine_fc")
    monkeypatch.setattr(forecast_tool, "load_calibration", lambda: CALIBRATION)
    asked = []

    def fake_train(config_file, opts, log_path):
        part = opts[opts.index("DATASETS.CUSTOM.LABELED_JSON") + 1]
        with open(part) as f:
            n = len(json.load(f)["images"])
        asked.append((n, opts[opts.index("SEED") + 1], opts[opts.index("SOLVER.MAX_ITER") + 1]))
        return curve_at(KNOWN, n), 0.1, 5.0

    out = forecast_tool.main(["--config-file", str(config), "--output", str(tmp_path / "fc"), "--iters", "300",
                              "--parts", "25", "50", "100"], train=fake_train)
    images = [im["id"] for im in coco["images"]]
    parts = {}
    for p in (25, 50, 100):
        with open(tmp_path / "fc" / "parts" / f"labeled_{p}pct.json") as f:
            parts[p] = {im["id"] for im in json.load(f)["images"]}
    assert parts[25] < parts[50] < parts[100] == set(images)  # nested
    assert [a[1:] for a in asked] == [("1", "300")] * 3 + [("2", "300")] * 3  # --iters: every run, every seed
    assert out["labeled"] == len(images) and set(out["recipes"]) == {"published", "recommended"}
    assert (tmp_path / "fc" / "forecast.png").stat().st_size > 10_000
    with open(tmp_path / "fc" / "forecast.json") as f:
        assert json.load(f)["verdict"] == out["verdict"]


def test_the_budget_plan_gives_every_part_as_many_epochs_and_a_second_seed_only_to_spare():
    # parts of 25, 50 and 100 images; 0.5 s an iteration, 30 s start-up and evaluation a run
    # (probe: 20 iterations in 40 s)
    sizes = {25: 25, 50: 50, 100: 100}
    # 30 min: (1800 - 40 - 3 x 30) / 0.5 = 3340 iterations for 175 images: 19.09 an image
    per_image, seeds = forecast_tool.plan(30 * 60, (0.5, 40.0), sizes, 3200, [1, 2])
    assert per_image == pytest.approx(3340 / 175) and seeds == [1]
    assert forecast_tool.iterations(per_image, sizes) == {25: 477, 50: 954, 100: 1908}
    # 5 min: (300 - 130) / 0.5 / 175 = 1.94 an image: the 25-image part gets 48 < 100 iterations
    assert forecast_tool.plan(5 * 60, (0.5, 40.0), sizes, 3200, [1, 2]) == (None, [])
    # 10 hours: every run reaches the config's 3,200 for 100 images even with two seeds
    assert forecast_tool.plan(600 * 60, (0.5, 40.0), sizes, 3200, [1, 2]) == (32.0, [1, 2])


def test_runs_slower_than_the_probe_shorten_the_runs_left_to_keep_the_budget():
    # 50 and 100 images left, 25 min of the budget left, 30 s start-up and evaluation a run
    # at the probe's 0.5 s an iteration the plan's 19.09 an image fits: (1500 - 60) / 0.5 / 150 = 19.2
    assert forecast_tool.replan(25 * 60, 0.5, 30.0, [50, 100], 3340 / 175) == pytest.approx(3340 / 175)
    # the finished runs showed 0.6 s: (1500 - 60) / 0.6 / 150 = 16.0 an image
    assert forecast_tool.replan(25 * 60, 0.6, 30.0, [50, 100], 3340 / 175) == pytest.approx(16.0)
    # faster than planned: never longer than planned (the parts keep as many epochs)
    assert forecast_tool.replan(25 * 60, 0.3, 30.0, [50, 100], 3340 / 175) == pytest.approx(3340 / 175)
    # nothing left of the budget: the smallest run left still gets MIN_RUN_ITERS
    assert forecast_tool.replan(0.0, 0.6, 30.0, [50, 100], 3340 / 175) == forecast_tool.MIN_RUN_ITERS / 50


def test_the_tool_replans_from_the_speed_of_its_finished_runs(tiny_shapes, tmp_path, monkeypatch):
    """A machine slower than the probe said: the runs after the first are shortened so that the
    forecast keeps to --budget; each run's iterations are recorded."""
    config, _ = forecast_config(tiny_shapes, tmp_path, 100, "mine_slow")
    monkeypatch.setattr(forecast_tool, "load_calibration", lambda: CALIBRATION)
    clock = [0.0]

    def fake_train(config_file, opts, log_path):
        iters = int(opts[opts.index("SOLVER.MAX_ITER") + 1])
        with open(opts[opts.index("DATASETS.CUSTOM.LABELED_JSON") + 1]) as f:
            n = len(json.load(f)["images"])
        # the probe: 0.5 s an iteration, 30 s around it; the real runs take 0.6 s an iteration
        wall = 30.0 + iters * (0.5 if iters == forecast_tool.PROBE_ITERS else 0.6)
        clock[0] += wall
        return curve_at(KNOWN, n), 0.5, wall

    out = forecast_tool.main(["--config-file", str(config), "--output", str(tmp_path / "fc"), "--budget", "30",
                              "--parts", "25", "50", "100", "--seeds", "1"], train=fake_train,
                             clock=lambda: clock[0])
    # plan: (1800 - 40 - 90) / 0.5 / 175 = 19.09 an image: 477 iterations for 25 images (and 316 s)
    # then at 0.6 s: (1800 - 356 - 60) / 0.6 / 150 = 15.38 an image: 768 and 1537
    assert [r["iterations"] for r in out["runs"]] == [477, 768, 1537]
    assert clock[0] <= 30 * 60 + 1e-6  # within the budget; without the replan 40 + 3 x 30 + 3339 x 0.6 = 2133 s


@pytest.fixture(scope="module")
def bench_calibration():
    """bench/forecast_calibration.py, a script outside the package."""
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("forecast_calibration",
                                                  os.path.join(REPO, "bench", "forecast_calibration.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_published_curves_check_the_ceiling_and_the_calibrated_gain(tmp_path, bench_calibration):
    calibration = bench_calibration
    curve = {"curve": "log_logistic", "c": 50.0, "h": 1096.63, "b": 1.0}  # h = e^7, on the fit's grid: exact
    full = curve_at(curve, 100000)  # 50 / (1 + 0.0109663) = 49.458
    published = {"curves": {"elsewhere": {
        "source": "a known curve", "start": "pretrained", "train_images": 100000,
        "supervised": {"1": curve_at(curve, 1000), "5": curve_at(curve, 5000), "10": curve_at(curve, 10000),
                       "100": full - 2.0},  # the measured full model 2 AP under the curve's
        "recipes": {"published": {"10": curve_at(curve, 10000) + 5.0}}}}}
    path = tmp_path / "published.json"
    path.write_text(json.dumps(published))
    pts = [{"dataset": "a", "start": "pretrained", "gap": 10.0, "full_ap": 50.0, "gain": {"published": 3.0}},
           {"dataset": "b", "start": "pretrained", "gap": 10.0, "full_ap": 50.0, "gain": {"published": 5.0}},
           {"dataset": "a", "start": "scratch", "gap": 10.0, "full_ap": 50.0, "gain": {"published": 9.0}}]  # not read
    ceilings, gains = calibration.published_rows(str(path), pts, "share", "log_logistic")
    assert len(ceilings) == 1 and ceilings[0]["reach"] == 10.0 and ceilings[0]["parts"] == [1.0, 5.0, 10.0]
    assert ceilings[0]["error"] == pytest.approx(2.0, abs=0.05)
    assert ceilings[0]["within_target"] is True
    # twin at 10 %: 50 / (1 + 0.109663) = 45.058; gap to the published full model 49.458 - 2 - 45.058 = 2.400;
    # forecast 0.4 x 2.400 = 0.960 against the measured +5.0: off by 4.04, more than half of 5 and 1.5 AP
    assert len(gains) == 1 and gains[0]["percent"] == 10.0 and gains[0]["measured_gain"] == 5.0
    assert gains[0]["forecast_gain"] == pytest.approx(0.96, abs=0.01)
    assert gains[0]["within_target"] is False


def test_the_calibration_keeps_the_relation_with_fewest_leave_one_out_misses(bench_calibration):
    """a closes 2 of a 10 AP gap under a 50 AP ceiling, b 12.5 of 25: one share (0.2 against 0.5)
    misses both ways (forecast 5 against 2 and 5 against 12.5), k = gain / (gap^2 / full) = 1.0 on
    both forecasts each exactly; where one share fits too, the simpler relation is kept."""
    pts = [{"dataset": "a", "start": "pretrained", "percent": 5.0, "gap": 10.0, "full_ap": 50.0,
            "gain": {"published": 2.0}},
           {"dataset": "b", "start": "pretrained", "percent": 5.0, "gap": 25.0, "full_ap": 50.0,
            "gain": {"published": 12.5}}]
    relation, rows, misses = bench_calibration.choose_relation(pts)
    # gap x (gap / full) x (twin / full): k 1.25 and 2.0, forecasts 3.2 against 2 and 7.8 against
    # 12.5, within target too: the first of the two is kept
    assert relation == "share_by_gap_fraction" and misses == {"share": 2, "share_by_gap_fraction": 0,
                                                              "share_by_gap_and_twin": 0}
    assert [r["forecast_gain"] for r in rows] == [pytest.approx(2.0), pytest.approx(12.5)]
    assert bench_calibration.gain_loo(pts, "share")[0]["forecast_gain"] == pytest.approx(5.0)
    same = [{**p, "gap": 10.0, "gain": {"published": 2.0}} for p in pts]
    assert bench_calibration.choose_relation(same)[0] == "share"
    # twins at 0.2 and 0.8 of the ceiling (gap 40 and 10 of 50) both closing 0.16: one share fits;
    # gap / full misses once (k 0.8 of b forecasts 25.6 against 6.4; k 0.2 of a, 0.4 against 1.6, is
    # within 1.5 AP); k = gain / (gap x 0.8 x 0.2) = 1.0 on both fits too: the simpler is kept
    ends = [{**pts[0], "gap": 40.0, "gain": {"published": 6.4}}, {**pts[1], "gap": 10.0, "gain": {"published": 1.6}}]
    relation, rows, misses = bench_calibration.choose_relation(ends)
    assert relation == "share" and misses == {"share": 0, "share_by_gap_fraction": 1, "share_by_gap_and_twin": 0}
    twin_rows = bench_calibration.gain_loo(ends, "share_by_gap_and_twin")
    assert [r["forecast_gain"] for r in twin_rows] == [pytest.approx(6.4), pytest.approx(1.6)]


def test_the_calibration_keeps_the_curve_with_fewest_errors_beyond_3_ap_and_leaves_each_dataset_out(
        bench_calibration):
    """On a the log-logistic errs -8 and -1 AP, the power law +2 and +4 (one miss each): the smaller
    largest error keeps the power law; on b the power law misses once (+5), the log-logistic twice."""
    errors = {"log_logistic": {"a": [-8.0, -1.0], "b": [-6.0, -4.0]},
              "power_law": {"a": [2.0, 4.0], "b": [5.0, 0.5]}}
    curve, ranks, loo = bench_calibration.choose_curve(errors)
    assert curve == "power_law" and ranks == {"log_logistic": (3, 8.0), "power_law": (2, 5.0)}
    # a left out: b chooses the power law (1 miss against 2), whose errors on a are reported
    assert loo == {"a": {"curve": "power_law", "errors": [2.0, 4.0]},
                   "b": {"curve": "power_law", "errors": [5.0, 0.5]}}
    # the same misses and largest error: the first of CURVES is kept
    tie = {"log_logistic": {"a": [4.0]}, "power_law": {"a": [-4.0]}}
    assert bench_calibration.choose_curve(tie)[0] == "log_logistic"


def test_the_tool_runs_are_refitted_with_each_curve(tmp_path, bench_calibration):
    # the tool's parts on 25-200 of 2,000 images follow the known power law (68.863 at 2,000); the
    # ceiling measured 70: the power law refitted errs -1.14 AP, the log-logistic more than 2.6
    # under, whatever forecast.json's own (stale) figure says
    results = tmp_path / "results"
    results.mkdir()
    (results / "regimes.json").write_text(json.dumps({"datasets": {"shapes": {
        "curve": {}, "ceiling": {"chosen": "4", "schedules": {"4": {"val_ap": 70.0}}}}}}))
    runs = [{"labeled": n, "seed": 1, "AP": curve_at(KNOWN_POWER_LAW, n), "iterations": 100}
            for n in (25, 50, 100, 200)]
    path = tmp_path / "forecast.json"
    path.write_text(json.dumps({"config": "/data/shapes_10pct.yaml", "labeled": 200, "unlabeled": 1800,
                                "minutes": 10.0, "budget_minutes": 30.0, "runs": runs, "all_labeled": 0.0}))
    power, = bench_calibration.tool_rows([str(path)], [], str(results), "share",
                                         {"more_labels": "power_law", "all_labeled": "power_law"})
    assert power["reach"] == 10.0 and power["ceiling_error"] == pytest.approx(68.863 - 70.0, abs=0.01)
    assert power["ceiling_within_target"] is True
    logistic, = bench_calibration.tool_rows([str(path)], [], str(results), "share",
                                            {"more_labels": "log_logistic", "all_labeled": "log_logistic"})
    assert logistic["ceiling_error"] < -2.6
    # the tool's two curves: 4x the labels (800 images) by the log-logistic is under the power law's 2,000
    both, = bench_calibration.tool_rows([str(path)], [], str(results), "share",
                                        {"more_labels": "log_logistic", "all_labeled": "power_law"})
    assert both["ceiling_error"] == power["ceiling_error"]


def test_more_labels_are_forecast_by_each_curve_at_the_twins_up_to_4x_beyond_the_largest_part(
        tmp_path, bench_calibration):
    # twins on the known log-logistic at 1, 2, 5, 10 and 100 % of 2,000 images: fitted at and under
    # 5 % (100 images) it forecasts 10 % (200, 2x) exactly; 100 % is the ceiling's, 10x: not read
    results = tmp_path / "results"
    results.mkdir()
    curve = {f"supervised_{p:g}pct": {"percent": p, "seeds": {"1": {"final": {"teacher": {
        "AP": curve_at(KNOWN, 20 * p)}}}}} for p in (1, 2, 5, 10, 100)}
    (results / "regimes.json").write_text(json.dumps({"datasets": {"shapes": {"curve": curve}}}))
    rows = bench_calibration.more_labels_rows(str(results), [], "log_logistic")
    assert [(r["largest_part"], r["labeled"]) for r in rows] == [(100.0, 200.0)]
    assert rows[0]["measured"] == pytest.approx(curve_at(KNOWN, 200), abs=0.01)
    assert rows[0]["error"] == pytest.approx(0.0, abs=0.3)
    # the same forecast of a forecast.json's parts: its largest part 50, so 100 (2x) and 200 (4x)
    runs = [{"labeled": n, "AP": curve_at(KNOWN, n)} for n in (20, 30, 40, 50)]
    path = tmp_path / "forecast.json"
    path.write_text(json.dumps({"config": "/data/shapes_2pct.yaml", "runs": runs}))
    rows = bench_calibration.more_labels_rows(str(results), [str(path)], "log_logistic")
    assert sorted((r["largest_part"], r["labeled"]) for r in rows) == [(50, 100.0), (50, 200.0), (100.0, 200.0)]


def test_each_forecast_uses_the_curve_its_calibration_names():
    # parts on the known power law; more labels from the log-logistic fit, everything labeled from
    # the power law: 68.863 at 2,000 images
    counts = [25, 50, 100, 200]
    aps = [curve_at(KNOWN_POWER_LAW, n) for n in counts]
    split = {**CALIBRATION, "curves": {"more_labels": "log_logistic", "all_labeled": "power_law"}}
    out = forecast(counts, aps, 200, 1800, True, split)
    assert out["all_labeled"] == pytest.approx(68.863, abs=0.01)
    assert out["labels_2x"] == pytest.approx(curve_at(fit_learning_curve(counts, aps), 400))
    assert out["labels_2x"] != pytest.approx(curve_at(KNOWN_POWER_LAW, 400), abs=0.05)
    assert {use: fit["curve"] for use, fit in out["fits"].items()} == split["curves"]
    # with 4x the labels fewer than every image, AP with everything labeled is not forecast under it:
    # parts on the power law but the log-logistic fitted for everything labeled (it saturates early)
    # and the power law for more labels: 4x (800 images) 66.56 > the log-logistic's 2,000
    crossed = forecast(counts, aps, 200, 1800, True,
                       {**CALIBRATION, "curves": {"more_labels": "power_law", "all_labeled": "log_logistic"}})
    assert crossed["all_labeled"] == pytest.approx(crossed["labels_4x"]) == pytest.approx(
        curve_at(KNOWN_POWER_LAW, 800), abs=0.01)
    assert crossed["labels_4x"] > curve_at(fit_learning_curve(counts, aps), 2000)
