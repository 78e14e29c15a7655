"""A malformed alert sink variable fails the code location load, naming the variable (not at alert time)."""

import pytest

from mlplatform_assets.definitions import build_definitions
from mlplatform_assets.lib.monitoring.alerts import AlertConfigError


def test_malformed_sink_url_fails_the_definitions_load(platform_env, monkeypatch):
    monkeypatch.setenv("MLPLATFORM_ALERTMANAGER_URL", "alertmanager:9093/SECRET")
    with pytest.raises(AlertConfigError, match="MLPLATFORM_ALERTMANAGER_URL must be an absolute http") as info:
        build_definitions(platform_env, specs=[])
    assert "SECRET" not in str(info.value)
    monkeypatch.setenv("MLPLATFORM_ALERTMANAGER_URL", "http://127.0.0.1:9093")
    assert build_definitions(platform_env, specs=[]).sensors
