"""Drift statistics against scipy's, verdicts on synthetic shifts, dataset drift and skew.

A report tests each of its k columns at 0.05 / k, so a clean window flags anything at
most 5 % of the time; every seed is fixed, so every verdict is too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from inferline.monitoring.drift import (
    chi_squared,
    compare,
    jensen_shannon,
    ks_binned,
    psi,
    wasserstein_binned,
    z_test,
)
from inferline.monitoring.monitor import Monitor, folder_profiles
from inferline.monitoring.records import InferenceRecord
from inferline.registry.profile import profile_columns
from inferline.settings import DriftSettings, MonitoringSettings

NAMES = ["amount", "age", "ratio", "is_new", "country", "channel"]
SHIFTED = {"amount", "ratio", "country"}


def draw(rng: np.random.Generator, rows: int, shift: frozenset[str] = frozenset()) -> dict:
    """Six columns; a shifted column moves well past any threshold's noise."""
    s = {name: name in shift for name in NAMES}
    return {
        "amount": rng.lognormal(3.0 + 0.6 * s["amount"], 1.0, rows),
        "age": rng.normal(40 + 8 * s["age"], 10, rows),
        "ratio": rng.beta(2 + 3 * s["ratio"], 5, rows),
        "is_new": (rng.uniform(size=rows) < (0.6 if s["is_new"] else 0.3)).astype(np.int64),
        "country": rng.choice(
            ["de", "fr", "it", "es"],
            rows,
            p=[0.1, 0.2, 0.3, 0.4] if s["country"] else [0.4, 0.3, 0.2, 0.1],
        ),
        "channel": rng.choice(["web", "app"], rows, p=[0.2, 0.8] if s["channel"] else [0.6, 0.4]),
    }


def profile(columns: dict) -> dict:
    rows = len(next(iter(columns.values())))
    return {"rows": rows, "features": profile_columns(columns), "predictions": {}}


# -- statistics against scipy ---------------------------------------------------------
def test_count_statistics_equal_scipys() -> None:
    reference, served = np.array([40.0, 30, 20, 10]), np.array([25.0, 25, 30, 20])
    assert jensen_shannon(reference, served) == pytest.approx(
        distance.jensenshannon(reference / 100, served / 100), rel=1e-12
    )
    expected = stats.chi2_contingency(np.vstack([reference, served]), correction=False)
    assert chi_squared(reference, served) == pytest.approx(
        (expected.statistic, expected.pvalue), rel=1e-12
    )
    # Two categories: the z-test is the chi-squared test (z² = chi²).
    z, p = z_test(reference[:2], served[:2])
    chi, p_chi = chi_squared(reference[:2], served[:2])
    assert z**2 == pytest.approx(chi, rel=1e-12) and p == pytest.approx(p_chi, rel=1e-9)
    shares_r, shares_s = reference / 100, served / 100
    assert psi(reference, served) == pytest.approx(
        np.sum((shares_s - shares_r) * np.log(shares_s / shares_r)), rel=1e-12
    )


def test_ks_equals_ks_2samp_when_values_sit_on_the_edges() -> None:
    rng = np.random.default_rng(1)
    reference, served = rng.integers(0, 11, 700), rng.integers(1, 11, 900)
    edges = np.arange(11, dtype=float)
    counts = np.histogram(reference, bins=edges)[0]
    d, p = ks_binned(edges, counts, served.astype(float))
    expected = stats.ks_2samp(reference, served, method="asymp")
    assert d == pytest.approx(expected.statistic, rel=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9)


def test_ks_on_bins_never_overstates_drift() -> None:
    rng = np.random.default_rng(2)
    reference, served = rng.normal(size=900), rng.normal(0.15, 1.1, size=600)
    entry = profile_columns({"x": reference})["x"]
    d, p = ks_binned(np.array(entry["edges"]), np.array(entry["counts"]), served)
    exact = stats.ks_2samp(reference, served, method="asymp")
    assert d <= exact.statistic and p >= exact.pvalue
    assert d == pytest.approx(exact.statistic, abs=0.03)


