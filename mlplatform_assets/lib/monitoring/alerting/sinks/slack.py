"""Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat): ``{"text", "blocks"}``.

``text`` is the one-line notification fallback; ``blocks`` the readable message: a header, the
kind/severity/model/day fields, the message, and the link when the alert has one.
"""

from __future__ import annotations

from typing import Any

from mlplatform_assets.lib.monitoring.alerting.alert import Alert
from mlplatform_assets.lib.monitoring.alerting.sink import AlertSink

# Slack Block Kit limits: header text 150 chars, section text 3000, field text 2000.
_HEADER_MAX, _TEXT_MAX, _FIELD_MAX = 150, 3000, 2000


def _escape(text: str) -> str:
    """Slack mrkdwn control characters (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SlackSink(AlertSink):
    name = "slack"
    url_variable = "MLPLATFORM_ALERT_SLACK_WEBHOOK_URL"

    def payload(self, alert: Alert) -> dict[str, Any]:
        model = alert.model or "platform"
        where = f" on {alert.partition}" if alert.partition else ""
        fallback = f"[{alert.severity}] mlplatform {alert.kind} alert for {model}{where}: {alert.message}"
        fields = [("Kind", alert.kind), ("Severity", alert.severity), ("Model", model),
                  ("Day", alert.partition or "-")]
        if alert.asset:
            fields.append(("Asset", alert.asset))
        blocks: list[dict[str, Any]] = [
            {"type": "header",
             "text": {"type": "plain_text", "text": _clip(f"mlplatform: {alert.kind} ({model})", _HEADER_MAX)}},
            {"type": "section",
             "fields": [{"type": "mrkdwn", "text": _clip(f"*{k}*\n{_escape(v)}", _FIELD_MAX)} for k, v in fields]},
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip(_escape(alert.message), _TEXT_MAX)}},
        ]
        if alert.link:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{alert.link}|Open>"}})
        return {"text": _clip(fallback, _TEXT_MAX), "blocks": blocks}
