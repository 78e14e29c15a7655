"""Hyperparameter search (``estimator.search``) before the final fit.

Candidates are scored by time-ordered cross-validation inside the training rows only (the holdout stays
unseen: it is what the promotion gate judges), with the spec's primary metric, and the best is fitted by
``training.fit``. Trials are run here one by one rather than by scikit-learn's searchers, so the seconds
budget is honoured between trials and every trial is recorded (MLflow child runs, see :func:`log_search`).

- ``random``: ``trials`` settings drawn from the space (seeded by ``training.seed``), each scored on all folds.
- ``halving``: successive halving on rows: the ``trials`` settings start on the most recent
  1/3^rounds of the training rows; each round keeps the best third of the settings and triples the rows,
  until one setting is left or all rows are used (a trial is one setting scored on one round's rows).

The chosen parameters are merged into ``estimator.params`` (:func:`with_params`) for the final fit and
recorded with the version (``search.json``), so ``mlplatform reproduce`` refits exactly them without searching.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import ParameterSampler, TimeSeriesSplit

from mlplatform_assets.lib.model.features import TrainingDataset, build_pipeline, fit_pipeline
from mlplatform_assets.lib.spec import ModelSpec, SearchRange

SEARCH_ARTIFACT = "search.json"
HALVING_FACTOR = 3


class SearchError(ValueError):
    """No candidate could be scored (every trial failed); the message names the first failure."""


@dataclass
class Trial:
    number: int
    params: dict[str, Any]
    score: float | None  # mean CV score of the primary metric; None when the trial failed
    fold_scores: list[float]
    rows: int  # training rows the folds were cut from
    round: int
    seconds: float
    start_ms: int
    end_ms: int
    error: str | None = None


@dataclass
class SearchResult:
    method: str
    metric: str
    direction: str
    chosen: dict[str, Any]
    best_score: float
    trials: list[Trial]
    stopped: str  # why the search ended: "trials" (budget used) or "max_seconds"
    seconds: float
    cv_splits: int

    def summary(self) -> dict[str, Any]:
        """JSON-safe: the ``search.json`` artifact and the evaluation report's search section."""
        return {"method": self.method, "metric": self.metric, "direction": self.direction, "chosen": self.chosen,
                "best_cv_score": self.best_score, "trials_run": len(self.trials),
                "trials_failed": sum(t.error is not None for t in self.trials), "stopped": self.stopped,
                "seconds": round(self.seconds, 3), "cv_splits": self.cv_splits,
                "trials": [asdict(t) for t in self.trials]}


def with_params(spec: ModelSpec, params: dict[str, Any]) -> ModelSpec:
    """``spec`` with ``params`` merged into ``estimator.params`` and no search: what the final fit (and a
    reproduction) trains. The spec's recorded form keeps its private state (``${VAR}`` references)."""
    estimator = spec.estimator.model_copy(update={"params": {**spec.estimator.params, **params}, "search": None})
    return spec.model_copy(update={"estimator": estimator})


def _python(value: Any) -> Any:
    """NumPy scalars from the samplers as plain Python values (JSON, MLflow params, estimator checks)."""
    return value.item() if isinstance(value, np.generic) else value


def sample_candidates(spec: ModelSpec) -> list[dict[str, Any]]:
    """Up to ``trials`` distinct settings from the space, seeded by ``training.seed``."""
    from scipy import stats

    search = spec.estimator.search
    distributions: dict[str, Any] = {}
    for name, values in search.space.items():
        if not isinstance(values, SearchRange):
            distributions[name] = list(values)
        elif values.integer:
            distributions[name] = stats.randint(int(values.low), int(values.high) + 1)
        elif values.log:
            distributions[name] = stats.loguniform(float(values.low), float(values.high))
        else:
            distributions[name] = stats.uniform(float(values.low), float(values.high) - float(values.low))
    with warnings.catch_warnings():
        # A small all-list space is returned whole (fewer settings than trials): that is the point.
        warnings.simplefilter("ignore", UserWarning)
        sampled = ParameterSampler(distributions, n_iter=search.trials, random_state=spec.training.seed)
        candidates = []
        for params in sampled:
            params = {k: _python(v) for k, v in sorted(params.items())}
            if params not in candidates:
                candidates.append(params)
    return candidates


