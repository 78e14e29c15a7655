"""The alert record shared by the sensors, the alert log and every sink."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

# kind -> severity, the label on-call routing keys on (Alertmanager ``severity``, Slack message prefix).
# A drift day or a blocked retrain needs a look; a quality drop or a rollback means users are affected.
ALERT_SEVERITY: dict[str, str] = {
    "drift": "warning",
    "retrain_storm_blocked": "warning",
    "run_failure": "warning",
    "partition_quarantined": "warning",  # a day left out of training and monitoring (validation.on_failure)
    "champion_stale": "warning",  # the champion is older than its backtest's retraining cadence
    "offline_online_divergence": "warning",  # realized quality far from the holdout's: skew or leakage
    "quality_floor": "critical",
    "rollback": "critical",
}
ALERT_KINDS = tuple(ALERT_SEVERITY)


@dataclass
class Alert:
    """One alert. ``details`` is free-form JSON-serializable context (numbers, ids, reasons);
    ``link`` an optional http(s) URL where a person can look (Dagster run, MLflow run)."""

    kind: str
    model: str | None
    message: str
    asset: str | None = None
    partition: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    time: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    link: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ALERT_SEVERITY:
            raise ValueError(f"unknown alert kind {self.kind!r}; expected one of {ALERT_KINDS}")

    @property
    def severity(self) -> str:
        return ALERT_SEVERITY[self.kind]

    def started_at(self) -> dt.datetime:
        """``time`` as an aware datetime (UTC when the string carries no offset)."""
        parsed = dt.datetime.fromisoformat(self.time)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
