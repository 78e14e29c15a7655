"""The ``mlplatform`` command: what is not a Dagster run, plus headless lifecycle runs through Dagster."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import shlex
import sys
from typing import Any, Sequence

from mlplatform_assets.lib.config import (
    PlatformConfig,
    ensure_dirs,
    load_config,
)

# An explicit (default SQLite) instance config; production mounts its own (infra/dagster.yaml), with the
# same run coordination and monitoring.
LOCAL_INSTANCE_YAML = """\
# Local instance: run, event and schedule storage in SQLite under this directory.
# Runs launched by dagster-daemon: at most one training per model at a time (the tag is carried by
# <model>__lifecycle and <model>__training); ingest and monitoring runs run beside it.
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 4
    tag_concurrency_limits:
      - key: mlplatform/training
        value:
          applyLimitPerUniqueValue: true
        limit: 1
# With dagster-daemon running: a run that never starts, or runs longer than 6 h, is marked FAILED rather
# than staying STARTED forever (a killed run worker is detected by its code server).
run_monitoring:
  enabled: true
  start_timeout_seconds: 300
  cancel_timeout_seconds: 300
  max_runtime_seconds: 21600
  max_resume_run_attempts: 0
  poll_interval_seconds: 60
telemetry:
  enabled: false
"""


def _prepare(config: PlatformConfig, open_dagster: bool = False,  # noqa: ANN202 - DagsterInstance | None
             local_stores_only: bool = False):
    """Create the local state and the default instance config, and initialise the stores the command opens.

    Store creation and migration happen one process at a time (an inter-process lock per store): two
    first commands on a fresh home used to race, and the loser left the store unusable for every later
    command. Returns the Dagster instance when ``open_dagster``. ``local_stores_only`` initialises only an
    embedded (SQLite) MLflow store: a database server is left to the first read.
    """
    from mlplatform_assets.lib.config import is_tracking_server
    from mlplatform_assets.lib.data.storage import atomic_path
    from mlplatform_assets.lib.locks import FileLock, holding

    ensure_dirs(config)
    instance_yaml = os.path.join(config.dagster_home, "dagster.yaml")
    if not os.path.exists(instance_yaml):
        with atomic_path(instance_yaml) as tmp:  # a concurrent reader sees no file or the whole file
            with open(tmp, "w") as fh:
                fh.write(LOCAL_INSTANCE_YAML)
    local = config.mlflow_tracking_uri.startswith("sqlite:///")
    if not is_tracking_server(config.mlflow_tracking_uri) and (local or not local_stores_only):
        # The client opens this store itself (SQLite, a database URL) and creates its tables on first use.
        uri = config.mlflow_tracking_uri
        lock_dir = os.path.dirname(uri[len("sqlite:///"):]) if local else config.state_dir
        with holding(FileLock(os.path.join(lock_dir, ".mlflow-init.lock"))):
            client = _registry(config).client
            client.search_experiments(max_results=1)
            client.search_registered_models(max_results=1)
    if open_dagster:
        from mlplatform_assets.defs.coordination import open_instance

        return open_instance(config.dagster_home)
    return None


def _recover_dead_runs(config: PlatformConfig, instance: Any, out: Any) -> None:
    """Mark runs whose process is gone FAILED and clean up what they left in MLflow (see defs/coordination)."""
    from mlplatform_assets.defs.coordination import (
        recover_dead_runs,
        run_is_live,
        trained_models,
    )

    failed = recover_dead_runs(instance)
    for run in failed:
        print(f"recovered run {run.run_id} ({run.job_name}): its process is gone; marked FAILED", file=out, flush=True)
    registry = _registry(config)
    for model in sorted({m for run in failed for m in trained_models(run)}):
        cleaned = registry.reconcile_incomplete(model, lambda run_id: run_is_live(instance, run_id))
        print(f"[{model}] cleaned up after the failed run(s): MLflow runs marked FAILED "
              f"{cleaned['failed_mlflow_runs'] or 'none'}, versions abandoned {cleaned['abandoned_versions'] or 'none'}",
              file=out, flush=True)


def _registry(config: PlatformConfig):  # noqa: ANN202
    from mlplatform_assets.lib.model.registry import MlflowSettings, Registry

    return Registry(MlflowSettings.from_config(config), config.audit_log_path)


def _specs(config: PlatformConfig, names: Sequence[str] | None):  # noqa: ANN202
    from mlplatform_assets.lib.spec import SpecError, load_specs

    specs = load_specs(config.models_dir, config.state_dir)
    if names:
        known = {s.name: s for s in specs}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SpecError(f"unknown model(s) {unknown}; models in {config.models_dir}: {sorted(known)}")
        specs = [known[n] for n in names]
    return specs


# Step-level DEBUG events stay in the run's event log (UI); the terminal gets INFO and above.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def last_complete_day() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)


def write_example_source(spec: Any, state_dir: str, days: list[dt.date], drift: bool = False,
                         overwrite: bool = False) -> list:
    """Generate a spec's example days into its source directory, which must lie under MLPLATFORM_HOME:
    example data is platform state, so a spec can never make the generator write anywhere else."""
    from mlplatform_assets.lib.data import example_data
    from mlplatform_assets.lib.spec import SpecError

    if "://" in spec.source.uri:
        raise SpecError(f"{spec.name}: source.uri: example data is only written to a local directory under "
                        f"MLPLATFORM_HOME, not to {spec.as_written('source', 'uri')}")
    try:
        return example_data.write_example_days(spec.source.example_generator, spec.source.uri, days,
                                               spec.source.file_pattern, drift=drift, overwrite=overwrite,
                                               allowed_root=state_dir)
    except ValueError as exc:
        raise SpecError(f"{spec.name}: source.uri: {exc}") from None


def lifecycle_window(spec: Any, s3_client: Any = None, end: dt.date | None = None,
                     state_dir: str | None = None) -> tuple[dt.date, dt.date]:
    """The partition range a lifecycle run ingests: the training window ending at the latest source day.
    A local source with an example generator gets its missing days generated (under ``state_dir``,
    default: MLPLATFORM_HOME)."""
    from mlplatform_assets.lib.data import datasource
    from mlplatform_assets.lib.model.features import window_days

    end = end or last_complete_day()
    if spec.source.example_generator and "://" not in (spec.source.uri or ""):
        days = window_days(end, spec)
        write_example_source(spec, state_dir or load_config().state_dir, days)
        return days[0], days[-1]
    available = [d for d in datasource.available_days(spec, s3_client) if d <= end]
    if not available:
        from mlplatform_assets.lib.model.features import DatasetError

        raise DatasetError(f"{spec.name}: source {datasource.source_label(spec)} has no data on or after "
                           f"partition_start {spec.partition_start} (up to {end})")
    days = window_days(available[-1], spec)
    first = min(d for d in available if d >= days[0])
    return first, available[-1]


def run_lifecycle(config: PlatformConfig, names: Sequence[str] | None = None, end: dt.date | None = None,
                  out=sys.stdout) -> list[dict[str, Any]]:
    """Run each model's lifecycle job through Dagster (the code path the UI uses) and summarize it."""
    from mlplatform_assets.definitions import build_definitions
    from mlplatform_assets.defs.coordination import (
        CLI_HOST_TAG,
        CLI_PID_TAG,
        CLI_PROCESS_START_TAG,
    )
    from mlplatform_assets.defs.names import ASSET_PARTITION_RANGE_END_TAG as RANGE_END_TAG
    from mlplatform_assets.defs.names import ASSET_PARTITION_RANGE_START_TAG as RANGE_START_TAG
    from mlplatform_assets.defs.names import TRIGGER_CLI, TRIGGER_TAG, lifecycle_job
    from mlplatform_assets.lib.locks import process_identity

    instance = _prepare(config, open_dagster=True)
    _recover_dead_runs(config, instance, out)
    me = process_identity()
    # Which process runs it: a later CLI start marks the run FAILED if this process dies mid-run.
    process_tags = {CLI_HOST_TAG: me["host"], CLI_PID_TAG: me["pid"],
                    **({CLI_PROCESS_START_TAG: me["start"]} if me["start"] else {})}
    specs = _specs(config, names)
    defs = build_definitions(config, specs)
    s3_client = None
    if any((s.source.uri or "").startswith("s3://") for s in specs):
        # The S3 resource holds dg.EnvVar fields, which only resolve through Dagster config processing.
        s3_client = defs.resources["s3"].process_config_and_initialize().get_client()  # type: ignore[union-attr]
    summaries = []
    for spec in specs:
        start, stop = lifecycle_window(spec, s3_client, end)
        print(f"[{spec.name}] lifecycle over partitions {start}..{stop}", file=out, flush=True)
        job = defs.resolve_job_def(lifecycle_job(spec.name))
        result = job.execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET_LOGS, tags={
            RANGE_START_TAG: start.isoformat(), RANGE_END_TAG: stop.isoformat(), TRIGGER_TAG: TRIGGER_CLI,
            **process_tags})
        summary = summarize_run(spec.name, result)
        summaries.append(summary)
        print(format_summary(summary), file=out, flush=True)
    return summaries


