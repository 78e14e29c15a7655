from __future__ import annotations

import logging

import httpx
import pytest

from mlplatform_assets.lib.serving import ThreadedServer, create_app
from mlplatform_assets.lib.serving.auth import ApiKeyAuth, hash_key
from mlplatform_assets.lib.serving.errors import ServingConfigError
from mlplatform_assets.lib.serving.settings import ServingSettings

from .conftest import MODEL, good_record, metric_value, start_server

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
    # the model's metadata reveals its input schema: it needs a key like predictions do
    assert httpx.get(f"{auth_server.url}/v1/models/{MODEL}").status_code == 401
    assert httpx.get(f"{auth_server.url}/v1/models/other").status_code == 401
    assert httpx.get(f"{auth_server.url}/v1/models/{MODEL}", headers={"Authorization": f"Bearer {REVOKED}"}
                     ).status_code == 403
    meta = httpx.get(f"{auth_server.url}/v1/models/{MODEL}", headers={"Authorization": f"Bearer {KEY_ENV}"})
    assert meta.status_code == 200 and meta.json()["model_version"] == "1"
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(auth_server.url + path).status_code == 200
    metrics = httpx.get(auth_server.url + "/metrics").text
    assert metric_value(metrics, "mlplatform_serving_auth_enabled") == 1
    assert metric_value(metrics, "mlplatform_serving_auth_failures_total", reason="revoked") == 2
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


def test_duplicate_authorization_headers_are_400(auth_server):
    import socket

    body = b'{"inputs": []}'
    for first, second in ((KEY_ENV, KEY_ENV), (KEY_ENV, "nope"), ("nope", KEY_ENV)):
        with socket.create_connection((auth_server.host, auth_server.port), timeout=5) as s:
            s.sendall((f"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                       f"Authorization: Bearer {first}\r\nAuthorization: Bearer {second}\r\n"
                       f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400"), answer[:100]
        assert b'"code":"duplicate_header"' in answer and b'"field":"authorization"' in answer
        assert KEY_ENV.encode() not in answer


def test_auth_disabled_only_explicitly_and_hashing():
    assert ApiKeyAuth(enabled=False).check(None) == "ok"
    assert ApiKeyAuth().check(None) == "missing"  # no key configured and not switched off: nobody gets in
    assert ApiKeyAuth().check(b"Bearer anything") == "unknown"
    auth = ApiKeyAuth([hash_key("k1")], [hash_key("k2")])
    assert auth.check(None) == "missing" and auth.check(b"Bearer ") == "missing"
    assert auth.check(b"Bearer k1") == "ok" and auth.check(b"Bearer k2") == "revoked"
    assert all(len(h) == 32 for h in auth._valid)  # only digests are held
    assert hash_key("sha256:" + "A" * 64) == "a" * 64


def test_env_keys(monkeypatch):
    monkeypatch.setenv("MLPLATFORM_API_KEYS", " k1, k2 ,")
    monkeypatch.setenv("MLPLATFORM_REVOKED_API_KEYS", "k2")
    s = ServingSettings.resolve("m")
    assert s.api_key_hashes == (hash_key("k1"), hash_key("k2")) and s.revoked_key_hashes == (hash_key("k2"),)
    assert "k1" not in repr(s)


def test_no_keys_refuses_to_start_unless_auth_is_switched_off(monkeypatch):
    for var in ("MLPLATFORM_API_KEYS", "MLPLATFORM_API_KEYS_FILE", "MLPLATFORM_SERVING_AUTH"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ServingConfigError, match="no API keys configured.*--allow-unauthenticated"):
        ServingSettings.resolve("m")
    monkeypatch.setenv("MLPLATFORM_API_KEYS", "")  # empty is not "off"
    with pytest.raises(ServingConfigError, match="no API keys configured"):
        ServingSettings.resolve("m")
    assert ServingSettings.resolve("m", allow_unauthenticated=True).allow_unauthenticated is True
    monkeypatch.setenv("MLPLATFORM_SERVING_AUTH", "off")
    assert ServingSettings.resolve("m").allow_unauthenticated is True
    monkeypatch.setenv("MLPLATFORM_SERVING_AUTH", "maybe")
    with pytest.raises(ServingConfigError, match="MLPLATFORM_SERVING_AUTH='maybe' is invalid: expected on or off"):
        ServingSettings.resolve("m")
    monkeypatch.setenv("MLPLATFORM_SERVING_AUTH", "off")
    monkeypatch.setenv("MLPLATFORM_API_KEYS", "k1")
    with pytest.raises(ServingConfigError, match="choose one"):
        ServingSettings.resolve("m")


def test_unreadable_key_files_refuse_to_start(tmp_path, store):
    keys = tmp_path / "keys.txt"
    keys.write_text("k1\n")
    missing = str(tmp_path / "revoked.txt")
    with pytest.raises(ServingConfigError, match=r"revoked API keys file .*revoked.txt cannot be read \(No such file"):
        create_app(MODEL, store, api_keys_file=str(keys), revoked_api_keys_file=missing)
    with pytest.raises(ServingConfigError, match="API keys file .*absent.txt cannot be read"):
        create_app(MODEL, store, api_keys_file=str(tmp_path / "absent.txt"))


@pytest.mark.parametrize("env, message", [
    ({}, "no API keys configured"),
    ({"MLPLATFORM_API_KEYS": "k1", "MLPLATFORM_REVOKED_API_KEYS_FILE": "/nonexistent/revoked"},
     "revoked API keys file /nonexistent/revoked cannot be read"),
], ids=["no-keys", "missing-revoked-file"])
def test_cli_refuses_to_start_with_a_clear_message(tmp_path, env, message):
    import os
    import subprocess
    import sys

    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLPLATFORM_API_KEYS", "MLPLATFORM_REVOKED",
                                                                         "MLPLATFORM_SERVING_AUTH"))}
    full_env.update(env, MLPLATFORM_HOME=str(tmp_path))
    res = subprocess.run([sys.executable, "-m", "mlplatform_assets.lib.serving", "--model", "m", "--port", "1"],
                         env=full_env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr


def test_running_without_auth_is_logged_loudly(store, restore_env, caplog):
    caplog.set_level(logging.INFO, logger="mlplatform")
    srv = ThreadedServer(create_app(MODEL, store, allow_unauthenticated=True, prediction_log=False)).start()
    try:
        assert metric_value(httpx.get(srv.url + "/metrics").text, "mlplatform_serving_auth_enabled") == 0
    finally:
        srv.stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "AUTHENTICATION IS OFF" in r.getMessage()]
    assert len(warnings) == 1
