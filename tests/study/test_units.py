"""The study's pure parts: rank statistics, the cost-model fit on synthetic measurements with a known answer,
member names and the config's checks. No model is built."""

import dataclasses

import numpy as np
import pytest

from common import cli
from study import convert, costmodel, measure, members, report, stats
from study.config import StudyConfig


def test_summary_reports_median_iqr_and_flags_a_wide_spread():
    s = stats.summary([10.0, 10.0, 11.0, 12.0, 30.0], max_spread=0.1)
    assert s["median"] == 11.0 and s["q1"] == 10.0 and s["q3"] == 12.0 and s["n"] == 5
    assert s["spread"] == pytest.approx(2 / 11) and s["noisy"]
    assert not stats.summary([10.0, 10.1, 10.2, 10.1], max_spread=0.1)["noisy"]
    assert stats.quantile([1, 2, 3, 4], 0.5) == np.quantile([1, 2, 3, 4], 0.5)


def test_spearman_matches_known_values_and_handles_ties():
    assert stats.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert stats.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert stats.spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert stats.ranks([3.0, 1.0, 3.0]) == [2.5, 1.0, 2.5]
    with pytest.raises(ValueError):
        stats.spearman([1], [1])


def _synthetic_members(rng, n=9):
    return [
        {
            "key": f"m{i}",
            "macs": float(rng.uniform(0.2e9, 40e9)),
            "activations": float(rng.uniform(5e6, 200e6)),
            "layers": float(rng.integers(150, 900)),
        }
        for i in range(n)
    ]


def test_cost_model_recovers_a_known_linear_law():
    rng = np.random.default_rng(0)
    points = _synthetic_members(rng)
    truth = (2e-9, 5e-8, 1e-2)  # ms per MAC, per activation, per layer
    for p in points:
        p["ms"] = truth[0] * p["macs"] + truth[1] * p["activations"] + truth[2] * p["layers"]
    fit = costmodel.evaluate(points, "ms")
    full = fit["models"]["MACs + activations + layers"]
    assert fit["best"] == "MACs + activations + layers"
    np.testing.assert_allclose(full["coef"], truth, rtol=1e-6)
    assert full["loo_error"] < 1e-6 and full["loo_max_error"] < 1e-6
    assert fit["models"]["MACs"]["loo_error"] > 0.05  # MACs alone cannot explain it
    assert set(fit["shares"]) == {"macs", "activations", "layers"} and all(0 < s < 1 for s in fit["shares"].values())
    text = costmodel.paragraph({"keras_b1_ms": fit}, report.BACKEND_TITLES, "a test CPU")
    assert "MACs + activations + layers predicts the time within 0%" in text and "for MACs alone" in text


def test_cost_model_prefers_the_simplest_law_that_fits_and_stays_non_negative():
    rng = np.random.default_rng(1)
    points = _synthetic_members(rng)
    for p in points:
        p["ms"] = 3e-9 * p["macs"]
    fit = costmodel.evaluate(points, "ms")
    assert fit["best"] == "MACs"
    for model in fit["models"].values():
        assert min(model["coef"]) >= 0
    # a law with a negative activation cost is fitted with that coefficient clamped at zero
    x = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 3.0], [4.0, 2.0]])
    y = x @ np.array([1.0, -0.2])  # unconstrained least squares would give the second term a negative cost
    coef = costmodel.fit(x, y)
    assert coef[1] == 0 and coef[0] > 0
    assert costmodel.evaluate(points[:3], "ms") is None


def test_member_names_resolve_and_unknown_ones_are_refused():
    b7 = members.member("B7", 0)
    assert (b7.key, b7.role, b7.resolution) == ("b7", "family", 600)
    assert members.member("lite2", 32).kind == "lite"
    r = members.member("resnet50", 64)
    assert (r.role, r.resolution) == ("baseline", 64)
    with pytest.raises(ValueError, match="unknown member 'b9'; allowed: b0..b7"):
        members.check_names(["b0", "b9"])
    with pytest.raises(ValueError, match="listed twice"):
        members.check_names(["b0", "B0"])
    assert members.scaled_resolution(240, 32) == 34 and members.scaled_resolution(600, 64) == 171


