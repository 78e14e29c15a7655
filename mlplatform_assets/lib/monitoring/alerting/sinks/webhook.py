"""Generic webhook: the alert record itself as the JSON body (any endpoint accepting a JSON POST)."""

from __future__ import annotations

from typing import Any

from mlplatform_assets.lib.monitoring.alerting.alert import Alert
from mlplatform_assets.lib.monitoring.alerting.sink import AlertSink


class WebhookSink(AlertSink):
    name = "webhook"
    url_variable = "MLPLATFORM_ALERT_WEBHOOK_URL"

    def payload(self, alert: Alert) -> dict[str, Any]:
        return {**alert.as_dict(), "severity": alert.severity}