def test_wasserstein_on_bins_tracks_scipys() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=5000)
    entry = profile_columns({"x": reference})["x"]
    edges, counts = np.array(entry["edges"]), np.array(entry["counts"])
    # The reference's own sample: bin masses agree, so the distance is 0.
    assert wasserstein_binned(edges, counts, reference) == pytest.approx(0.0, abs=1e-12)
    for shift, scale in ((0.3, 1.0), (0.0, 1.5), (-1.0, 0.7)):
        served = rng.normal(shift, scale, size=2000)
        assert wasserstein_binned(edges, counts, served) == pytest.approx(
            stats.wasserstein_distance(reference, served), rel=0.15
        )


# -- verdicts -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reference_rows", "numeric", "categorical"),
    [(800, "ks", {"chisquare", "z"}), (5000, "wasserstein", {"jensenshannon"})],
)
def test_shifted_features_are_flagged_exactly(
    reference_rows: int, numeric: str, categorical: set[str]
) -> None:
    rng = np.random.default_rng(4)
    reference = profile(draw(rng, reference_rows))
    settings = DriftSettings()
    same = compare(reference["features"], draw(rng, 1000), settings, reference_rows)
    assert same["drifted"] == [] and same["share"] == 0
    shifted = compare(
        reference["features"], draw(rng, 1000, frozenset(SHIFTED)), settings, reference_rows
    )
    assert set(shifted["drifted"]) == SHIFTED
    assert shifted["share"] == pytest.approx(0.5)
    methods = {name: result["method"] for name, result in shifted["columns"].items()}
    assert {methods[n] for n in ("amount", "age", "ratio")} == {numeric}
    assert {methods[n] for n in ("is_new", "country", "channel")} <= categorical


def test_methods_and_thresholds_are_configurable() -> None:
    rng = np.random.default_rng(5)
    reference = profile(draw(rng, 800))
    served = draw(rng, 1000)
    served["age"] = served["age"] + 5  # half a std
    settings = DriftSettings(stattest="psi", feature_stattest={"age": "wasserstein"})
    result = compare(reference["features"], served, settings, 800)
    assert result["columns"]["amount"]["method"] == "psi"
    age = result["columns"]["age"]
    assert age["method"] == "wasserstein" and age["threshold"] == 0.1
    assert age["score"] >= 0.1 and age["p_value"] < result["p_threshold"]
    assert result["drifted"] == ["age"]
    # A column's own threshold: the same distance, now under it.
    lenient = settings.model_copy(update={"feature_threshold": {"age": 1.0}})
    assert compare(reference["features"], served, lenient, 800)["drifted"] == []


def test_proportional_counts_are_zero_apart_with_no_warning() -> None:
    # scipy's jensenshannon takes the root of a divergence rounded below 0 here: nan.
    reference = np.array([0.0, 63, 51, 26, 30, 4, 7, 1, 17, 81, 64, 91, 0])
    assert jensen_shannon(reference, reference * 15) == pytest.approx(0.0, abs=1e-7)


# -- false alarms: a sample of the reference's own distribution -------------------------
EIGHT = ["amount", "age", "ratio", "is_new", "country", "channel", "visits", "city"]
CITIES = [f"c{i}" for i in range(30)]
CITY_SHARES = np.r_[np.full(10, 0.07), np.full(20, 0.015)]  # a long tail of rare values


def draw_eight(rng: np.random.Generator, rows: int, shift: frozenset[str] = frozenset()) -> dict:
    """The six columns, a count and a 30-valued category with rare values."""
    columns = draw(rng, rows, shift)
    columns["visits"] = rng.poisson(4.0 + 1.5 * ("visits" in shift), rows).astype(np.float64)
    columns["city"] = rng.choice(
        CITIES, rows, p=CITY_SHARES[::-1] if "city" in shift else CITY_SHARES
    )
    return columns


