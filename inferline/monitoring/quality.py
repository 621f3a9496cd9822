"""Ground truth joined to served predictions, and the quality figures it yields.

Answered requests wait (bounded by count and age) for their truth, sent later by
request id; each joined row lands in a sliding window per model version. Figures
are computed with numpy the way scikit-learn defines them: binary precision,
recall and F1 for the greater label (1 for 0/1 labels), macro averages for more
classes, ROC AUC from the probability output when there is one.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from inferline.errors import BadRequest
from inferline.monitoring.feedback_join import Pending
from inferline.settings import ModelMonitoring

__all__ = [
    "QualityWindow",
    "Reading",
    "Row",
    "classification_metrics",
    "joined_rows",
    "match_truth",
    "read_outputs",
    "regression_metrics",
    "window_report",
]

Array = np.ndarray[Any, Any]

_LABEL_NAME = re.compile(r"label|class|predict|prediction|output|target|y$", re.IGNORECASE)
_PROBA_NAME = re.compile(r"prob|proba|score", re.IGNORECASE)


@dataclass(slots=True, frozen=True)
class Reading:
    """How a model's outputs answer: the task, the predictions and maybe the scores."""

    task: str
    predictions: list[Any]
    scores: Array | None


def read_outputs(outputs: Mapping[str, Array], hint: ModelMonitoring | None) -> Reading:
    """Find the prediction (and probabilities) among a response's outputs."""
    hint = hint or ModelMonitoring()
    by_name = dict(outputs)
    for field in (hint.prediction, hint.probabilities):
        if field is not None and field not in by_name:
            raise BadRequest(f"monitoring names output {field!r}; the model has {list(by_name)}")
    flat = {name: a.reshape(a.shape[0]) for name, a in by_name.items() if _is_column(a)}
    scores_name = hint.probabilities or _pick(
        [n for n, a in by_name.items() if a.ndim == 2 and a.shape[1] >= 2 and a.dtype.kind == "f"],
        _PROBA_NAME,
    )
    labels = [n for n, a in flat.items() if a.dtype.kind in "biuOSU"]
    numbers = [n for n, a in flat.items() if a.dtype.kind == "f" and n != scores_name]
    if hint.task == "regression":
        name = hint.prediction or _pick(numbers, _LABEL_NAME) or _pick(labels, _LABEL_NAME)
    else:
        name = hint.prediction or _pick(labels, _LABEL_NAME)
        if name is None and hint.task != "classification" and scores_name is None:
            name = _pick(numbers, _LABEL_NAME)
    scores = by_name[scores_name] if scores_name is not None else None
    if name is None:
        if scores is None or scores.ndim != 2:
            raise BadRequest(
                f"cannot tell which output is the prediction among {list(by_name)}; "
                "set monitoring.prediction in the model's settings"
            )
        return Reading("classification", np.argmax(scores, axis=1).tolist(), scores)
    values = flat.get(name, by_name[name].reshape(by_name[name].shape[0], -1)[:, 0])
    task = hint.task
    if task == "auto":
        task = "classification" if values.dtype.kind in "biuOSU" else "regression"
    return Reading(task, [_plain(v) for v in values], scores)


def _is_column(array: Array) -> bool:
    return array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)


def _pick(names: list[str], pattern: re.Pattern[str]) -> str | None:
    preferred = [n for n in names if pattern.search(n)] or names
    return preferred[0] if preferred else None


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value.item() if isinstance(value, np.generic) else value


def as_truth(value: Any, task: str, like: Any) -> Any:
    """A truth value made comparable with the prediction ``like``."""
    if isinstance(value, bool | int | float) and not isinstance(like, str):
        return float(value) if task == "regression" else value
    if task == "regression":
        raise BadRequest(f"truth {value!r} is not a number")
    if isinstance(like, str):
        return str(value)
    try:
        return int(value) if str(value).lstrip("-").isdigit() else float(value)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"truth {value!r} is not a label of this model") from exc


def match_truth(
    pending: Pending, truth: Any, hint: ModelMonitoring | None
) -> tuple[Reading, list[Any]]:
    """An answered request's predictions and its truth, one per row, made comparable."""
    reading = read_outputs(pending.outputs, hint)
    truths = truth if isinstance(truth, list) else [truth]
    if len(truths) != len(reading.predictions):
        raise BadRequest(
            f"{len(truths)} truth value(s) for {len(reading.predictions)} prediction(s)"
        )
    values = [
        as_truth(t, reading.task, p) for t, p in zip(truths, reading.predictions, strict=True)
    ]
    return reading, values