def _plain(value: Any) -> Any:
    """Metadata values as JSON-friendly Python values (tables and schemas become text)."""
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    return repr(value)


def summarize_run(model: str, result: Any) -> dict[str, Any]:
    meta: dict[str, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        meta[mat.asset_key.path[-1]] = {k: _plain(getattr(v, "value", v)) for k, v in mat.metadata.items()}
    failed_checks, warned_checks = [], []
    for event in result.get_asset_check_evaluations():
        if not event.passed:
            # A WARN check (a warn-severity column rule, a quarantined day, a drifted day) informs; it blocks nothing.
            warn = getattr(event.severity, "value", event.severity) == "WARN"
            (warned_checks if warn else failed_checks).append(f"{event.check_name}: {event.description}")
    errors = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            err = event.event_specific_data.error
            errors.append(f"{event.step_key}: {err.message.strip() if err else 'failed'}")
    return {"model": model, "success": result.success, "run_id": result.run_id, "assets": meta,
            "failed_checks": failed_checks, "warned_checks": warned_checks, "errors": errors}


def format_summary(s: dict[str, Any]) -> str:
    a = s["assets"]
    lines = [f"[{s['model']}] run {s['run_id']}: {'SUCCESS' if s['success'] else 'FAILED'}"]
    if "trained_model" in a:
        tm = a["trained_model"]
        metrics = ", ".join(f"{k[8:]}={v:.4f}" for k, v in tm.items() if k.startswith("holdout_"))
        lines.append(f"  trained v{tm.get('model_version')} on {tm.get('partition_range')}: {metrics}")
        lines.append(f"  mlflow run: {tm.get('mlflow_run')}")
    if "deployed_endpoint" in a:
        de = a["deployed_endpoint"]
        lines.append(f"  {'PROMOTED' if de.get('promoted') else 'not promoted'}: {de.get('reason')}")
        lines.append(f"  champion: v{de.get('champion_version')}")
    for c in s["failed_checks"]:
        lines.append(f"  check failed: {c}")
    for c in s.get("warned_checks", []):
        lines.append(f"  check warning: {c}")
    for e in s["errors"]:
        lines.append(f"  error: {e}")
    return "\n".join(lines)


# --- commands -------------------------------------------------------------------

def cmd_lifecycle(args: argparse.Namespace, config: PlatformConfig) -> int:
    end = dt.date.fromisoformat(args.as_of) if args.as_of else None
    summaries = run_lifecycle(config, args.model or None, end)
    if args.json:
        print(json.dumps(summaries, default=str, indent=2))
    ok = all(s["success"] for s in summaries)
    print(f"\nInspect the runs, assets, checks and model versions in the Dagster and MLflow UIs:\n  {ui_command(config)}")
    return 0 if ok else 1


def ui_command(config: PlatformConfig) -> str:
    """The ``mlplatform ui`` command that opens this configuration's state from any directory: the state
    directory, plus each location that differs from what the state directory implies."""
    implied = load_config({"MLPLATFORM_HOME": config.state_dir})
    env = {"MLPLATFORM_HOME": config.state_dir}
    for var, field in (("DAGSTER_HOME", "dagster_home"), ("MLFLOW_TRACKING_URI", "mlflow_tracking_uri"),
                       ("MLPLATFORM_MODELS_DIR", "models_dir")):
        if getattr(config, field) != getattr(implied, field):
            env[var] = getattr(config, field)
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " mlplatform ui"


def cmd_ui(args: argparse.Namespace, config: PlatformConfig) -> int:
    from mlplatform_assets.commands.ui import run_ui

    return run_ui(config, args.host, args.port, args.mlflow_port)


def cmd_explain(args: argparse.Namespace, config: PlatformConfig) -> int:
    from mlplatform_assets.commands.explain import run_explain
    from mlplatform_assets.lib.model.explain import ExplainError

    _prepare(config)
    try:
        return run_explain(args, _registry(config), config)
    except ExplainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cmd_config(args: argparse.Namespace, config: PlatformConfig) -> int:
    data = config.as_dict()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        width = max(map(len, data))
        for k, v in data.items():
            print(f"{k:<{width}}  {v}")
    return 0


def cmd_validate_spec(args: argparse.Namespace, config: PlatformConfig) -> int:
    """Validate every file (all problems of all files are reported); exit 2 if any is invalid."""
    from mlplatform_assets.lib.spec import SpecError, load_spec

    invalid = 0
    for path in args.path:
        try:
            spec = load_spec(path, config.state_dir)
        except SpecError as exc:
            print(f"error: {exc}", file=sys.stderr)
            invalid += 1
            continue
        print(f"{path}: OK ({spec.name}: {spec.task}, {spec.estimator.class_path}, primary metric "
              f"{spec.metrics.primary} ({spec.metrics.direction}))")
    return 2 if invalid else 0


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user database entry in some containers
        return "cli:unknown"


def cmd_rollback(args: argparse.Namespace, config: PlatformConfig) -> int:
    _prepare(config)
    rec = _registry(config).rollback(args.model, args.to, actor=_actor(), reason=args.reason)
    print(f"{args.model}: champion v{rec.from_version} -> v{rec.to_version} (rolled back; audited)")
    return 0


def cmd_reproduce(args: argparse.Namespace, config: PlatformConfig) -> int:
    from mlplatform_assets.lib.data.storage import ObjectStore
    from mlplatform_assets.lib.model.lifecycle import reproduce

    _prepare(config)
    result = reproduce(_registry(config), ObjectStore(config.data_uri), args.model, args.version)
    print(json.dumps(result.__dict__, default=str) if args.json else result.message)
    return 0 if result.identical else 1


def cmd_audit(args: argparse.Namespace, config: PlatformConfig) -> int:
    _prepare(config)
    for rec in _registry(config).audit_records(args.model):
        print(json.dumps(rec, sort_keys=True) if args.json else
              f"{rec['time']}  {rec['decision']:<13} v{rec['from_version']} -> v{rec['to_version']}  "
              f"by {rec['actor']}: {rec['reason']}")
    return 0


def cmd_lineage(args: argparse.Namespace, config: PlatformConfig) -> int:
    from mlplatform_assets.lib.model.registry import version_lineage

    _prepare(config)
    print(json.dumps(version_lineage(_registry(config), args.model, args.version), indent=2, default=str))
    return 0


def cmd_example_data(args: argparse.Namespace, config: PlatformConfig) -> int:
    from mlplatform_assets.lib.spec import SpecError

    specs = _specs(config, [args.model])
    spec = specs[0]
    if not spec.source.example_generator:
        raise SpecError(f"{spec.name}: its spec declares no source.example_generator")
    start = dt.date.fromisoformat(args.start)
    end = dt.date.fromisoformat(args.end) if args.end else start
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    written = write_example_source(spec, config.state_dir, days, drift=args.drift, overwrite=args.overwrite)
    print(f"{spec.name}: wrote {len(written)} day file(s) to {spec.source.uri}{' (drifted)' if args.drift else ''}")
    return 0


def cmd_cost(args: argparse.Namespace, config: PlatformConfig) -> int:
    from mlplatform_assets.lib.cost.report import format_table, report_for_config

    spec = _specs(config, [args.model])[0]
    _prepare(config)
    report = report_for_config(config, spec.name, [*spec.serving.endpoints, *(args.endpoint or [])])
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_table(report))
    return 0


