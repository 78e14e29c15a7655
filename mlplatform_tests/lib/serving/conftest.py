from __future__ import annotations

import httpx
import pytest

from mlplatform_assets.lib.serving import ThreadedServer, create_app
from mlplatform_assets.lib.serving import testing as T

MODEL = "serving-demo"


@pytest.fixture(scope="package")
def store(tmp_path_factory):
    """One MLflow SQLite store with the mixed-column HGB classifier as champion (version 1)."""
    config = T.make_config(tmp_path_factory.mktemp("serving-store"))
    version = T.register_model(config, MODEL, "hgb", optional_numeric=False)
    assert version == "1"
    return config


@pytest.fixture(scope="package")
def restore_env():
    # The serving app sets MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false in its process; undo it for
    # the rest of the test session (other suites load models with the MLflow flavor). Package scope:
    # restored as soon as the last serving test has run.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
        yield mp


def start_server(config, model=MODEL, **overrides) -> ThreadedServer:
    """A server in a thread; without keys unless the test passes some (then authentication is on)."""
    overrides.setdefault("poll_interval_s", 0.2)
    overrides.setdefault("log_flush_interval_s", 0.2)
    overrides.setdefault("api_keys", [])
    overrides.setdefault("revoked_api_keys", [])
    overrides.setdefault("allow_unauthenticated", not (overrides["api_keys"] or overrides.get("api_keys_file")))
    return ThreadedServer(create_app(model, config, **overrides)).start(wait_model=True)


@pytest.fixture(scope="package")
def server(store, restore_env):
    srv = start_server(store, max_rows=50, max_body_bytes=64 * 1024)
    yield srv
    srv.stop()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def good_record(**over):
    rec = {"age": 42, "income": 52000.5, "score": 0.7, "city": "paris", "plan": "pro"}
    rec.update(over)
    return rec


def metric_value(text: str, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    found = False
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, lab = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in lab for k, v in labels.items()):
            total += float(value)
            found = True
    return total if found else float("nan")
