"""Per-column rules and quarantine through Dagster, on a real instance and a real MLflow store.

Under ``validation.on_failure: quarantine`` a bad day and a missing day are left out of training and
monitoring, named in metadata and in one alert, and the window trains on the rest; under ``block`` (the
default) a failing block-severity rule stops the run before validated_data, while a warn rule never does.
"""

import datetime as dt
from pathlib import Path

import dagster as dg
import pandas as pd

from mlplatform_assets.cli import run_lifecycle
from mlplatform_assets.definitions import build_definitions
from mlplatform_assets.lib.data.storage import ObjectStore
from mlplatform_assets.lib.model.lifecycle import quarantine_record, validated_days
from mlplatform_assets.lib.model.registry import MlflowSettings, Registry
from mlplatform_assets.lib.monitoring.alerts import read_alerts
from mlplatform_assets.lib.spec import load_specs
from mlplatform_tests.conftest import SMALL_DAYS, SMALL_END, SMALL_NAME, write_churn_days, write_small_spec

BAD_DAY, GAP_DAY, WARN_DAY = SMALL_DAYS[3], SMALL_DAYS[6], SMALL_DAYS[8]

RULES = """\
  columns:
    - {column: monthly_charges, max: 500}
    - {column: tenure_months, max_null_share: 0.3, severity: warn}
"""


def _write_spec(config, source: Path, on_failure: str, training: str = "") -> None:
    path = write_small_spec(Path(config.models_dir), str(source))
    text = path.read_text().replace("  min_rows: 50\n", f"  min_rows: 50\n  on_failure: {on_failure}\n{RULES}")
    if training:
        text = text.replace("  seed: 3\n", f"  seed: 3\n{training}")
    path.write_text(text)


