"""What a model costs: its training runs, the bytes it keeps, and what its serving replicas did.

- Training: the ``cost.*`` metrics every training run records (:mod:`.usage`), over all runs of the
  model's MLflow experiment (rejected and abandoned versions cost too).
- Storage: one listing per prefix of the data store (``<model>/...``), of the prediction log
  (``<prediction log>/<model>/...``), and of the MLflow artifacts of every run and logged model of the
  model's experiment (through the MLflow API, so a tracking server's proxied store works too).
- Serving: each endpoint's ``/metrics``. Counters count since that server process started: a restart
  starts them again at zero, so these are a current-process figure, not a lifetime total.
- Money: CPU-hours x ``MLPLATFORM_PRICE_CPU_HOUR`` and GB-months x ``MLPLATFORM_PRICE_GB_MONTH`` (GB = 2^30
  bytes, as S3 bills), only when the prices are configured.
"""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

from mlplatform_assets.lib.cost.usage import TrainingCost
from mlplatform_assets.lib.data.storage import ObjectStore

GIB = 2**30
# Prediction routes of the serving app (see lib/serving/app.py R_INVOCATIONS, R_V1_PREDICT).
PREDICTION_ROUTES = ("/invocations", "/v1/models/{name}/predict")

# Storage kinds, in display order. Data-store keys are classified by the segment after ``<model>/``.
DATA_KINDS = {"raw": "raw data", "validated": "validated data", "quarantine": "quarantine records",
              "predictions": "batch predictions", "drift": "drift reports"}
RUN_DATASETS = "run datasets"  # <model>/<asset>/runs/<run_id>/... (defs/resources.py DatasetIOManager)
OTHER = "other data"
MLFLOW_RUNS = "mlflow run artifacts"
MLFLOW_MODELS = "mlflow model artifacts"
PREDICTION_LOG = "prediction log"
STORAGE_KINDS = (*DATA_KINDS.values(), RUN_DATASETS, OTHER, MLFLOW_RUNS, MLFLOW_MODELS, PREDICTION_LOG)


@dataclass
class TrainingRun:
    run_id: str
    version: str | None  # None: the run registered no version (failed before registration)
    started: str
    cost: TrainingCost


@dataclass
class Usage:
    objects: int = 0
    bytes: int = 0

    def add(self, n_bytes: int) -> None:
        self.objects += 1
        self.bytes += n_bytes


@dataclass
class EndpointServing:
    url: str
    reachable: bool
    error: str | None = None
    requests: float = 0.0  # every HTTP request the process answered
    prediction_requests: float = 0.0
    predicted_rows: float = 0.0
    cpu_seconds: float | None = None  # None: the endpoint exports no process_cpu_seconds_total


@dataclass
class Prices:
    cpu_hour: float | None
    gb_month: float | None


