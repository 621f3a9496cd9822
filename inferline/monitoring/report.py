"""What the monitor shows: the HTML drift report and the Prometheus gauges.

The report is one self-contained page: the drift table, and reference vs served
histograms as inline SVG drawn here, so it opens anywhere with no plotting
library and no network. The gauges read the monitor's last refresh, so a scrape
computes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from inferline.monitoring.monitor import Monitor

__all__ = ["MonitorCollector", "histogram_svg", "render_html"]

_WIDTH, _HEIGHT, _PAD = 420, 180, 28
_REFERENCE, _SERVED = "#4c78a8", "#f58518"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
.drifted { color: #b00020; font-weight: bold; }
.grid { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; } figcaption { font-size: 0.9rem; }
"""


def histogram_svg(title: str, histogram: dict[str, Any]) -> str:
    """Side-by-side bars of the reference's and the served shares per bin."""
    labels = _labels(histogram)
    reference, served = histogram["reference"], histogram["served"]
    top = max([*reference, *served, 1e-9])
    slot = (_WIDTH - 2 * _PAD) / max(len(labels), 1)
    bar = slot * 0.4
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{_PAD}" y1="{_HEIGHT - _PAD}" x2="{_WIDTH - _PAD}" '
        f'y2="{_HEIGHT - _PAD}" stroke="#888"/>',
    ]
    usable = _HEIGHT - 2 * _PAD
    for i, label in enumerate(labels):
        x = _PAD + i * slot + slot * 0.1
        for offset, share, colour in ((0.0, reference[i], _REFERENCE), (bar, served[i], _SERVED)):
            height = usable * share / top
            parts.append(
                f'<rect x="{x + offset:.1f}" y="{_HEIGHT - _PAD - height:.1f}" '
                f'width="{bar:.1f}" height="{height:.1f}" fill="{colour}">'
                f"<title>{escape(label)}: {share:.1%}</title></rect>"
            )
        if len(labels) <= 14:
            parts.append(
                f'<text x="{x + bar:.1f}" y="{_HEIGHT - _PAD + 12}" font-size="8" '
                f'text-anchor="middle">{escape(_short(label))}</text>'
            )
    parts.append(
        f'<text x="{_PAD}" y="14" font-size="11" fill="{_REFERENCE}">■ reference</text>'
        f'<text x="{_PAD + 90}" y="14" font-size="11" fill="{_SERVED}">■ served</text>'
        f'<text x="{_WIDTH - _PAD}" y="14" font-size="11" text-anchor="end">'
        f"max {top:.1%}</text></svg>"
    )
    return "".join(parts)


def _labels(histogram: dict[str, Any]) -> list[str]:
    if "labels" in histogram:
        return [str(label) for label in histogram["labels"]]
    edges = histogram["edges"]
    inner = [f"[{edges[i]:.3g}, {edges[i + 1]:.3g})" for i in range(len(edges) - 1)]
    return [f"< {edges[0]:.3g}", *inner, f"> {edges[-1]:.3g}"]


def _short(label: str) -> str:
    return label if len(label) <= 12 else label[:11] + "…"


def render_html(model: str, reports: list[dict[str, Any]]) -> str:
    """The whole page for one model: a section per version."""
    sections = [_section(report) for report in reports] or ["<p>No traffic observed yet.</p>"]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>Drift report: {escape(model)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Drift report: {escape(model)}</h1>{''.join(sections)}</body></html>\n"
    )