@pytest.mark.parametrize(
    ("reference_rows", "window"),
    [
        (300, DriftSettings().window_rows),  # a small reference: tests
        (5000, DriftSettings().window_rows),  # a large one: distances
        (300, DriftSettings().skew_rows),  # a skew block
        (5000, DriftSettings().skew_rows),
        (5000, DriftSettings().min_rows),  # the smallest window with a verdict
    ],
)
def test_in_distribution_windows_raise_at_most_the_stated_false_positive_rate(
    reference_rows: int, window: int
) -> None:
    """50 windows drawn like the reference: at most p_value of them flag any column."""
    settings = DriftSettings()
    rng = np.random.default_rng(reference_rows + window)
    reference = profile(draw_eight(rng, reference_rows))
    alarms = []
    for _ in range(50):
        result = compare(reference["features"], draw_eight(rng, window), settings, reference_rows)
        assert len(result["columns"]) == len(EIGHT)
        alarms.append(result["drifted"])
    flagged = [names for names in alarms if names]
    assert len(flagged) <= settings.p_value * len(alarms), flagged


def test_a_real_shift_is_still_detected_at_the_default_window() -> None:
    settings = DriftSettings()
    rng = np.random.default_rng(21)
    raw = draw_eight(rng, 800)
    reference = profile(raw)
    shifted = frozenset({"amount", "ratio", "country", "visits", "city"})
    served = draw_eight(rng, settings.window_rows, shifted)
    result = compare(reference["features"], served, settings, 800)
    assert set(result["drifted"]) == shifted
    assert result["p_threshold"] == pytest.approx(settings.p_value / len(EIGHT))
    # The statistics behind the verdicts, against scipy's on the same raw data.
    for name in ("amount", "ratio"):
        column = result["columns"][name]
        exact = stats.ks_2samp(raw[name], served[name], method="asymp")
        assert column["method"] == "ks"
        assert column["stats"]["ks_statistic"] <= exact.statistic  # binned: never overstated
        assert column["p_value"] >= exact.pvalue and column["p_value"] < 1e-6
    for name in ("country", "city"):
        labels = sorted(set(raw[name]) | set(served[name]))
        table = np.array([[np.sum(raw[name] == v) for v in labels],
                          [np.sum(served[name] == v) for v in labels]])  # fmt: skip
        exact = stats.chi2_contingency(table, correction=False)
        column = result["columns"][name]
        assert column["method"] == "chisquare" and column["p_value"] < 1e-6
        if name == "country":  # no sparse bins to pool: exactly scipy's test
            assert column["p_value"] == pytest.approx(exact.pvalue, rel=1e-9)


def test_columns_with_too_few_values_get_no_verdict() -> None:
    rng = np.random.default_rng(22)
    reference = profile(draw(rng, 800))
    served = draw(rng, 100)
    served["age"] = np.where(np.arange(100) < 40, served["age"], np.nan)  # 40 values < 50
    result = compare(reference["features"], served, DriftSettings(), 800)
    assert "age" not in result["columns"] and len(result["columns"]) == len(NAMES) - 1


# -- through the monitor: dataset drift, prediction drift, skew -------------------------
def record(i: int, columns: dict, version: str = "1") -> InferenceRecord:
    """One served request: the numeric features as one 2-D input, a label output."""
    matrix = np.column_stack([columns[n] for n in ("amount", "age", "ratio")])
    label = (columns["ratio"] > 0.3).astype(np.int64)
    return InferenceRecord(
        f"r{i}", "fraud", version, "rest", float(i), 0.001, 200, {"input": matrix}, {"label": label}
    )


def numeric_profile(columns: dict) -> dict:
    numeric = {n: columns[n] for n in ("amount", "age", "ratio")}
    label = (columns["ratio"] > 0.3).astype(np.int64)
    return {
        "rows": len(label),
        "features": profile_columns(numeric),
        "predictions": profile_columns({"label": label}),
    }


def feed(monitor: Monitor, rng: np.random.Generator, batches: int, shift=frozenset()) -> None:
    for i in range(batches):
        monitor.observe(record(i, draw(rng, 50, frozenset(shift))))