@dataclass
class CostReport:
    model: str
    measured_at: str
    prices: Prices
    training_runs: list[TrainingRun]
    unmeasured_runs: int  # training runs recorded before costs were measured
    storage: dict[str, Usage]
    serving: list[EndpointServing] = field(default_factory=list)

    # --- totals ---------------------------------------------------------------------
    @property
    def last_run(self) -> TrainingRun | None:
        return max(self.training_runs, key=lambda r: r.started, default=None)

    def training_total(self) -> dict[str, float]:
        costs = [r.cost for r in self.training_runs]
        return {"runs": len(costs), "wall_seconds": sum(c.wall_seconds for c in costs),
                "cpu_seconds": sum(c.cpu_seconds for c in costs),
                "peak_memory_bytes": max((c.peak_memory_bytes for c in costs), default=0),
                "train_rows": sum(c.train_rows for c in costs), "holdout_rows": sum(c.holdout_rows for c in costs)}

    @property
    def storage_bytes(self) -> int:
        return sum(u.bytes for u in self.storage.values())

    def serving_total(self) -> dict[str, float] | None:
        """Summed over the reachable endpoints; None when none was reachable."""
        up = [e for e in self.serving if e.reachable]
        if not up:
            return None
        cpu = [e.cpu_seconds for e in up if e.cpu_seconds is not None]
        return {"endpoints": len(up), "requests": sum(e.requests for e in up),
                "prediction_requests": sum(e.prediction_requests for e in up),
                "predicted_rows": sum(e.predicted_rows for e in up), "cpu_seconds": sum(cpu) if cpu else None}

    def money(self) -> dict[str, float | None]:
        """Each figure is None when its price is not configured (or, for serving, nothing was measured)."""
        cpu_price, gb_price = self.prices.cpu_hour, self.prices.gb_month
        serving = self.serving_total()
        serving_cpu = serving["cpu_seconds"] if serving else None
        return {
            "training_cpu_total": None if cpu_price is None else self.training_total()["cpu_seconds"] / 3600 * cpu_price,
            "training_cpu_last_run": (None if cpu_price is None or self.last_run is None
                                      else self.last_run.cost.cpu_seconds / 3600 * cpu_price),
            "serving_cpu": None if cpu_price is None or serving_cpu is None else serving_cpu / 3600 * cpu_price,
            "storage_per_month": None if gb_price is None else self.storage_bytes / GIB * gb_price,
        }

    def as_dict(self) -> dict[str, Any]:
        last = self.last_run
        return {
            "model": self.model, "measured_at": self.measured_at, "prices": asdict(self.prices),
            "training": {
                "last_run": None if last is None else _run_dict(last),
                "total": self.training_total(),
                "unmeasured_runs": self.unmeasured_runs,
                "runs": [_run_dict(r) for r in sorted(self.training_runs, key=lambda r: r.started)],
            },
            "storage": {"total_bytes": self.storage_bytes,
                        "by_kind": {kind: asdict(u) for kind, u in self.storage.items()}},
            "serving": {"counted_since": "process start of each endpoint",
                        "total": self.serving_total(),
                        "endpoints": [asdict(e) for e in self.serving]},
            "money": self.money(),
        }


def _run_dict(run: TrainingRun) -> dict[str, Any]:
    return {"run_id": run.run_id, "version": run.version, "started": run.started, **asdict(run.cost)}


# --- training and MLflow artifacts ----------------------------------------------------------------

def _all_pages(search: Callable[[str | None], Any]) -> Iterable[Any]:
    token = None
    while True:
        page = search(token)
        yield from page
        token = page.token
        if not token:
            return


def _artifact_tree_bytes(list_dir: Callable[[str | None], list], usage: Usage) -> None:
    """Add every file under an artifact root, one listing per directory (the MLflow API lists one level)."""
    pending: list[str | None] = [None]
    while pending:
        for info in list_dir(pending.pop()):
            if info.is_dir:
                pending.append(info.path)
            else:
                usage.add(int(info.file_size or 0))


def mlflow_side(client, model: str, storage: dict[str, Usage]) -> tuple[list[TrainingRun], int]:  # noqa: ANN001
    """Training runs (with and without recorded costs) and the MLflow artifact bytes of ``model``."""
    from mlplatform_assets.lib.model.registry import experiment_name

    experiment = client.get_experiment_by_name(experiment_name(model))
    if experiment is None:
        return [], 0
    exp_ids = [experiment.experiment_id]
    versions = {mv.run_id: str(mv.version) for mv in client.search_model_versions(f"name='{model}'")}
    runs, unmeasured = [], 0
    for run in _all_pages(lambda token: client.search_runs(exp_ids, max_results=1000, page_token=token)):
        run_id = run.info.run_id
        _artifact_tree_bytes(lambda path, run_id=run_id: client.list_artifacts(run_id, path), storage[MLFLOW_RUNS])
        cost = TrainingCost.from_metrics(run.data.metrics)
        if cost is None:
            unmeasured += 1
            continue
        started = dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.timezone.utc).isoformat(timespec="seconds")
        runs.append(TrainingRun(run_id, versions.get(run_id), started, cost))
    for logged in _all_pages(lambda token: client.search_logged_models(exp_ids, max_results=100, page_token=token)):
        model_id = logged.model_id
        _artifact_tree_bytes(lambda path, model_id=model_id: client.list_logged_model_artifacts(model_id, path),
                             storage[MLFLOW_MODELS])
    return runs, unmeasured


