"""Talking to deployed endpoints: is a service up, and which version of the model does it serve?"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit, urlunsplit


@dataclass
class EndpointStatus:
    url: str
    healthy: bool
    ready: bool
    model_version: str | None
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def check_endpoint_url(url: str) -> str:
    """``url`` if it is a plain http(s) base URL; otherwise ValueError saying what is wrong (never echoing
    the URL, which could hold credentials). The health routes are appended to its path, so it has no
    query or fragment."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise ValueError("must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL" + (f", not {parts.scheme}://" if parts.scheme else ""))
    if not parts.hostname:
        raise ValueError("has no host")
    if "@" in parts.netloc:
        raise ValueError("must not contain user:password@ (credentials belong in the environment, not the spec)")
    if "?" in url or "#" in url:
        raise ValueError("must not have a query string or fragment (the health routes are appended to the path)")
    return url


def endpoint_route(base_url: str, route: str) -> str:
    """``route`` under the base URL's path: ``http://h/prefix/`` + ``healthz`` -> ``http://h/prefix/healthz``."""
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, f"{parts.path.rstrip('/')}/{route}", "", ""))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer (not healthy), never an invitation to fetch another URL or scheme."""

    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        return None


def _get_json(url: str, timeout: float) -> tuple[int, dict]:
    opener = urllib.request.build_opener(_NoRedirects())
    try:
        with opener.open(url, timeout=timeout) as resp:  # checked: http(s) only (check_endpoint_url)
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}


def _refused(url: str) -> EndpointStatus | None:
    """A status for a URL the prober will not request (defence in depth: specs are validated already)."""
    try:
        check_endpoint_url(url)
    except ValueError as exc:
        return EndpointStatus(url, False, False, None, f"refused: {exc}")
    return None


def probe(url: str, timeout: float = 2.0) -> EndpointStatus:
    refused = _refused(url)
    if refused is not None:
        return refused
    base = url.rstrip("/")
    try:
        health, _ = _get_json(endpoint_route(url, "healthz"), timeout)
        ready_code, ready = _get_json(endpoint_route(url, "readyz"), timeout)
    except (OSError, ValueError) as exc:
        return EndpointStatus(base, False, False, None, f"unreachable: {exc.__class__.__name__}: {exc}")
    version = ready.get("model_version")
    return EndpointStatus(base, health == 200, ready_code == 200, None if version is None else str(version))


def wait_for_version(url: str, version: str, timeout_s: float, interval_s: float = 0.25) -> EndpointStatus:
    """Poll until the endpoint serves ``version`` (it hot-swaps within one poll interval) or time runs out."""
    refused = _refused(url)
    if refused is not None:
        return refused
    deadline = time.monotonic() + timeout_s
    status = probe(url)
    while status.model_version != str(version) and time.monotonic() < deadline:
        time.sleep(interval_s)
        status = probe(url)
    return status
