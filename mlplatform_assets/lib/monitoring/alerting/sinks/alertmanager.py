"""Prometheus Alertmanager: ``POST <url>/api/v2/alerts`` with a one-alert list, so on-call routing applies.

Labels (what Alertmanager routes, groups and deduplicates on): ``alertname`` (``Mlplatform`` + the
kind in CamelCase, e.g. ``MlplatformDrift``), ``kind``, ``severity``, ``model`` and ``partition`` when
known. ``endsAt`` is ``startsAt`` + ``MLPLATFORM_ALERTMANAGER_RESOLVE_AFTER_S`` (default 1 h): the
platform never sends a "resolved" event, so each alert resolves itself.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Mapping

from mlplatform_assets.lib.monitoring.alerting.alert import Alert
from mlplatform_assets.lib.monitoring.alerting.http import RetryPolicy
from mlplatform_assets.lib.monitoring.alerting.sink import AlertSink, number_variable, sink_setting

ENV_RESOLVE_AFTER = "MLPLATFORM_ALERTMANAGER_RESOLVE_AFTER_S"
DEFAULT_RESOLVE_AFTER_S = 3600.0


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class AlertmanagerSink(AlertSink):
    name = "alertmanager"
    url_variable = "MLPLATFORM_ALERTMANAGER_URL"
    extra_variables = (number_variable(ENV_RESOLVE_AFTER, DEFAULT_RESOLVE_AFTER_S, minimum=1.0,
                                       description="Seconds after which an Alertmanager alert resolves itself."),)

    def __init__(self, url: str, policy: RetryPolicy, resolve_after_s: float = DEFAULT_RESOLVE_AFTER_S) -> None:
        super().__init__(url, policy)
        self.resolve_after_s = resolve_after_s

    @classmethod
    def from_env(cls, url: str, env: Mapping[str, str] | None, policy: RetryPolicy) -> AlertmanagerSink:
        return cls(url, policy, sink_setting(cls, ENV_RESOLVE_AFTER, env))

    def endpoint(self) -> str:
        return self.url.rstrip("/") + "/api/v2/alerts"

    def payload(self, alert: Alert) -> list[dict[str, Any]]:
        labels = {"alertname": "Mlplatform" + "".join(w.capitalize() for w in alert.kind.split("_")),
                  "kind": alert.kind, "severity": alert.severity}
        if alert.model:
            labels["model"] = alert.model
        if alert.partition:
            labels["partition"] = alert.partition
        subject = f"model {alert.model}" if alert.model else "the platform"
        where = f" on {alert.partition}" if alert.partition else ""
        description = alert.message
        if alert.asset:
            description += f"\nasset: {alert.asset}"
        if alert.details:
            description += "\ndetails: " + json.dumps(alert.details, sort_keys=True, default=str)
        started = alert.started_at()
        entry: dict[str, Any] = {
            "labels": labels,
            "annotations": {"summary": f"{alert.kind.replace('_', ' ')} for {subject}{where}",
                            "description": description},
            "startsAt": _rfc3339(started),
            "endsAt": _rfc3339(started + dt.timedelta(seconds=self.resolve_after_s)),
        }
        if alert.link and alert.link.startswith(("http://", "https://")):
            entry["generatorURL"] = alert.link
        return [entry]
