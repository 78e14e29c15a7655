"""Alerts: one JSON line per event in the alerts log, optionally POSTed to a webhook.

Plain Python (no Dagster import) so the sensors, the CLI and tests share it.

* Every alert is appended to the alerts log (``PlatformConfig.alerts_log_path``) with
  :func:`~mlplatform_assets.lib.storage.append_record`: a local JSONL file (exclusive lock, one
  line per record) or, on a cluster, one object per record under an ``s3://`` prefix.
* When ``MLPLATFORM_ALERT_WEBHOOK_URL`` is set (or a URL is passed), the alert is also POSTed
  as JSON to it with a short timeout. Delivery failures never raise: they are logged (with
  the URL reduced to scheme://host:port, since the path and query of chat webhooks are the
  secret) and recorded in the alert's ``delivery`` field in the log.
* The URL itself is never written to the log, to metadata or to an exception message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .storage import append_record, read_records

log = logging.getLogger(__name__)

ENV_WEBHOOK_URL = "MLPLATFORM_ALERT_WEBHOOK_URL"
ENV_WEBHOOK_TIMEOUT = "MLPLATFORM_ALERT_WEBHOOK_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 3.0

ALERT_KINDS = ("drift", "quality_floor", "run_failure", "rollback", "retrain_storm_blocked")


@dataclass
class Alert:
    """One alert. ``details`` is free-form JSON-serializable context (numbers, ids, reasons)."""

    kind: str
    model: str | None
    message: str
    asset: str | None = None
    partition: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    time: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if self.kind not in ALERT_KINDS:
            raise ValueError(f"unknown alert kind {self.kind!r}; expected one of {ALERT_KINDS}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` only: user info, path, query and fragment may all carry secrets."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme or '?'}://{host}{port}/..."
    except ValueError:
        return "<unparseable url>"


def _timeout() -> float:
    try:
        return float(os.environ.get(ENV_WEBHOOK_TIMEOUT) or DEFAULT_TIMEOUT_S)
    except ValueError:
        return DEFAULT_TIMEOUT_S


def post_webhook(url: str, payload: dict[str, Any], timeout: float | None = None) -> str:
    """POST ``payload`` as JSON. Returns a delivery status string; never raises."""
    body = json.dumps(payload, sort_keys=True, default=str).encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "mlplatform-alerts"})
    try:
        # No proxies: an alert endpoint is reached directly; an env proxy must not see the secret URL.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=timeout if timeout is not None else _timeout()) as resp:
            status = resp.status
        return f"delivered (HTTP {status})"
    except urllib.error.HTTPError as exc:
        reason = f"failed: HTTP {exc.code}"
    except Exception as exc:  # noqa: BLE001 - URLError, timeouts, resets: all are "not delivered"
        inner = getattr(exc, "reason", None)
        reason = f"failed: {type(inner or exc).__name__}"
    # The exception text can contain the full URL; only the class name and the redacted host are logged.
    log.warning("alert webhook %s not delivered: %s", redact_url(url), reason)
    return reason


def send_alert(alert: Alert, alerts_log_path: str | Path, webhook_url: str | None = None) -> dict[str, Any]:
    """Record ``alert`` in the log and, if a webhook is configured, deliver it. Never raises.

    ``webhook_url`` defaults to ``$MLPLATFORM_ALERT_WEBHOOK_URL``. Returns the record written
    (with ``delivery``: ``"log only"``, ``"delivered (HTTP 200)"`` or ``"failed: <reason>"``).
    """
    url = webhook_url if webhook_url is not None else os.environ.get(ENV_WEBHOOK_URL) or None
    record = alert.as_dict()
    record["delivery"] = post_webhook(url, alert.as_dict()) if url else "log only"
    try:
        append_record(alerts_log_path, record)
    except Exception as exc:  # noqa: BLE001 - an alert must never take the caller down
        log.error("could not append alert to %s: %s", alerts_log_path, exc)
        record["delivery"] += f"; log append failed: {type(exc).__name__}"
    level = logging.WARNING if alert.kind != "drift" else logging.INFO
    log.log(level, "alert %s [%s%s]: %s", alert.kind, alert.model or "-",
            f" {alert.partition}" if alert.partition else "", alert.message)
    return record


def read_alerts(path: str | Path, model: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
    """Alerts from the log, oldest first, optionally only one model's and/or one kind."""
    return [a for a in read_records(path)
            if (model is None or a.get("model") == model) and (kind is None or a.get("kind") == kind)]