# --- object store -----------------------------------------------------------------------------------

def data_store_kind(model: str, key: str) -> str:
    """The storage kind of a data-store key under ``<model>/``."""
    parts = key[len(model) + 1:].split("/")
    if parts[0] in DATA_KINDS:
        return DATA_KINDS[parts[0]]
    if len(parts) > 2 and parts[1] == "runs":
        return RUN_DATASETS
    return OTHER


def object_store_side(model: str, data: ObjectStore, prediction_log: ObjectStore, storage: dict[str, Usage]) -> None:
    for key, size in data.sizes(f"{model}/").items():
        storage[data_store_kind(model, key)].add(size)
    for size in prediction_log.sizes(f"{model}/").values():
        storage[PREDICTION_LOG].add(size)


# --- serving -----------------------------------------------------------------------------------------

def scrape_endpoint(url: str, timeout: float = 2.0) -> EndpointServing:
    """Requests, predicted rows and process CPU seconds from one endpoint's ``/metrics`` (counted since that
    process started). With several workers, the process samples carry a ``pid`` label each: they are summed."""
    from prometheus_client.parser import text_string_to_metric_families

    from mlplatform_assets.lib.serving.endpoints import check_endpoint_url, endpoint_route

    base = url.rstrip("/")
    try:
        check_endpoint_url(url)
    except ValueError as exc:
        return EndpointServing(base, False, f"refused: {exc}")
    try:
        with urllib.request.urlopen(endpoint_route(url, "metrics"), timeout=timeout) as resp:  # http(s) only
            text = resp.read().decode()
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        reason = f"HTTP {exc.code}" if isinstance(exc, urllib.error.HTTPError) else f"{exc.__class__.__name__}: {exc}"
        return EndpointServing(base, False, f"unreachable: {reason}")
    out = EndpointServing(base, True)
    cpu = []
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "mlplatform_serving_requests_total":
                    out.requests += sample.value
                    if sample.labels.get("route") in PREDICTION_ROUTES:
                        out.prediction_requests += sample.value
                elif sample.name == "mlplatform_serving_predictions_total":
                    out.predicted_rows += sample.value
                elif sample.name == "process_cpu_seconds_total":
                    cpu.append(sample.value)
    except ValueError as exc:
        return EndpointServing(base, False, f"not Prometheus metrics: {exc}")
    out.cpu_seconds = sum(cpu) if cpu else None
    return out


# --- the report ----------------------------------------------------------------------------------------

def cost_report(model: str, client, data: ObjectStore, prediction_log: ObjectStore,  # noqa: ANN001
                endpoints: Sequence[str], prices: Prices) -> CostReport:
    storage = {kind: Usage() for kind in STORAGE_KINDS}
    runs, unmeasured = mlflow_side(client, model, storage)
    object_store_side(model, data, prediction_log, storage)
    return CostReport(model=model, measured_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                      prices=prices, training_runs=runs, unmeasured_runs=unmeasured, storage=storage,
                      serving=[scrape_endpoint(url) for url in dict.fromkeys(endpoints)])


# --- the table -----------------------------------------------------------------------------------------

def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:.2f}"


def _money(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    # First column left-aligned (labels), the others right-aligned (numbers).
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in cells]


