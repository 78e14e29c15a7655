from __future__ import annotations

import logging

import httpx
import pytest

from mlplatform_assets.lib.serving.auth import ApiKeyAuth, hash_key
from .conftest import good_record, metric_value, start_server

KEY_ENV = "env-key-" + "a1b2c3d4e5f6"
KEY_FILE = "file-key-" + "0f9e8d7c6b5a"
REVOKED = "revoked-key-" + "11223344"


@pytest.fixture(scope="module")
def auth_server(store, restore_env, tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    keys = d / "keys.txt"
    keys.write_text(f"# comment\n{KEY_FILE}\n\n{REVOKED}\n")
    revoked = d / "revoked.txt"
    revoked.write_text(f"sha256:{hash_key(REVOKED)}\n")
    srv = start_server(store, api_keys=[KEY_ENV], api_keys_file=str(keys), revoked_api_keys_file=str(revoked),
                       prediction_log=False)
    yield srv
    srv.stop()


def _post(srv, headers):
    return httpx.post(f"{srv.url}/invocations", json={"inputs": [good_record()]}, headers=headers)


def test_auth_codes(auth_server, caplog):
    caplog.set_level(logging.DEBUG)
    assert _post(auth_server, {}).status_code == 401
    r = _post(auth_server, {"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["field"] == "authorization"
    assert _post(auth_server, {"Authorization": f"Basic {KEY_ENV}"}).status_code == 401
    assert _post(auth_server, {"Authorization": f"Bearer {REVOKED}"}).status_code == 403
    assert _post(auth_server, {"Authorization": f"Bearer {KEY_ENV}"}).status_code == 200
    assert _post(auth_server, {"Authorization": f"bearer {KEY_FILE}"}).status_code == 200
    r = httpx.post(f"{auth_server.url}/v1/models/other/predict", json={}, headers={})
    assert r.status_code == 401  # no model-name probing without a key
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(auth_server.url + path).status_code == 200
    metrics = httpx.get(auth_server.url + "/metrics").text
    assert metric_value(metrics, "mlplatform_serving_auth_failures_total", reason="revoked") == 1
    assert metric_value(metrics, "mlplatform_serving_auth_failures_total", reason="unknown") >= 1
    for secret in (KEY_ENV, KEY_FILE, REVOKED, hash_key(KEY_ENV)):
        assert secret not in metrics
        assert secret not in caplog.text
        for rec in caplog.records:
            assert secret not in str(rec.args)


def test_key_file_rotation(tmp_path):
    keys = tmp_path / "k"
    keys.write_text("first\n")
    auth = ApiKeyAuth(keys_file=str(keys))
    assert auth.check(b"Bearer first") == "ok"
    keys.write_text("second\n")
    import os
    import time

    os.utime(keys, (time.time() + 5, time.time() + 5))
    auth._last_check = 0
    assert auth.check(b"Bearer first") == "unknown"
    assert auth.check(b"Bearer second") == "ok"


def test_auth_disabled_and_hashing():
    assert ApiKeyAuth().check(None) == "ok"
    auth = ApiKeyAuth([hash_key("k1")], [hash_key("k2")])
    assert auth.check(None) == "missing" and auth.check(b"Bearer ") == "missing"
    assert auth.check(b"Bearer k1") == "ok" and auth.check(b"Bearer k2") == "revoked"
    assert all(len(h) == 32 for h in auth._valid)  # only digests are held
    assert hash_key("sha256:" + "A" * 64) == "a" * 64


def test_env_keys(monkeypatch):
    from mlplatform_assets.lib.serving.settings import ServingSettings

    monkeypatch.setenv("MLPLATFORM_API_KEYS", " k1, k2 ,")
    monkeypatch.setenv("MLPLATFORM_REVOKED_API_KEYS", "k2")
    s = ServingSettings.resolve("m")
    assert s.api_key_hashes == (hash_key("k1"), hash_key("k2")) and s.revoked_key_hashes == (hash_key("k2"),)
    assert "k1" not in repr(s)