def _spoil(source: Path) -> dict[str, str]:
    """BAD_DAY breaks the blocking max rule; GAP_DAY has no file; WARN_DAY only breaks the warn rule (half of
    tenure_months is null: above the global max_null_share 0.2 too, which no longer applies to that column).
    Returns the expected messages."""
    bad = pd.read_parquet(source / f"{BAD_DAY}.parquet")
    bad.loc[:4, "monthly_charges"] = 9999.0
    bad.to_parquet(source / f"{BAD_DAY}.parquet", index=False)
    (source / f"{GAP_DAY}.parquet").unlink()
    warn = pd.read_parquet(source / f"{WARN_DAY}.parquet")
    warn.loc[: len(warn) // 2 - 1, "tenure_months"] = None
    warn.to_parquet(source / f"{WARN_DAY}.parquet", index=False)
    half = len(warn) // 2
    return {"bad": f"monthly_charges: 5 of {len(bad)} rows above max 500, e.g. 9999.0",
            "warn": f"tenure_months: {half} of {len(warn)} rows null (share {half / len(warn):.4f} > 0.3)"}


def _defs(config):
    return build_definitions(config, load_specs(config.models_dir, config.state_dir))


def test_quarantine_trains_on_valid_days_names_them_and_skips_monitoring(platform_env, small_source):
    """The end-to-end case: one bad day and one missing day in the window (~30 s: one training)."""
    expected = _spoil(small_source)
    _write_spec(platform_env, small_source, "quarantine")

    summary = run_lifecycle(platform_env, [SMALL_NAME], SMALL_END)[0]
    assert summary["success"], summary
    assets = summary["assets"]
    quarantined = [str(BAD_DAY), str(GAP_DAY)]
    for asset in ("features", "trained_model", "evaluation_report"):
        assert assets[asset]["quarantined_days"] == quarantined, asset
    assert assets["validated_data"]["quarantined_days"] == quarantined
    assert assets["validated_data"]["partitions"] == len(SMALL_DAYS) - 2
    assert assets["raw_data"]["quarantined_partitions"] == {
        str(BAD_DAY): {"max:monthly_charges": expected["bad"]},
        str(GAP_DAY): {"non_empty": "no data: file not found"}}
    assert assets["features"]["partition_range"] == f"{SMALL_DAYS[0]}..{SMALL_END}"
    assert str(Registry(MlflowSettings.from_config(platform_env)).champion(SMALL_NAME).version) == "1"

    # The check results say what happened to which day; none blocked the run: all are warnings.
    assert summary["failed_checks"] == []
    checks = dict(c.split(": ", 1) for c in summary["warned_checks"])
    assert checks == {"column_rules": f"quarantined 1 partition(s): {BAD_DAY}: {expected['bad']}",
                      "non_empty": f"quarantined 1 partition(s): {GAP_DAY}: no data: file not found",
                      "column_rules_warn": f"{WARN_DAY}: {expected['warn']}"}

    # One alert names both days and what failed on each.
    alerts = read_alerts(platform_env.alerts_log_path, model=SMALL_NAME, kind="partition_quarantined")
    assert len(alerts) == 1
    assert alerts[0]["details"]["days"] == assets["raw_data"]["quarantined_partitions"]
    assert alerts[0]["message"].endswith(f"{BAD_DAY}: max:monthly_charges; {GAP_DAY}: non_empty")

    store = ObjectStore(platform_env.data_uri)
    spec = load_specs(platform_env.models_dir, platform_env.state_dir)[0]
    assert validated_days(spec, store) == [d for d in SMALL_DAYS if d not in (BAD_DAY, GAP_DAY)]
    assert quarantine_record(spec, store, BAD_DAY)["failed_checks"] == {"max:monthly_charges": expected["bad"]}
    assert quarantine_record(spec, store, WARN_DAY) is None

    # Monitoring skips a quarantined day with a note instead of failing.
    monitoring = _defs(platform_env).resolve_job_def(f"{SMALL_NAME}__monitoring")
    result = monitoring.execute_in_process(partition_key=str(BAD_DAY), instance=dg.DagsterInstance.ephemeral())
    assert result.success
    events = result.get_asset_materialization_events()
    assert {e.asset_key.path[-1] for e in events} == {"batch_predictions", "drift_report", "model_performance"}
    for event in events:
        meta = event.event_specific_data.materialization.metadata
        assert meta["quarantined"].value is True
        assert meta["skipped"].value.startswith(f"{BAD_DAY} is quarantined (failed: max:monthly_charges)")


def _ingest(job, instance, first: dt.date, last: dt.date):
    return job.execute_in_process(instance=instance, raise_on_error=False, tags={
        "dagster/asset_partition_range_start": str(first), "dagster/asset_partition_range_end": str(last)})


def test_too_few_valid_days_fail_naming_counts_and_days_then_a_fixed_day_rejoins(platform_env, small_source):
    _spoil(small_source)
    _write_spec(platform_env, small_source, "quarantine", training="  min_partitions: 9\n")
    defs = _defs(platform_env)
    instance = dg.DagsterInstance.ephemeral()
    ingest = defs.resolve_job_def(f"{SMALL_NAME}__ingest")
    assert _ingest(ingest, instance, SMALL_DAYS[0], SMALL_END).success  # quarantining is not a failure

    training = defs.resolve_job_def(f"{SMALL_NAME}__training").execute_in_process(
        instance=instance, raise_on_error=False, run_config={"ops": {f"{SMALL_NAME}__features": {
            "config": {"as_of": str(SMALL_END)}}}})
    assert not training.success
    failure = next(e for e in training.all_events if e.event_type_value == "STEP_FAILURE")
    assert (f"training window {SMALL_DAYS[0]}..{SMALL_END} has 8 valid day(s) after quarantining 2 "
            f"({BAD_DAY}, {GAP_DAY}); at least 9 are required (training.min_partitions)"
            in failure.event_specific_data.error.message)
    assert training.get_asset_materialization_events() == []

    # The source is fixed: re-ingesting the two days lifts their quarantine; they rejoin the window.
    write_churn_days(small_source, [BAD_DAY, GAP_DAY])
    assert _ingest(ingest, instance, BAD_DAY, GAP_DAY).success
    spec = load_specs(platform_env.models_dir, platform_env.state_dir)[0]
    store = ObjectStore(platform_env.data_uri)
    assert validated_days(spec, store) == SMALL_DAYS
    assert store.list(f"{SMALL_NAME}/quarantine/") == []


def test_block_mode_stops_at_a_failing_block_rule_and_never_at_a_warn_rule(platform_env, small_source):
    expected = _spoil(small_source)
    _write_spec(platform_env, small_source, "block")
    job = _defs(platform_env).resolve_job_def(f"{SMALL_NAME}__ingest")
    instance = dg.DagsterInstance.ephemeral()
    validated = dg.AssetKey([SMALL_NAME, "validated_data"])

    def check(result, name):
        return next(e for e in result.get_asset_check_evaluations() if e.check_name == name)

    blocked = _ingest(job, instance, BAD_DAY, BAD_DAY)
    assert not blocked.success
    rules = check(blocked, "column_rules")
    assert not rules.passed and rules.severity == dg.AssetCheckSeverity.ERROR
    assert rules.description == f"{BAD_DAY}: {expected['bad']}"
    assert instance.get_materialized_partitions(validated) == set()

    gap = _ingest(job, instance, GAP_DAY, GAP_DAY)
    assert not gap.success
    assert check(gap, "non_empty").severity == dg.AssetCheckSeverity.ERROR
    assert [e.check_name for e in gap.get_asset_check_evaluations() if not e.passed] == ["non_empty"]

    warned = _ingest(job, instance, WARN_DAY, WARN_DAY)
    assert warned.success
    warn = check(warned, "column_rules_warn")
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    assert warn.description == f"{WARN_DAY}: {expected['warn']}"
    assert check(warned, "column_rules").passed and check(warned, "null_share").passed
    assert instance.get_materialized_partitions(validated) == {str(WARN_DAY)}
    store = ObjectStore(platform_env.data_uri)
    assert store.list(f"{SMALL_NAME}/quarantine/") == []  # block mode never quarantines
    assert read_alerts(platform_env.alerts_log_path, kind="partition_quarantined") == []