def _section(report: dict[str, Any]) -> str:
    head = f"<h2>Version {escape(str(report['version']))}</h2>"
    if report.get("status") != "ok":
        note = escape(str(report.get("status", "no data")))
        return f"{head}<p>No drift verdict: {note}.</p>{_skew(report)}"
    verdict = "drifted" if report["dataset_drift"] else "no dataset drift"
    summary = (
        f"<p>{report['rows']} served rows; {len(report['drifted'])} of "
        f"{len(report['features'])} features drifted ({report['share']:.0%}): "
        f"<span class='{'drifted' if report['dataset_drift'] else ''}'>{verdict}</span>. "
        f"Predictions: {len(report['prediction_drifted'])} of {len(report['predictions'])} "
        "drifted.</p>"
    )
    columns = [("input", n, r) for n, r in report["features"].items()]
    columns += [("prediction", n, r) for n, r in report["predictions"].items()]
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{kind}</td><td>{r['method']}</td>"
        f"<td>{r['score']:.4g}</td><td>{r['threshold']:g}</td>"
        f"<td class='{'drifted' if r['drifted'] else ''}'>{'yes' if r['drifted'] else 'no'}</td>"
        "</tr>"
        for kind, name, r in columns
    )
    table = (
        "<table><tr><th>column</th><th>kind</th><th>method</th><th>score</th>"
        f"<th>threshold</th><th>drifted</th></tr>{rows}</table>"
    )
    figures = "".join(
        f"<figure>{histogram_svg(name, r['histogram'])}<figcaption>{escape(name)} ({kind}, "
        f"{r['method']} {r['score']:.3g})</figcaption></figure>"
        for kind, name, r in columns
    )
    return f"{head}{summary}{table}<div class='grid'>{figures}</div>{_skew(report)}"


def _skew(report: dict[str, Any]) -> str:
    skew = report.get("skew") or {}
    if "skewed" not in skew:
        return f"<h3>Training/serving skew</h3><p>{escape(str(skew.get('status', 'n/a')))}</p>"
    found = ", ".join(skew["features"]) or "none"
    first = skew.get("first") or {}
    since = ""
    if first and first.get("block") != skew.get("block"):
        was = ", ".join(first["features"]) or "none"
        since = f" The first block's skewed features: {escape(was)}."
    return (
        f"<h3>Training/serving skew</h3><p>Block {skew.get('block', 1)} "
        f"({skew['rows']} rows) since going live: skewed features: {escape(found)}.{since}</p>"
    )


class MonitorCollector:
    """Prometheus gauges read from the monitor's last refresh: nothing computed on scrape."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=["model", "version", *labels])

        quality = gauge("inferline_model_quality", "Quality over the feedback window.", ["metric"])
        pairs = gauge("inferline_feedback_pairs", "Prediction/truth pairs in the window.", [])
        feature = gauge(
            "inferline_feature_drift", "Drift score (p-value or distance).", ["feature", "kind"]
        )
        detected = gauge(
            "inferline_feature_drift_detected", "1 when the column drifted.", ["feature", "kind"]
        )
        share = gauge("inferline_drift_share", "Share of drifted columns.", ["kind"])
        dataset = gauge("inferline_dataset_drift", "1 when the input data set drifted.", [])
        rows = gauge("inferline_drift_window_rows", "Served rows in the drift window.", [])
        skew = gauge(
            "inferline_training_serving_skew", "1 when the first rows differ.", ["feature"]
        )
        for (model, version), latest in list(self.monitor.latest.items()):
            ids = [model, version]
            for name, value in latest["quality"].get("metrics", {}).items():
                quality.add_metric([*ids, name], value)
            pairs.add_metric(ids, latest["quality"].get("pairs", 0))
            drift = latest["drift"]
            if drift.get("status") == "ok":
                for kind, key in (("input", "features"), ("prediction", "predictions")):
                    for name, result in drift[key].items():
                        feature.add_metric([*ids, name, kind], result["score"])
                        detected.add_metric([*ids, name, kind], float(result["drifted"]))
                share.add_metric([*ids, "input"], drift["share"])
                share.add_metric([*ids, "prediction"], drift["prediction_share"])
                dataset.add_metric(ids, float(drift["dataset_drift"]))
            if "rows" in drift:
                rows.add_metric(ids, drift["rows"])
            for name, result in (drift.get("skew") or {}).get("columns", {}).items():
                skew.add_metric([*ids, name], float(result["drifted"]))
        yield from (quality, pairs, feature, detected, share, dataset, rows, skew)