def format_table(report: CostReport) -> str:
    money = report.money()
    cpu_price, gb_price = report.prices.cpu_hour, report.prices.gb_month
    prices = ", ".join(p for p in (f"CPU-hour {cpu_price:g}" if cpu_price is not None else "",
                                   f"GB-month {gb_price:g}" if gb_price is not None else "") if p)
    lines = [f"cost of model {report.model} at {report.measured_at}"
             + (f" (prices: {prices})" if prices else
                " (no prices configured: set MLPLATFORM_PRICE_CPU_HOUR, MLPLATFORM_PRICE_GB_MONTH)"), ""]

    total, last = report.training_total(), report.last_run
    rows = []
    if last is not None:
        c = last.cost
        rows.append([f"last run (v{last.version or '-'}, {last.started})", 1, f"{c.wall_seconds:.1f}",
                     f"{c.cpu_seconds:.1f}", _mb(c.peak_memory_bytes), c.train_rows, c.holdout_rows,
                     _money(money["training_cpu_last_run"])])
    rows.append(["all runs", total["runs"], f"{total['wall_seconds']:.1f}", f"{total['cpu_seconds']:.1f}",
                 _mb(total["peak_memory_bytes"]), total["train_rows"], total["holdout_rows"],
                 _money(money["training_cpu_total"])])
    lines += _table(["training", "runs", "wall s", "CPU s", "peak MB", "train rows", "holdout rows", "cost"], rows)
    if report.unmeasured_runs:
        lines.append(f"  ({report.unmeasured_runs} older run(s) recorded no cost and are not counted)")
    lines.append("")

    rows = [[kind, u.objects, u.bytes, _mb(u.bytes), ""] for kind, u in report.storage.items()]
    rows.append(["total", sum(u.objects for u in report.storage.values()), report.storage_bytes,
                 _mb(report.storage_bytes), _money(money["storage_per_month"])])
    lines += _table(["storage", "objects", "bytes", "MB", "cost/month"], rows)
    lines.append("")

    if not report.serving:
        lines.append("serving: no endpoints configured (spec serving.endpoints, or --endpoint URL)")
    elif report.serving_total() is None:
        lines.append("serving: unavailable (no endpoint reachable)")
    serving = report.serving_total()
    if serving is not None:
        rows = [[e.url, f"{e.requests:.0f}", f"{e.prediction_requests:.0f}", f"{e.predicted_rows:.0f}",
                 "n/a" if e.cpu_seconds is None else f"{e.cpu_seconds:.1f}", ""] for e in report.serving if e.reachable]
        cpu = serving["cpu_seconds"]
        rows.append(["total", f"{serving['requests']:.0f}", f"{serving['prediction_requests']:.0f}",
                     f"{serving['predicted_rows']:.0f}", "n/a" if cpu is None else f"{cpu:.1f}",
                     _money(money["serving_cpu"])])
        lines += _table(["serving (since process start)", "requests", "predictions", "rows", "CPU s", "cost"], rows)
    lines += [f"  {e.url}: {e.error}" for e in report.serving if not e.reachable]
    return "\n".join(lines)


def report_for_config(config, model: str, endpoints: Sequence[str]) -> CostReport:  # noqa: ANN001 - PlatformConfig
    """The report of ``model`` against the configured stores, scraping ``endpoints``."""
    from mlplatform_assets.lib import config as settings
    from mlplatform_assets.lib.model.registry import MlflowSettings, Registry
    from mlplatform_assets.lib.serving.predlog import _s3_client as prediction_log_s3_client

    prediction_log = config.prediction_log_uri
    return cost_report(
        model, Registry(MlflowSettings.from_config(config)).client, ObjectStore(config.data_uri),
        # The prediction log's own S3 endpoint rule (AWS_ENDPOINT_URL_S3 first), as its writer uses it.
        ObjectStore(prediction_log, prediction_log_s3_client() if prediction_log.startswith("s3://") else None),
        endpoints, Prices(settings.read(settings.ENV_PRICE_CPU_HOUR), settings.read(settings.ENV_PRICE_GB_MONTH)))