def _time_ordered(dataset: TrainingDataset) -> pd.DataFrame:
    """The training rows oldest first (stable, so rows of one timestamp keep their order)."""
    ts = pd.to_datetime(dataset.train[dataset.timestamp], utc=True, errors="coerce")
    order = np.argsort(ts.to_numpy(), kind="stable")
    return dataset.train.iloc[order].reset_index(drop=True)


def _cv_score(spec: ModelSpec, dataset: TrainingDataset, rows: pd.DataFrame, params: dict[str, Any]) -> list[float]:
    """The primary metric on each time-ordered fold: fit on the earlier rows, score on the next block."""
    from mlplatform_assets.lib.model.training import compute_metrics, predict_frame

    candidate = with_params(spec, params)
    X, y = rows[dataset.feature_columns], rows[dataset.target]
    primary = spec.metrics.primary
    scores = []
    for train_idx, val_idx in TimeSeriesSplit(n_splits=spec.estimator.search.cv_splits).split(X):
        pipeline = build_pipeline(candidate, dataset.numeric, dataset.categorical)
        fit_pipeline(candidate, pipeline, X.iloc[train_idx], y.iloc[train_idx])
        preds = predict_frame(pipeline, X.iloc[val_idx], spec.task)
        scores.append(compute_metrics(spec.task, [primary], y.iloc[val_idx], preds,
                                      spec.target.positive_class)[primary])
    return scores


class _Runner:
    """Runs trials in order until the trial list or the seconds budget is used up."""

    def __init__(self, spec: ModelSpec, dataset: TrainingDataset):
        self.spec, self.dataset = spec, dataset
        self.rows = _time_ordered(dataset)
        self.started = time.monotonic()
        self.trials: list[Trial] = []
        self.out_of_time = False
        self.sign = 1.0 if spec.metrics.direction == "maximize" else -1.0

    def budget_left(self) -> bool:
        # The first trial always runs (a search must choose something); later ones only within the budget.
        if self.trials and time.monotonic() - self.started >= self.spec.estimator.search.max_seconds:
            self.out_of_time = True
        return not self.out_of_time

    def run(self, params: dict[str, Any], n_rows: int, round_: int) -> Trial:
        rows = self.rows.iloc[len(self.rows) - n_rows:]  # the most recent rows: closest to what is predicted
        t0, start_ms = time.monotonic(), int(time.time() * 1000)
        error, folds = None, []
        try:
            folds = _cv_score(self.spec, self.dataset, rows, params)
        except Exception as exc:  # one bad setting (or a fold it cannot fit) must not end the search
            error = f"{type(exc).__name__}: {exc}"[:500]
        finite = [s for s in folds if s == s]
        score = float(np.mean(finite)) if finite and error is None else None
        if score is None and error is None:
            error = f"{self.spec.metrics.primary} is undefined on every fold"
        trial = Trial(len(self.trials), params, score, [float(s) for s in folds], n_rows, round_,
                      time.monotonic() - t0, start_ms, int(time.time() * 1000), error)
        self.trials.append(trial)
        return trial

    def key(self, trial: Trial) -> float:
        """Larger is better, whatever the metric's direction; failed trials last."""
        return -math.inf if trial.score is None else self.sign * trial.score


