"""The retrain-storm policy as a pure function: past drift-triggered retrains and now in, verdict out."""

from __future__ import annotations

import pytest

from mlplatform_assets.lib.monitoring.retrain_policy import (
    PastRetrain,
    retrain_verdict,
    retrains_to_look_back,
)

NOW = 1_000_000.0
H = 3600.0


def ago(*hours: float) -> list[PastRetrain]:
    return [PastRetrain(NOW - h * H, f"run{i:04d}abcdef") for i, h in enumerate(hours)]


@pytest.mark.parametrize("past, cooldown, cap, blocked_by", [
    # nothing before: allowed whatever the limits
    (ago(), 12, 2, None),
    # the cool-down counts from the newest run, whatever the input order
    (ago(30, 11.9), 12, 5, "cool-down"),
    (ago(11.9, 30), 12, 5, "cool-down"),
    (ago(12.1), 12, 5, None),
    # no cool-down: only the cap
    (ago(0.01), 0, 5, None),
    # the cap counts the rolling 24 h, not the calendar day
    (ago(1, 2), 0, 2, "daily cap: 2"),
    (ago(1, 24.01), 0, 2, None),
    (ago(1, 2, 3), 0, 3, "daily cap: 3"),
    # zero means drift never retrains, even with no history
    (ago(), 0, 0, "max_retrains_per_day is 0"),
])
def test_verdict(past, cooldown, cap, blocked_by):
    verdict = retrain_verdict(past, NOW, cooldown_hours=cooldown, max_retrains_per_day=cap)
    if blocked_by is None:
        assert verdict.allowed and verdict.blocked_by is None
    else:
        assert not verdict.allowed and blocked_by in verdict.blocked_by


def test_details_name_the_last_run_and_the_count():
    verdict = retrain_verdict(ago(3, 5, 40), NOW, cooldown_hours=2, max_retrains_per_day=3)
    assert verdict.allowed
    assert verdict.details == {"cooldown_hours": 2, "max_retrains_per_day": 3, "last_drift_run_id": "run0000abcdef",
                               "hours_since_last": 3.0, "retrains_last_24h": 2}
    blocked = retrain_verdict(ago(3), NOW, cooldown_hours=4, max_retrains_per_day=3)
    assert "run0000a" in blocked.blocked_by and "3.00 h ago" in blocked.blocked_by


@pytest.mark.parametrize("cap", [0, 1, 2, 7])
def test_looking_back_the_advertised_number_of_runs_gives_the_same_decision(cap):
    # The decision needs only the newest max(cap, 1) runs (the caller fetches a margin more, for the count).
    assert retrains_to_look_back(cap) > max(cap, 1)
    history = ago(0.5, 1, 2, 3, 5, 8, 13, 21, 34)
    for cooldown in (0, 0.75, 4):
        full = retrain_verdict(history, NOW, cooldown_hours=cooldown, max_retrains_per_day=cap)
        short = retrain_verdict(history[:max(cap, 1)], NOW, cooldown_hours=cooldown,
                                max_retrains_per_day=cap)
        assert full.allowed == short.allowed
        assert (full.blocked_by or "").split(":")[0] == (short.blocked_by or "").split(":")[0]
