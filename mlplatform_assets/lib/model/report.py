"""The evaluation summary people read in the Dagster UI: challenger vs champion as Markdown.

:func:`evaluation_markdown` joins sections. Each section is one small function of a :class:`ReportInput`
that returns Markdown, or ``None`` when the evaluation carries no data for it (no champion, a regression
model, an extra analysis that did not run), so the summary shows only what was measured. A new analysis
adds its function to :data:`SECTIONS`, reading its data from ``evaluation.extra``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from mlplatform_assets.lib.spec import ModelSpec

# Rows of the per-class table and of the worst-errors table: enough to see a pattern, short enough to read.
MAX_CLASSES = 20
WORST_ERRORS = 5


@dataclass(frozen=True)
class ReportInput:
    """What the sections read. ``evaluation`` is a :class:`~mlplatform_assets.lib.model.lifecycle.Evaluation`
    (decision, both models' metrics and holdout predictions, ``extra`` analyses); ``y_true`` the holdout labels
    in the predictions' row order; ``report_url`` where the full Evidently report opens."""

    spec: ModelSpec
    evaluation: Any
    y_true: pd.Series
    report_url: str | None = None


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def decision_section(r: ReportInput) -> str:
    d = r.evaluation.decision
    champion = f"champion v{d.champion_version}" if d.champion_version else "no champion yet"
    verdict = "**PROMOTE**" if d.promote else "**KEEP CHAMPION**"
    lines = [f"### {r.spec.name}: challenger v{d.challenger_version} vs {champion}",
             "", f"Decision: {verdict}. {d.reason}.",
             "", f"Gate: {d.metric} ({d.direction}), min improvement {d.min_improvement:g}"
                 + (f", absolute floor {d.absolute_floor:g}" if d.absolute_floor is not None else "") + "."]
    if r.report_url:
        lines += ["", f"[Full Evidently report]({r.report_url})"]
    return "\n".join(lines)


def metrics_section(r: ReportInput) -> str:
    ev = r.evaluation
    champion = ev.champion_metrics or {}
    direction = {r.spec.metrics.primary: r.spec.metrics.direction or "maximize"}
    rows = []
    for name, value in ev.challenger_metrics.items():
        other = champion.get(name)
        delta = value - other if other is not None and not (math.isnan(value) or math.isnan(other)) else None
        rows.append([f"**{name}**" if name in direction else name, float(value),
                     None if other is None else float(other), None if delta is None else f"{delta:+.4f}"])
    return "#### Holdout metrics\n\n" + _table(["metric", "challenger", "champion", "difference"], rows)


def per_class_rows(y_true: pd.Series, challenger: pd.Series, champion: pd.Series | None) -> list[list[Any]]:
    """Per class: support, and precision and recall of challenger (and champion) on the same rows."""
    y = pd.Series(np.asarray(y_true)).astype(str)
    preds = {"challenger": pd.Series(np.asarray(challenger)).astype(str)}
    if champion is not None:
        preds["champion"] = pd.Series(np.asarray(champion)).astype(str)
    rows = []
    for label in sorted(set(y) | set(preds["challenger"]))[:MAX_CLASSES]:
        row: list[Any] = [label, int((y == label).sum())]
        for pred in preds.values():
            predicted, actual = pred == label, y == label
            hits = int((predicted & actual).sum())
            row += [hits / predicted.sum() if predicted.sum() else float("nan"),
                    hits / actual.sum() if actual.sum() else float("nan")]
        rows.append(row)
    return rows


def per_class_section(r: ReportInput) -> str | None:
    if r.spec.task != "classification":
        return None
    ev = r.evaluation
    champion = ev.champion_predictions["prediction"] if ev.champion_predictions is not None else None
    header = ["class", "support", "challenger precision", "challenger recall"]
    if champion is not None:
        header += ["champion precision", "champion recall"]
    rows = per_class_rows(r.y_true, ev.challenger_predictions["prediction"], champion)
    return "#### Per class (holdout)\n\n" + _table(header, rows)


def residual_summary(y_true: pd.Series, prediction: pd.Series) -> dict[str, float]:
    """Residuals (prediction - actual): mean (bias), median, 90th percentile of the absolute error, max."""
    residual = np.asarray(prediction, dtype=float) - np.asarray(y_true, dtype=float)
    abs_err = np.abs(residual)
    return {"mean residual": float(residual.mean()), "median residual": float(np.median(residual)),
            "p90 |error|": float(np.quantile(abs_err, 0.9)), "max |error|": float(abs_err.max())}


def residual_section(r: ReportInput) -> str | None:
    if r.spec.task != "regression":
        return None
    ev = r.evaluation
    challenger = residual_summary(r.y_true, ev.challenger_predictions["prediction"])
    champion = (residual_summary(r.y_true, ev.champion_predictions["prediction"])
                if ev.champion_predictions is not None else {})
    rows = [[name, value, champion.get(name)] for name, value in challenger.items()]
    actual = np.asarray(r.y_true, dtype=float)
    predicted = np.asarray(ev.challenger_predictions["prediction"], dtype=float)
    worst = np.argsort(-np.abs(predicted - actual), kind="stable")[:WORST_ERRORS]
    worst_rows = [[int(i), float(actual[i]), float(predicted[i]), float(predicted[i] - actual[i])] for i in worst]
    return ("#### Residuals (holdout, prediction - actual)\n\n" + _table(["", "challenger", "champion"], rows)
            + "\n\nLargest challenger errors (holdout row):\n\n"
            + _table(["row", "actual", "predicted", "residual"], worst_rows))


def importance_section(r: ReportInput) -> str | None:
    """Permutation importance (lib/model/importance.py): the challenger's top features next to the champion's."""
    imp = r.evaluation.extra.get("importance")
    if not imp:
        return None
    vs = imp.get("champion_version")
    header = ["feature", "importance", "± std"] + (["champion", "change", "champion rank"] if vs else [])
    rows = [[f["feature"], f["importance"], f["std"]]
            + ([f.get("champion_importance"), f.get("change"), f.get("champion_rank")] if vs else [])
            for f in imp["features"][:imp["top_k"]]]
    return (f"#### Feature importance (drop in {imp['metric']} when the feature is shuffled; {imp['rows']} holdout "
            f"rows, {imp['repeats']} shuffles{f', vs champion v{vs}' if vs else ''})\n\n" + _table(header, rows))


def search_section(r: ReportInput) -> str | None:
    """The hyperparameter search that chose the challenger's params (lib/model/search.py)."""
    found = r.evaluation.extra.get("search")
    if not found:
        return None
    ok = sorted((t for t in found["trials"] if t["score"] is not None),
                key=lambda t: t["score"], reverse=found["direction"] == "maximize")
    rows = [[t["number"], t["round"], t["rows"], t["score"], ", ".join(f"{k}={v}" for k, v in t["params"].items())]
            for t in ok[:5]]
    chosen = ", ".join(f"{k}={v}" for k, v in found["chosen"].items())
    return (f"#### Hyperparameter search ({found['method']}, {found['cv_splits']} time-ordered folds of the "
            f"training rows)\n\nChosen: {chosen} (CV {found['metric']} {found['best_cv_score']:.4f}); "
            f"{found['trials_run']} trials ({found['trials_failed']} failed) in {found['seconds']:.1f} s, stopped by "
            f"{'the trial budget' if found['stopped'] == 'trials' else 'max_seconds'}. Best trials:\n\n"
            + _table(["trial", "round", "rows", f"CV {found['metric']}", "params"], rows))


def _interval(iv: dict[str, Any] | None) -> str:
    if not iv or iv.get("lower") is None or iv["lower"] != iv["lower"]:
        return "–"
    return f"{iv['delta']:+.4f} [{iv['lower']:+.4f}, {iv['upper']:+.4f}]"


def uncertainty_section(r: ReportInput) -> str | None:
    """The gain over the champion with its paired confidence interval (lib/model/rigor.py)."""
    rigor = r.evaluation.extra.get("rigor")
    if not rigor or not rigor.get("versus_champion"):
        return None
    iv = rigor["versus_champion"]
    method = {"delong": "DeLong", "bootstrap": f"paired bootstrap, {iv.get('resamples')} resamples"}.get(
        iv["method"], iv["method"])
    judged = "lower bound" if r.evaluation.decision.require == "significant" else "point estimate"
    return (f"#### Gain over the champion ({rigor['metric']})\n\n"
            f"{_interval(iv)} at {rigor['confidence']:.0%} confidence on {iv['rows']} holdout rows ({method}); "
            f"the gate requires the {judged} to clear min improvement {r.evaluation.decision.min_improvement:g}.")


def baselines_section(r: ReportInput) -> str | None:
    """Challenger vs simple baselines trained on the same window (never registered)."""
    rigor = r.evaluation.extra.get("rigor")
    if not rigor or not rigor.get("baselines"):
        return None
    metric = rigor["metric"]
    rows = [["challenger", "", r.evaluation.challenger_metrics.get(metric), "–"]]
    rows += [[b["name"], b["estimator"], b["metrics"].get(metric), _interval(b["versus"])] for b in rigor["baselines"]]
    return (f"#### Baselines ({metric}, holdout)\n\n"
            + _table(["model", "estimator", metric, "challenger minus baseline [interval]"], rows))


def slices_section(r: ReportInput) -> str | None:
    """Per-slice primary metric, challenger vs champion, and the largest gap between slices (parity)."""
    rigor = r.evaluation.extra.get("rigor")
    if not rigor or not rigor.get("slices"):
        return None
    rows = [[s["column"], s["slice"], s["rows"], s["challenger"], s["champion"],
             _interval(s) if s["delta"] is not None else "–", "yes" if s["gated"] else "too few rows"]
            for s in rigor["slices"]]
    text = (f"#### Slices ({rigor['metric']})\n\n"
            + _table(["column", "slice", "rows", "challenger", "champion", "difference [interval]", "gated"], rows))
    for g in rigor.get("slice_gaps", []):
        text += (f"\n\nLargest gap in {g['column']}: {g['gap']:.4f} between {g['best']} ({g['best_value']:.4f}) "
                 f"and {g['worst']} ({g['worst_value']:.4f}).")
    return text


def staleness_section(r: ReportInput) -> str | None:
    """The backtest of quality against model age (lib/model/staleness.py): curve, decay and cadence."""
    from mlplatform_assets.lib.model.staleness import markdown

    data = r.evaluation.extra.get("staleness")
    return markdown(data) if data else None


Section = Callable[[ReportInput], "str | None"]
SECTIONS: list[Section] = [decision_section, metrics_section, per_class_section, residual_section, importance_section,
                           search_section, uncertainty_section, baselines_section, slices_section,
                           staleness_section]


def evaluation_markdown(spec: ModelSpec, evaluation: Any, y_true: pd.Series, report_url: str | None = None) -> str:
    """The summary: every section of :data:`SECTIONS` that has data, in order."""
    r = ReportInput(spec, evaluation, y_true, report_url)
    return "\n\n".join(text for section in SECTIONS if (text := section(r)))


def mlflow_artifact_url(run_url: str, artifact_path: str) -> str:
    """The MLflow UI page that shows one artifact of a run (HTML is rendered in the page), from the run's UI URL
    (``<ui>/#/experiments/<id>/runs/<run_id>``, as :meth:`Registry.run_url` builds it)."""
    return f"{run_url.rstrip('/')}/artifacts/{artifact_path.lstrip('/')}"