#: One joined pair: (joined at, prediction, truth, the row's scores or None).
Row = tuple[float, Any, Any, Any]


def joined_rows(at: float, reading: Reading, truths: Sequence[Any]) -> list[Row]:
    """A joined request's pairs, one per row it had."""
    scores = reading.scores
    return [
        (at, predicted, truth, scores[i] if scores is not None else None)
        for i, (predicted, truth) in enumerate(zip(reading.predictions, truths, strict=True))
    ]


class QualityWindow:
    """The most recent joined pairs of one model version, in this process."""

    def __init__(self, size: int) -> None:
        self.task = "classification"
        self._rows: deque[Row] = deque(maxlen=size)

    def add(self, task: str, rows: Sequence[Row]) -> None:
        self.task = task
        self._rows.extend(rows)

    def snapshot(self) -> list[Row]:
        """The rows now; safe from a thread."""
        return list(self._rows.copy())


def window_report(task: str, rows: Sequence[Row], since: float | None = None) -> dict[str, Any]:
    """Figures over a window's rows (or those joined since ``since``)."""
    rows = [r for r in rows if since is None or r[0] >= since]
    result: dict[str, Any] = {"task": task, "pairs": len(rows), "metrics": {}}
    if not rows:
        return result
    predicted = [r[1] for r in rows]
    truth = [r[2] for r in rows]
    if task == "regression":
        result["metrics"] = regression_metrics(np.array(truth, float), np.array(predicted, float))
        return result
    scores = None
    if all(r[3] is not None for r in rows):
        scores = np.stack([np.asarray(r[3], dtype=np.float64) for r in rows])
    result["metrics"] = classification_metrics(truth, predicted, scores)
    return result


def classification_metrics(
    truth: Sequence[Any], predicted: Sequence[Any], scores: Array | None = None
) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (binary or macro) and ROC AUC when scores exist."""
    y_true, y_pred = np.array(truth, dtype=object), np.array(predicted, dtype=object)
    labels = sorted(set(truth) | set(predicted))
    metrics = {"accuracy": float(np.mean(y_true == y_pred))}
    binary = len(labels) <= 2
    positive = 1 if set(labels) <= {0, 1} else labels[-1]
    classes = [positive] if binary else labels
    per_class = []
    for label in classes:
        tp = float(np.sum((y_pred == label) & (y_true == label)))
        fp = float(np.sum((y_pred == label) & (y_true != label)))
        fn = float(np.sum((y_pred != label) & (y_true == label)))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append((precision, recall, f1))
    averages = np.mean(np.array(per_class), axis=0)
    metrics.update(precision=averages[0], recall=averages[1], f1=averages[2])
    metrics = {k: float(v) for k, v in metrics.items()}
    auc = _roc_auc(y_true, sorted(set(truth)), positive, binary, scores)
    if auc is not None:
        metrics["roc_auc"] = auc
    return metrics


def _roc_auc(
    y_true: Array, present: list[Any], positive: Any, binary: bool, scores: Array | None
) -> float | None:
    """One-vs-rest AUC (macro for many classes), columns in sorted label order."""
    if scores is None or len(present) < 2:
        return None
    if scores.ndim == 1 or scores.shape[1] == 1:
        return _auc(y_true == positive, scores.reshape(-1)) if binary else None
    if binary and scores.shape[1] == 2:
        return _auc(y_true == positive, scores[:, 1])
    if len(present) != scores.shape[1]:
        return None
    return float(np.mean([_auc(y_true == c, scores[:, i]) for i, c in enumerate(present)]))


def _auc(positives: Array, scores: Array) -> float:
    """Mann-Whitney AUC with ties counted half (what the ROC trapezoid gives)."""
    positives = positives.astype(bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    ranks = stats.rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def regression_metrics(truth: Array, predicted: Array) -> dict[str, float]:
    """MAE, RMSE and R² (1.0 for a perfect fit of a constant, else 0.0, as sklearn)."""
    errors = truth - predicted
    residual = float(np.sum(errors**2))
    total = float(np.sum((truth - np.mean(truth)) ** 2))
    r2 = 1 - residual / total if total else float(residual == 0)
    return {
        "mae": float(np.mean(np.abs(errors))),
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "r2": r2,
    }
