"""Drift statistics: served values against the reference profile stored at registration.

A profile keeps quantile bin edges and counts per numeric column, not the training
sample, so numeric columns are compared on the reference's own bins:

- **KS**: both CDFs are read at the bin edges, where the reference CDF is exact. The
  statistic is never larger than the two-sample KS on the raw data, so the test never
  overstates drift; its p-value is Smirnov's asymptotic one, as scipy's
  ``ks_2samp(method="asymp")`` computes it, with the reference's row count.
- **Wasserstein** (divided by the reference's standard deviation, as Evidently does):
  both sides are spread evenly within each reference bin, the same smoothing on each,
  so a sample from the reference distribution scores near 0; values outside the
  reference's range count at their exact distance.
- **PSI**, **Jensen-Shannon**, **chi-squared**, **z**: on the bins plus one bin below
  and one above the reference's range, or on category frequencies.

Numeric columns with few distinct values (few distinct quantile edges) are compared
bin by bin, as categories: Evidently's rule for ``n_unique <= 5``.

**False alarms.** A report compares k columns at once, so each test runs at
``p_value / k`` (Bonferroni): a window drawn from the reference's own distribution
flags any column at most ``p_value`` of the time. A distance only flags drift when
it reaches its threshold *and* its column's test (KS for Wasserstein, chi-squared
on the same bins for Jensen-Shannon and PSI) rejects at that level: a distance
between small samples is mostly noise (its null size shrinks as ``1/sqrt(n)``), and
the test is what knows how large that noise is. Columns with fewer than
``min_rows`` served values get no verdict, and chi-squared pools the bins too
sparse for its approximation (fewer than 10 values on both sides together).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import special, stats

from inferline.settings import DriftSettings

__all__ = [
    "OTHER",
    "chi_squared",
    "compare",
    "jensen_shannon",
    "ks_binned",
    "psi",
    "score_column",
    "wasserstein_binned",
    "z_test",
]

Array = np.ndarray[Any, Any]

#: Categories outside the reference's top ones (or never seen in it).
OTHER = "(other)"
_P_VALUE_METHODS = frozenset({"ks", "chisquare", "z"})
#: The test whose p-value a distance must also pass: its significance at this sample size.
_COMPANION = {"wasserstein": "ks", "jensenshannon": "chisquare", "psi": "chisquare"}
#: Numeric columns with fewer distinct quantile edges are compared as categories.
_FEW_EDGES = 6
#: Chi-squared pools bins holding fewer values than this, reference and served together.
_SPARSE = 10


# -- statistics (pure) --------------------------------------------------------------
def psi(reference: Array, served: Array, floor: float = 1e-4) -> float:
    """Population stability index of two count vectors; empty bins count as ``floor``."""
    expected, actual = _shares(reference, floor), _shares(served, floor)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _shares(counts: Array, floor: float) -> Array:
    total = float(np.sum(counts))
    shares = np.asarray(counts, dtype=np.float64) / total if total else np.zeros(len(counts))
    return np.where(shares == 0, floor, shares)


def jensen_shannon(reference: Array, served: Array) -> float:
    """Jensen-Shannon distance (natural log) of two count vectors, as scipy computes it.

    scipy's ``jensenshannon`` takes the square root of a divergence that rounding can
    leave a hair below 0 for equal shares (nan, and a warning); this clips it at 0.
    """
    p, q = np.asarray(reference, np.float64), np.asarray(served, np.float64)
    p, q = p / np.sum(p), q / np.sum(q)
    m = (p + q) / 2.0
    divergence = (np.sum(special.rel_entr(p, m)) + np.sum(special.rel_entr(q, m))) / 2.0
    return float(np.sqrt(max(float(divergence), 0.0)))


def chi_squared(reference: Array, served: Array) -> tuple[float, float]:
    """Chi-squared test of homogeneity of two count vectors: (statistic, p).

    The reference is a sample too, so this is the two-sample test (scipy's
    ``chi2_contingency``), not a goodness-of-fit against the reference's shares.
    """
    table = np.vstack([np.asarray(reference, float), np.asarray(served, float)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or table.sum(axis=1).min() == 0:
        return 0.0, 1.0
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def z_test(reference: Array, served: Array) -> tuple[float, float]:
    """Two-proportion z-test on the first of two categories: (z, two-sided p)."""
    n1, n2 = float(np.sum(reference)), float(np.sum(served))
    pooled = (reference[0] + served[0]) / (n1 + n2)
    if pooled <= 0 or pooled >= 1:
        return 0.0, 1.0
    z = (reference[0] / n1 - served[0] / n2) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return float(z), float(2 * stats.norm.sf(abs(z)))


def ks_binned(edges: Array, counts: Array, values: Array) -> tuple[float, float]:
    """KS statistic read at the reference edges, and its asymptotic two-sample p-value."""
    values = np.sort(values)
    n, m = values.size, float(np.sum(counts))
    reference = np.concatenate([[0.0], np.cumsum(counts)[:-1] / m, [1.0]])
    served = np.concatenate(
        [
            np.searchsorted(values, edges[:-1], side="left"),
            np.searchsorted(values, edges[-1:], side="right"),
        ]
    ) / float(n)
    d = float(np.max(np.abs(reference - served)))
    effective = np.round(m * n / (m + n))
    return d, float(np.clip(stats.kstwo.sf(d, effective), 0.0, 1.0))


def wasserstein_binned(edges: Array, counts: Array, values: Array) -> float:
    """W1 between served values and the reference (bin masses, served shape within bins).

    Inside each reference bin the reference is given the served values' own shape
    (even spread when none fell there), so only the bin masses can differ: a sample
    of the reference distribution scores near 0, whatever its tails look like.
    """
    values = np.sort(np.asarray(values, dtype=np.float64))
    n, k = float(values.size), edges.size - 1
    below, above = values[values < edges[0]], values[values > edges[-1]]
    outside = (float(np.sum(edges[0] - below)) + float(np.sum(above - edges[-1]))) / n
    inside = values[(values >= edges[0]) & (values <= edges[-1])]
    bins = np.clip(np.searchsorted(edges, inside, side="right") - 1, 0, k - 1)
    per_bin = np.bincount(bins, minlength=k)
    mass = np.asarray(counts, dtype=np.float64) / float(np.sum(counts))
    gap = (
        np.concatenate([[0.0], np.cumsum(mass)[:-1]])
        - (below.size + np.concatenate([[0], np.cumsum(per_bin)[:-1]])) / n
    )  # reference minus served CDF at each bin's left edge
    # Bins with served values: the difference is constant between consecutive values.
    starts = np.searchsorted(bins, np.arange(k), side="left")
    rank = np.arange(inside.size) - starts[bins] + 1
    last = np.append(bins[1:] != bins[:-1], True)
    right = np.where(last, edges[bins + 1], np.append(inside[1:], 0.0))
    after = gap[bins] + rank * (mass[bins] / np.maximum(per_bin[bins], 1) - 1 / n)
    area = float(np.sum(np.abs(after) * (right - inside)))
    used = per_bin > 0
    area += float(np.sum(np.abs(gap[used]) * (inside[starts[used]] - edges[:-1][used])))
    # Empty bins: the reference spreads evenly, the served CDF is flat.
    a, b, widths = gap[~used], gap[~used] + mass[~used], np.diff(edges)[~used]
    span = np.abs(a) + np.abs(b)
    crossing = np.divide(a * a + b * b, 2 * span, out=np.zeros_like(span), where=span > 0)
    area += float(np.sum(np.where(a * b >= 0, span / 2, crossing) * widths))
    return outside + area


# -- columns --------------------------------------------------------------------------
def compare(
    profile: Mapping[str, Any],
    columns: Mapping[str, Array],
    settings: DriftSettings,
    reference_rows: int | None,
) -> dict[str, Any]:
    """Each profiled column with enough served values, then the share that drifted.

    The columns compared together are one family of tests: each runs at
    ``p_value / k`` for k columns (``correction="bonferroni"``).
    """
    scored = {}
    for name, entry in profile.items():
        values = columns.get(name)
        if values is None or entry.get("count", 0) == 0:
            continue
        result = score_column(name, entry, values, settings, reference_rows)
        if result is not None:
            scored[name] = result
    level = settings.p_value
    if settings.correction == "bonferroni" and scored:
        level /= len(scored)
    results = {name: _verdict(name, result, level, settings) for name, result in scored.items()}
    drifted = sorted(name for name, r in results.items() if r["drifted"])
    share = len(drifted) / len(results) if results else 0.0
    return {"columns": results, "drifted": drifted, "share": share, "p_threshold": level}


def score_column(
    name: str,
    entry: Mapping[str, Any],
    values: Array,
    settings: DriftSettings,
    reference_rows: int | None,
) -> dict[str, Any] | None:
    """One column's statistics and chosen method; None with fewer than ``min_rows`` values."""
    small = (reference_rows or int(entry["count"])) <= settings.small_reference_rows
    wanted = settings.feature_stattest.get(name, settings.stattest)
    if entry["kind"] == "numeric":
        try:
            numbers = np.asarray(values, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            return None  # served as text where training had numbers: not comparable
        numbers = numbers[np.isfinite(numbers)]
        if numbers.size < settings.min_rows:
            return None
        edges, counts = np.asarray(entry["edges"], float), np.asarray(entry["counts"], float)
        if edges.size >= _FEW_EDGES:
            return _numeric(edges, counts, numbers, entry, small, wanted)
        labels, reference, served = _binned_as_categories(edges, counts, numbers, entry)
    else:
        texts = _texts(values)
        if len(texts) < settings.min_rows:
            return None
        labels, reference, served = _categories(entry, texts)
    return _categorical(labels, reference, served, small, wanted)


def _numeric(
    edges: Array,
    counts: Array,
    values: Array,
    entry: Mapping[str, Any],
    small: bool,
    wanted: str,
) -> dict[str, Any]:
    d, p = ks_binned(edges, counts, values)
    norm = max(float(entry.get("std") or 0.0), 0.001)
    reference = np.concatenate([[0.0], counts, [0.0]])
    served = np.concatenate(
        [
            [np.sum(values < edges[0])],
            np.histogram(values, bins=edges)[0],
            [np.sum(values > edges[-1])],
        ]
    ).astype(np.float64)
    scores = {
        "ks": p,
        "ks_statistic": d,
        "wasserstein": wasserstein_binned(edges, counts, values) / norm,
        "psi": psi(reference, served),
        "jensenshannon": jensen_shannon(reference, served),
        "chisquare": chi_squared(*_pooled(reference, served))[1],
    }
    method = wanted if wanted in scores and wanted != "auto" else ("ks" if small else "wasserstein")
    histogram = {"edges": edges.tolist(), "reference": _norm(reference), "served": _norm(served)}
    return _scored("numeric", method, scores, int(values.size), histogram)


def _categorical(
    labels: list[str],
    reference: Array,
    served: Array,
    small: bool,
    wanted: str,
) -> dict[str, Any]:
    scores = {
        "chisquare": chi_squared(*_pooled(reference, served))[1],
        "psi": psi(reference, served),
        "jensenshannon": jensen_shannon(reference, served),
    }
    seen = int(np.sum(reference > 0))
    if len(labels) == 2:
        scores["z"] = z_test(reference, served)[1]
    if wanted in scores:
        method = wanted
    elif small:
        method = "z" if "z" in scores and seen <= 2 else "chisquare"
    else:
        method = "jensenshannon"
    histogram = {"labels": labels, "reference": _norm(reference), "served": _norm(served)}
    return _scored("categorical", method, scores, int(np.sum(served)), histogram)


def _scored(
    kind: str, method: str, scores: dict[str, float], rows: int, histogram: dict[str, Any]
) -> dict[str, Any]:
    return {"kind": kind, "method": method, "stats": scores, "rows": rows, "histogram": histogram}


def _verdict(
    name: str, scored: dict[str, Any], level: float, settings: DriftSettings
) -> dict[str, Any]:
    """Tests: p below the family's level. Distances: at the threshold and significant."""
    method, scores = scored["method"], scored["stats"]
    score = scores[method]
    own = settings.feature_threshold.get(name)
    if method in _P_VALUE_METHODS:
        threshold = own if own is not None else level
        p_value, p_threshold = score, threshold
        drifted = score < threshold
    else:
        default = settings.psi_threshold if method == "psi" else settings.distance_threshold
        threshold = own if own is not None else default
        p_value, p_threshold = scores[_COMPANION[method]], level
        drifted = score >= threshold and p_value < p_threshold
    return {
        "kind": scored["kind"],
        "method": method,
        "score": score,
        "threshold": threshold,
        "p_value": p_value,
        "p_threshold": p_threshold,
        "drifted": bool(drifted),
        "rows": scored["rows"],
        "stats": scores,
        "histogram": scored["histogram"],
    }


def _pooled(reference: Array, served: Array) -> tuple[Array, Array]:
    """Bins holding fewer than ``_SPARSE`` values on both sides together, as one bin.

    Chi-squared's approximation needs expected counts of about 5 in every cell; a
    sparse bin (a rare category, a tail past the reference's range) would otherwise
    make it reject far more often than its p-value says.
    """
    sparse = (reference + served) < _SPARSE
    if np.count_nonzero(sparse) == 0:
        return reference, served
    pooled_r = np.append(reference[~sparse], np.sum(reference[sparse]))
    pooled_s = np.append(served[~sparse], np.sum(served[sparse]))
    if pooled_r[-1] + pooled_s[-1] < _SPARSE and pooled_r.size > 2:
        smallest = int(np.argmin((pooled_r + pooled_s)[:-1]))
        pooled_r[smallest] += pooled_r[-1]
        pooled_s[smallest] += pooled_s[-1]
        pooled_r, pooled_s = pooled_r[:-1], pooled_s[:-1]
    return pooled_r, pooled_s


def _binned_as_categories(
    edges: Array, counts: Array, values: Array, entry: Mapping[str, Any]
) -> tuple[list[str], Array, Array]:
    """Few distinct values: a two-valued column from its mean, else the reference bins."""
    low, high = float(entry["min"]), float(entry["max"])
    if edges.size == 2 and np.all((values == low) | (values == high)):
        share = (float(entry["mean"]) - low) / (high - low)
        reference = float(entry["count"]) * np.array([1 - share, share])
        served = np.array([np.sum(values == low), np.sum(values == high)], dtype=np.float64)
        return [f"{low:g}", f"{high:g}"], reference, served
    inside = np.histogram(values, bins=edges)[0] if edges.size > 1 else [np.sum(values == edges[0])]
    below, above = np.sum(values < edges[0]), np.sum(values > edges[-1])
    served = np.concatenate([[below], inside, [above]]).astype(np.float64)
    reference = np.concatenate([[0.0], counts, [0.0]])
    labels = [f"< {edges[0]:g}"]
    labels += [f"[{edges[i]:g}, {edges[i + 1]:g})" for i in range(edges.size - 1)] or [f"{low:g}"]
    labels.append(f"> {edges[-1]:g}")
    return labels, reference, served


def _categories(entry: Mapping[str, Any], texts: list[str]) -> tuple[list[str], Array, Array]:
    frequencies: dict[str, int] = dict(entry["frequencies"])
    other = int(entry["count"]) - sum(frequencies.values())
    counted = Counter(texts)
    labels = list(frequencies)
    served = [counted.pop(label, 0) for label in labels]
    labels.append(OTHER)
    return (
        labels,
        np.array([*frequencies.values(), other], dtype=np.float64),
        np.array([*served, sum(counted.values())], dtype=np.float64),
    )


def _texts(values: Array) -> list[str]:
    """Served values as the profile's strings (bytes decoded; None and nan are nulls)."""
    texts = (v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in values.ravel())
    return [t for t in texts if t not in ("None", "nan")]


def _norm(counts: Array) -> list[float]:
    total = float(np.sum(counts))
    return [float(c) / total if total else 0.0 for c in counts]
