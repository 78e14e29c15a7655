"""Talking to deployed endpoints: is a service up, and which version of the model does it serve?"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass


@dataclass
class EndpointStatus:
    url: str
    healthy: bool
    ready: bool
    model_version: str | None
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _get_json(url: str, timeout: float) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - operator-configured URL
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}


def probe(url: str, timeout: float = 2.0) -> EndpointStatus:
    base = url.rstrip("/")
    try:
        health, _ = _get_json(f"{base}/healthz", timeout)
        ready_code, ready = _get_json(f"{base}/readyz", timeout)
    except (OSError, ValueError) as exc:
        return EndpointStatus(base, False, False, None, f"unreachable: {exc.__class__.__name__}: {exc}")
    version = ready.get("model_version")
    return EndpointStatus(base, health == 200, ready_code == 200, None if version is None else str(version))


def wait_for_version(url: str, version: str, timeout_s: float, interval_s: float = 0.25) -> EndpointStatus:
    """Poll until the endpoint serves ``version`` (it hot-swaps within one poll interval) or time runs out."""
    deadline = time.monotonic() + timeout_s
    status = probe(url)
    while status.model_version != str(version) and time.monotonic() < deadline:
        time.sleep(interval_s)
        status = probe(url)
    return status