def run_search(spec: ModelSpec, dataset: TrainingDataset) -> SearchResult:
    """Search ``estimator.search``'s space on the training rows; raises SearchError if no trial succeeded."""
    search = spec.estimator.search
    runner = _Runner(spec, dataset)
    candidates = sample_candidates(spec)
    n_total = len(runner.rows)
    min_rows = (search.cv_splits + 1) * 10
    if n_total < min_rows:
        raise SearchError(f"estimator.search: {n_total} training rows are too few for {search.cv_splits} "
                          f"time-ordered folds (need at least {min_rows})")
    final_round: list[Trial] = []  # the trials compared for the choice: all (random), the last round (halving)
    if search.method == "random":
        final_round = [runner.run(params, n_total, 0) for params in candidates if runner.budget_left()]
    else:
        rounds = max(1, math.ceil(math.log(len(candidates), HALVING_FACTOR))) if len(candidates) > 1 else 0
        alive, round_ = candidates, 0
        while True:
            n_rows = n_total if round_ >= rounds else max(min_rows, n_total // HALVING_FACTOR ** (rounds - round_))
            results = [runner.run(params, n_rows, round_) for params in alive if runner.budget_left()]
            final_round = results or final_round
            if runner.out_of_time or n_rows >= n_total:
                break
            ranked = sorted((t for t in results if t.score is not None), key=runner.key, reverse=True)
            alive = [t.params for t in ranked[:math.ceil(len(ranked) / HALVING_FACTOR)]]
            if len(alive) <= 1:
                break
            round_ += 1
    scored = [t for t in final_round if t.score is not None]
    if not scored:
        first = runner.trials[0]
        raise SearchError(f"estimator.search: every trial failed; trial 0 {first.params}: {first.error}")
    # max keeps the earlier trial on ties: the result does not depend on anything but the seed.
    best = max(scored, key=runner.key)
    return SearchResult(method=search.method, metric=spec.metrics.primary, direction=spec.metrics.direction,
                        chosen=dict(best.params), best_score=float(best.score), trials=runner.trials,
                        stopped="max_seconds" if runner.out_of_time else "trials",
                        seconds=time.monotonic() - runner.started, cv_splits=search.cv_splits)


def log_search(client: Any, experiment_id: str, parent_run_id: str, result: SearchResult,
               tags: dict[str, str]) -> dict[str, Any]:
    """Each trial as a child run of the version's training run (params, CV score, rows, timing; tagged with the
    version's lineage tags); the chosen params as ``search.chosen.*`` params of the parent. Returns the params
    to log on the parent."""
    for trial in result.trials:
        run = client.create_run(experiment_id, start_time=trial.start_ms,
                                tags={**tags, "mlflow.parentRunId": parent_run_id,
                                      "mlflow.runName": f"search-trial-{trial.number}",
                                      "mlplatform.search.round": str(trial.round),
                                      **({"mlplatform.search.error": trial.error} if trial.error else {})})
        run_id = run.info.run_id
        for name, value in trial.params.items():
            client.log_param(run_id, name, value)
        client.log_param(run_id, "rows", trial.rows)
        if trial.score is not None:
            client.log_metric(run_id, f"cv_{result.metric}", trial.score)
        for i, score in enumerate(trial.fold_scores):
            if score == score:
                client.log_metric(run_id, f"cv_{result.metric}_fold", score, step=i)
        client.set_terminated(run_id, status="FAILED" if trial.error else "FINISHED", end_time=trial.end_ms)
    return {**{f"search.chosen.{k}": v for k, v in result.chosen.items()},
            "search.method": result.method, "search.trials_run": len(result.trials), "search.stopped": result.stopped}


def search_artifact(result: SearchResult) -> bytes:
    return json.dumps(result.summary(), indent=2, default=str).encode()


def recorded_chosen_params(artifact: bytes) -> dict[str, Any]:
    """The chosen parameters from a version's ``search.json`` (typed, unlike MLflow params)."""
    return dict(json.loads(artifact)["chosen"])


def recorded_summary(spec: ModelSpec, registry: Any, version: str) -> dict[str, Any] | None:
    """A searched version's ``search.json`` (for the evaluation report); None when the spec declares no search."""
    if spec.estimator.search is None:
        return None
    run_id = registry.get_version(spec.name, version).run_id
    return json.loads(registry.download_artifact(run_id, SEARCH_ARTIFACT))