def cmd_serve(args: argparse.Namespace, config: PlatformConfig) -> int:
    from mlplatform_assets.lib.serving import run_from_args

    _prepare(config)
    run_from_args(args)
    return 0


def cmd_exporter(args: argparse.Namespace, config: PlatformConfig) -> int:
    from mlplatform_assets.commands.exporter import build_collector, run_exporter
    from mlplatform_assets.defs.coordination import open_instance

    # The exporter only reads, and opens the stores on its first scrape, retrying on each later one: started
    # while PostgreSQL (or an MLflow database) is down it serves source_up=0 for that store and recovers on
    # its own, rather than crash-looping with the cause hidden behind "exporter down".
    _prepare(config, local_stores_only=True)
    run_exporter(build_collector(config, lambda: open_instance(config.dagster_home), _registry(config),
                                 args.cache_seconds), args.host, args.port, sys.stdout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlplatform", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("lifecycle", help="run the whole lifecycle of models through Dagster (a model whose "
                                         "training is already in progress waits for it, saying so)")
    s.add_argument("--model", action="append", help="model name (repeatable; default: all)")
    s.add_argument("--as-of", help="last day of the training window (YYYY-MM-DD; default: yesterday UTC)")
    s.add_argument("--json", action="store_true", help="also print the summaries as JSON")
    s.set_defaults(fn=cmd_lifecycle)

    s = sub.add_parser("ui", help="the Dagster UI (webserver + daemon) and the MLflow UI on this state, until Ctrl-C")
    s.add_argument("--host", default="127.0.0.1", help="interface both UIs listen on (default: 127.0.0.1)")
    s.add_argument("--port", type=int, default=3000, help="Dagster UI port (default: 3000)")
    s.add_argument("--mlflow-port", type=int, default=5000,
                   help="MLflow UI port (default: 5000; metadata links follow it unless MLPLATFORM_MLFLOW_UI_URL is set)")
    s.set_defaults(fn=cmd_ui)

    s = sub.add_parser("explain", help="per-feature contributions (Shapley values) to one prediction: a --row "
                                       "or a logged --request-id")
    from mlplatform_assets.commands.explain import add_explain_arguments

    add_explain_arguments(s)
    s.set_defaults(fn=cmd_explain)

    s = sub.add_parser("config", help="print the effective configuration")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_config)

    s = sub.add_parser("validate-spec", help="validate model spec file(s)")
    s.add_argument("path", nargs="+")
    s.set_defaults(fn=cmd_validate_spec)

    s = sub.add_parser("rollback", help="move 'champion' back (previous champion by default)")
    s.add_argument("model")
    s.add_argument("--to", help="version to roll back to")
    s.add_argument("--reason", default="manual rollback", help="recorded in the audit trail")
    s.set_defaults(fn=cmd_rollback)

    s = sub.add_parser("reproduce", help="retrain a recorded version and compare its holdout predictions")
    s.add_argument("model")
    s.add_argument("version")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_reproduce)

    s = sub.add_parser("audit", help="print a model's alias audit trail")
    s.add_argument("model")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_audit)

    s = sub.add_parser("lineage", help="print a version's lineage (data, code, spec, Dagster run)")
    s.add_argument("model")
    s.add_argument("version")
    s.set_defaults(fn=cmd_lineage)

    s = sub.add_parser("example-data", help="write example daily files (optionally drifted)")
    s.add_argument("--model", required=True)
    s.add_argument("--start", required=True, help="first day YYYY-MM-DD")
    s.add_argument("--end", help="last day (default: --start)")
    s.add_argument("--drift", action="store_true", help="generate drifted data")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(fn=cmd_example_data)

    s = sub.add_parser("cost", help="what a model costs: training runs, bytes stored, serving requests and CPU "
                                    "(money with MLPLATFORM_PRICE_CPU_HOUR / MLPLATFORM_PRICE_GB_MONTH)")
    s.add_argument("model")
    s.add_argument("--endpoint", action="append", help="a serving endpoint to scrape besides the spec's "
                                                        "serving.endpoints (repeatable)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_cost)

    s = sub.add_parser("serve", help="serve a model's champion over HTTP")
    from mlplatform_assets.lib.serving import add_serve_arguments

    add_serve_arguments(s)
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("exporter", help="serve model health (drift, realized quality, ingest and training times, "
                                        "champion, promotions/rollbacks, alerts) as Prometheus metrics")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    s.add_argument("--port", type=int, default=9108)
    s.add_argument("--cache-seconds", type=float, default=15.0,
                   help="serve a snapshot of the stores at most this old (one read per period, however many scrapes)")
    s.set_defaults(fn=cmd_exporter)

    from mlplatform_assets.stack.command import add_stack_parser

    add_stack_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*is currently in beta.*")
    args = build_parser().parse_args(argv)
    from mlplatform_assets.lib.config import ConfigError
    from mlplatform_assets.lib.model.features import DatasetError
    from mlplatform_assets.lib.model.registry import RegistryError
    from mlplatform_assets.lib.spec import SpecError

    # Every command passes explicit locations to Dagster and MLflow (never MLflow's default ./mlflow.db,
    # never an ephemeral Dagster instance); the only process setting is quieter artifact downloads.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        config = load_config()
        return int(args.fn(args, config) or 0)
    except (ConfigError, SpecError, RegistryError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
