"""One JSON POST to an alert endpoint, retried with exponential backoff within a time budget.

The endpoint URL is a secret (chat webhooks carry their token in the path or query): only
:func:`redact_url`'s ``scheme://host:port/...`` is ever logged or returned, and exception texts
(which can quote the URL) are reduced to their class name.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

# Worth another attempt: the receiver is overloaded, restarting or rate limiting. Any other 4xx means the
# request itself is wrong (bad payload, bad token) and would fail the same way again.
_RETRYABLE_HTTP = frozenset({408, 425, 429})


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` only: user info, path, query and fragment may all carry secrets."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme or '?'}://{host}{port}/..."
    except ValueError:
        return "<unparseable url>"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one sink tries to deliver one alert.

    Attempt ``n`` (1-based) is followed, if it failed with a retryable error, by a pause of
    ``backoff_s * 2**(n-1)``; no attempt starts once ``max_attempts`` were made or the next pause would
    end past ``budget_s`` (counted from the first attempt), and no attempt waits longer than
    ``timeout_s`` or the budget left. So one delivery takes at most about ``budget_s + timeout_s``.
    """

    timeout_s: float = 3.0
    max_attempts: int = 3
    backoff_s: float = 0.5
    budget_s: float = 10.0


def _attempt(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int | None, str | None, bool]:
    """One POST: ``(http_status, error, retryable)``; ``error`` is None on a 2xx."""
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "mlplatform-alerts",
                                          **headers})
    try:
        # No proxies: an alert endpoint is reached directly; an env proxy must not see the secret URL.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, None, False
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}", exc.code >= 500 or exc.code in _RETRYABLE_HTTP
    except Exception as exc:  # noqa: BLE001 - URLError, timeouts, resets: all are "not delivered", all retryable
        inner = getattr(exc, "reason", None)
        return None, type(inner if isinstance(inner, BaseException) else exc).__name__, True


def post_json(url: str, payload: Any, policy: RetryPolicy, *, sink: str = "alert",
              headers: dict[str, str] | None = None) -> dict[str, Any]:
    """POST ``payload`` as JSON under ``policy``. Never raises.

    Returns the outcome recorded in the alert log: ``status`` (``"delivered"``/``"failed"``),
    ``attempts``, ``elapsed_s``, ``http_status`` of the last response (when there was one) and, on
    failure, ``error`` (``"HTTP 503"``, ``"ConnectionRefusedError"``, ``"TimeoutError"``, ...).
    """
    body = json.dumps(payload, sort_keys=True, default=str).encode()
    started = time.monotonic()
    pause = policy.backoff_s
    attempts = 0
    while True:
        attempts += 1
        remaining = policy.budget_s - (time.monotonic() - started)
        status, error, retryable = _attempt(url, body, headers or {}, max(min(policy.timeout_s, remaining), 0.001))
        remaining = policy.budget_s - (time.monotonic() - started)
        if error is None or not retryable or attempts >= policy.max_attempts or pause >= remaining:
            break
        time.sleep(pause)
        pause *= 2
    outcome: dict[str, Any] = {"status": "delivered" if error is None else "failed", "attempts": attempts,
                               "elapsed_s": round(time.monotonic() - started, 3)}
    if status is not None:
        outcome["http_status"] = status
    if error is not None:
        outcome["error"] = error
        log.warning("%s sink %s: alert not delivered after %d attempt(s): %s",
                    sink, redact_url(url), attempts, error)
    return outcome