def test_dataset_and_prediction_drift_from_served_requests() -> None:
    rng = np.random.default_rng(6)
    reference = numeric_profile(draw(rng, 800))
    settings = MonitoringSettings(drift=DriftSettings(window_rows=1000, skew_rows=100))
    monitor = Monitor(settings, lambda model, version: reference)
    feed(monitor, rng, 20)
    clean = monitor.drift_report("fraud", "1")
    assert clean["status"] == "ok" and clean["rows"] == 1000
    assert clean["drifted"] == [] and not clean["dataset_drift"]
    assert set(clean["predictions"]) == {"label"} and clean["prediction_drifted"] == []
    feed(monitor, rng, 20, {"ratio"})  # fills the window: one of three features (33 %)
    one = monitor.drift_report("fraud", "1")
    assert one["drifted"] == ["ratio"] and not one["dataset_drift"]
    assert one["prediction_drifted"] == ["label"]  # the label follows ratio
    feed(monitor, rng, 20, {"ratio", "amount"})  # two of three (67 %) ≥ 50 %
    two = monitor.drift_report("fraud", "1")
    assert two["drifted"] == ["amount", "ratio"] and two["dataset_drift"]
    figures = monitor.figures("fraud", "1")
    assert figures["drift.share"] == pytest.approx(2 / 3) and figures["drift.dataset"] == 1.0


def test_skew_is_judged_per_block_and_clears_when_a_block_is_clean() -> None:
    rng = np.random.default_rng(17)
    reference = numeric_profile(draw(rng, 800))
    settings = MonitoringSettings(drift=DriftSettings(window_rows=500, skew_rows=200))
    skewed = Monitor(settings, lambda model, version: reference)
    for i in range(4):  # the first 200 rows: "amount" in cents, a unit bug online
        columns = draw(rng, 50)
        columns["amount"] = columns["amount"] * 100
        skewed.observe(record(i, columns))
    report = skewed.drift_report("fraud", "1")
    assert report["skew"]["skewed"] and report["skew"]["features"] == ["amount"]
    assert report["skew"]["rows"] == 200 and report["skew"]["block"] == 1
    assert skewed.figures("fraud", "1")["skew.share"] == pytest.approx(1 / 3)

    feed(skewed, rng, 20)  # the pipeline is fixed: clean traffic, five more blocks
    report = skewed.drift_report("fraud", "1")
    assert report["drifted"] == []  # the slow-drift window is clean by now
    skew = report["skew"]
    assert not skew["skewed"] and skew["features"] == [] and skew["block"] == 6
    assert skew["first"] == {"block": 1, "rows": 200, "skewed": True, "features": ["amount"]}
    assert skewed.figures("fraud", "1")["skew.share"] == 0.0

    clean = Monitor(settings, lambda model, version: reference)
    feed(clean, np.random.default_rng(18), 4)
    skew = clean.drift_report("fraud", "1")["skew"]
    assert skew["rows"] == 200 and not skew["skewed"] and skew["features"] == []


def test_no_profile_means_no_verdict() -> None:
    monitor = Monitor(MonitoringSettings())
    monitor.observe(record(0, draw(np.random.default_rng(8), 10)))
    report = monitor.drift_report("fraud", "1")
    assert report["reference"] is False and report["status"] == "no reference profile"


def test_model_folders_read_reference_profile_json(tmp_path: Path) -> None:
    reference = numeric_profile(draw(np.random.default_rng(9), 300))
    (tmp_path / "fraud" / "1").mkdir(parents=True)
    (tmp_path / "fraud" / "1" / "reference-profile.json").write_text(json.dumps(reference))
    (tmp_path / "fraud" / "2").mkdir()
    (tmp_path / "fraud" / "2" / "reference-profile.json").write_text("{not json")
    lookup = folder_profiles(tmp_path)
    assert lookup("fraud", "1") == reference
    assert lookup("fraud", "2") is None and lookup("fraud", "3") is None


def test_a_profile_written_while_serving_is_picked_up(tmp_path: Path) -> None:
    now = [0.0]
    monitor = Monitor(
        MonitoringSettings(interval_seconds=10), folder_profiles(tmp_path), clock=lambda: now[0]
    )
    rng = np.random.default_rng(10)
    feed(monitor, rng, 2)
    assert monitor.drift_report("fraud", "1")["status"] == "no reference profile"
    (tmp_path / "fraud" / "1").mkdir(parents=True)
    reference = numeric_profile(draw(rng, 300))
    (tmp_path / "fraud" / "1" / "reference-profile.json").write_text(json.dumps(reference))
    assert monitor.drift_report("fraud", "1")["reference"] is False  # looked up this round
    now[0] = 10.0
    report = monitor.drift_report("fraud", "1")
    assert report["reference"] is True and report["status"] == "ok"
