"""Alerts: one record per event in the alerts log, delivered to every configured alert sink.

Plain Python (no Dagster import) so the sensors, the CLI and tests share it.

* Every alert is appended to the alerts log (``PlatformConfig.alerts_log_path``) with
  :func:`~mlplatform_assets.lib.data.storage.append_record`: a local JSONL file (exclusive lock, one
  line per record) or, on a cluster, one object per record under an ``s3://`` prefix.
* It is also delivered to each sink enabled in the environment (generic webhook, Slack-compatible
  webhook, Prometheus Alertmanager: :mod:`mlplatform_assets.lib.monitoring.alerting`), in parallel, each with
  bounded retries. The outcome per sink is recorded in the record's ``delivery`` field
  (``{"alertmanager": {"status": "delivered", "attempts": 1, ...}}``; ``{}`` when no sink is set).
* Nothing here raises into the caller: a misconfigured sink, an unreachable endpoint or a failed log
  append is logged and recorded. Sink URLs are secrets: they never reach the log, metadata or errors.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from mlplatform_assets.lib.data.storage import append_record, read_records
from mlplatform_assets.lib.monitoring.alerting.alert import (
    ALERT_KINDS,
    ALERT_SEVERITY,
    Alert,
)
from mlplatform_assets.lib.monitoring.alerting.http import redact_url
from mlplatform_assets.lib.monitoring.alerting.sink import (
    AlertConfigError,
    AlertSink,
    load_alert_sinks,
)

__all__ = ["ALERT_KINDS", "ALERT_SEVERITY", "Alert", "AlertConfigError", "AlertSink", "load_alert_sinks",
           "read_alerts", "redact_url", "send_alert"]

log = logging.getLogger(__name__)


def _deliver(sink: AlertSink, alert: Alert) -> dict[str, Any]:
    try:
        return sink.deliver(alert)
    except Exception as exc:  # noqa: BLE001 - a sink bug must not cost the other sinks or the log record
        log.error("alert sink %r failed: %s", sink, type(exc).__name__)
        return {"status": "failed", "attempts": 0, "error": type(exc).__name__}


def deliver_to_sinks(alert: Alert, sinks: Sequence[AlertSink] | None = None) -> dict[str, dict[str, Any]]:
    """Deliver ``alert`` to ``sinks`` (default: those configured in the environment). Never raises.

    Sinks run in parallel so one slow receiver does not delay the others (each is bounded by its
    retry budget). A configuration error is returned under the key ``"config"``.
    """
    if sinks is None:
        try:
            sinks = load_alert_sinks()
        except AlertConfigError as exc:  # the message names the variable, never the secret
            log.error("alert sinks misconfigured, alert only logged: %s", exc)
            return {"config": {"status": "failed", "attempts": 0, "error": str(exc)}}
    if not sinks:
        return {}
    with ThreadPoolExecutor(max_workers=len(sinks), thread_name_prefix="alert-sink") as pool:
        outcomes = list(pool.map(lambda sink: _deliver(sink, alert), sinks))
    return {sink.name: outcome for sink, outcome in zip(sinks, outcomes)}


def send_alert(alert: Alert, alerts_log_path: str | Path, sinks: Sequence[AlertSink] | None = None) -> dict[str, Any]:
    """Deliver ``alert`` to the sinks and append it, with the outcome per sink, to the log. Never raises.

    ``sinks`` defaults to :func:`load_alert_sinks` (the environment); pass ``[]`` for log only.
    Returns the record written (plus ``log_error`` when the append itself failed).
    """
    record = alert.as_dict()
    record["delivery"] = deliver_to_sinks(alert, sinks)
    try:
        append_record(alerts_log_path, record)
    except Exception as exc:  # noqa: BLE001 - an alert must never take the caller down
        log.error("could not append alert to %s: %s", alerts_log_path, type(exc).__name__)
        record["log_error"] = type(exc).__name__
    level = logging.INFO if alert.kind == "drift" else logging.WARNING  # drift is routine; the rest needs a look
    log.log(level, "alert %s [%s%s]: %s", alert.kind, alert.model or "-",
            f" {alert.partition}" if alert.partition else "", alert.message)
    return record


def read_alerts(path: str | Path, model: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
    """Alerts from the log, oldest first, optionally only one model's and/or one kind."""
    return [a for a in read_records(path)
            if (model is None or a.get("model") == model) and (kind is None or a.get("kind") == kind)]
