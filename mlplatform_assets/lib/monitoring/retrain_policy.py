"""When drift may trigger a retrain: the retrain-storm policy, a pure function of past retrains and now.

A drifting source can report drift every day (or every backfilled day at once); retraining on each
report would churn the registry and the serving fleet. Two limits from the spec's ``drift`` block:
a cool-down after the last drift-triggered retrain, and a cap per rolling 24 hours. Every past
retrain counts whatever its outcome: a retrain that keeps failing is as much a storm as one that
succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

DAY_S = 86_400.0


@dataclass(frozen=True)
class PastRetrain:
    started_at: float  # epoch seconds
    run_id: str


@dataclass(frozen=True)
class RetrainVerdict:
    """``blocked_by`` is None when a retrain may start; otherwise the reason, in words."""

    blocked_by: str | None
    details: dict[str, Any]

    @property
    def allowed(self) -> bool:
        return self.blocked_by is None


def retrain_verdict(past: Sequence[PastRetrain], now: float, *, cooldown_hours: float,
                    max_retrains_per_day: int) -> RetrainVerdict:
    """May a drift-triggered retrain start at ``now``, given the drift-triggered retrains ``past`` (any order)?"""
    details: dict[str, Any] = {"cooldown_hours": cooldown_hours, "max_retrains_per_day": max_retrains_per_day}
    if max_retrains_per_day == 0:
        return RetrainVerdict("drift.max_retrains_per_day is 0: drift never triggers retraining", details)
    ordered = sorted(past, key=lambda r: r.started_at)
    if ordered:
        last = ordered[-1]
        age_h = (now - last.started_at) / 3600.0
        details.update(last_drift_run_id=last.run_id, hours_since_last=round(age_h, 3))
        if cooldown_hours > 0 and age_h < cooldown_hours:
            return RetrainVerdict(
                f"cool-down: the last drift-triggered retrain (run {last.run_id[:8]}) started {age_h:.2f} h ago, "
                f"less than drift.cooldown_hours={cooldown_hours:g}", details)
    in_day = [r for r in ordered if now - r.started_at < DAY_S]
    details["retrains_last_24h"] = len(in_day)
    if len(in_day) >= max_retrains_per_day:
        return RetrainVerdict(f"daily cap: {len(in_day)} drift-triggered retrain(s) in the last 24 h, "
                              f"drift.max_retrains_per_day={max_retrains_per_day}", details)
    return RetrainVerdict(None, details)


def retrains_to_look_back(max_retrains_per_day: int) -> int:
    """How many past retrains the caller fetches (newest first). The decision needs only
    ``max_retrains_per_day`` of them (the cool-down only the newest); a margin keeps the count quoted in
    the reason exact for any realistic history."""
    return max(max_retrains_per_day, 1) + 50