def test_member_columns_fill_exactly_the_report_member_columns():
    from study import results

    for m in (members.member("B1", 32), members.member("resnet50", 32)):
        columns = results.member_columns(m)
        assert tuple(columns) == results.MEMBER_COLUMNS
    assert results.member_columns(members.member("B1", 32))["scaling"] == "auto"
    assert results.member_columns(members.member("resnet50", 32))["phi"] is None
    assert tuple(results.CSV_COLUMNS[: len(results.MEMBER_COLUMNS)]) == results.MEMBER_COLUMNS


def test_grid_points_satisfy_the_paper_constraint():
    points = members.grid_points()
    assert points[0] == (1.2, 1.1, 1.15)
    assert len(points) == len(set(points)) > 2
    for a, b, g in points:
        assert abs(a * b**2 * g**2 - 2.0) <= 0.1 and min(a, b, g) >= 1.0


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"members": ("b0", "vgg16")}, "--members=b0,vgg16: unknown member 'vgg16'"),
        ({"formula_phis": (13.0,)}, "--formula_phis=13"),
        ({"grid_search": True, "measure_only": True}, "--grid_search=True"),
        ({"image_size": 16}, "--image_size=16: expected 0 (native) or >= 32"),
        ({"rounds": 0}, "--rounds=0: expected an integer >= 1"),
        ({"convert_workers": -1}, "--convert_workers=-1: expected an integer >= 0"),
        ({"max_spread": 0.0}, "--max_spread=0.0: expected a number > 0"),
        ({"target_accuracy": 1.5}, "--target_accuracy=1.5"),
        ({"dataset": "folder"}, "--dataset=folder needs --data_dir"),
        ({"out": ""}, "--out is required"),
    ],
)
def test_bad_settings_name_the_flag(changes, fragment):
    with pytest.raises(cli.UsageError) as e:
        StudyConfig(**{"measure_only": True, **changes})
    assert fragment in str(e.value)


def test_command_line_names_every_changed_flag():
    config = StudyConfig(
        out="S",
        members=("b0", "resnet50"),
        measure_only=True,
        image_size=32,
        rounds=3,
        backends=("keras_b1",),
        sample_s=0.05,
    )
    assert report.command_line(config) == (
        "keras-effnet-study --out=S --members=b0,resnet50 --measure_only "
        "--image_size=32 --backends=keras_b1 --rounds=3 --sample_s=0.05"
    )
    assert dataclasses.replace(config).members == ("b0", "resnet50")


def _job(key, params):
    return convert.Job(
        member=members.member(key, 32),
        precisions=("float32",),
        paths={},
        trained_model=None,
        classes=2,
        seed=0,
        calibration=2,
        data_dir=None,
        params=params,
    )


def test_conversions_start_largest_first_and_only_the_fresh_worker_takes_large_ones():
    b7, b6, b0, b1 = _job("b7", 66_000_000), _job("b6", 43_000_000), _job("b0", 5_000_000), _job("b1", 8_000_000)
    pending = convert.order([b0, b6, b1, b7])
    assert pending == [b7, b6, b1, b0]
    assert convert.slots(2) == [convert.FRESH, convert.REUSED] and convert.slots(0) == [convert.FRESH]
    assert convert.next_job(pending, convert.FRESH) is b7
    assert convert.next_job([b6, b1, b0], convert.REUSED) is b1  # B6 waits for the fresh worker
    assert convert.next_job([b6], convert.REUSED) is None
    assert convert.next_job([b1, b0], convert.FRESH) is b1
    assert convert.next_job([], convert.FRESH) is None


def test_memory_watch_counts_the_children_of_the_process():
    """A child holding 400 MB: the tree's resident memory includes it, this process's own does not."""
    import subprocess
    import sys
    import time

    code = "import sys, time; b = bytearray(400_000_000); b[::4096] = b'x' * len(b[::4096]); print(1, flush=True); time.sleep(30)"
    with measure.MemoryWatch(interval=0.05) as watch:
        before = measure.tree_rss_bytes()
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "1"
            time.sleep(0.3)
            during = measure.tree_rss_bytes()
        finally:
            child.kill()
            child.wait()
    assert during - before > 350e6, (before, during)
    assert watch.peak >= during * 0.95
    assert measure.tree_rss_bytes() < during - 300e6
