"""Error answers and configuration errors.

Every error answer is a JSON body ``{"error": {"code", "message", "field"}}``: 4xx for client
mistakes, 503 (with ``Retry-After``) when the server sheds load.
"""

from __future__ import annotations

import orjson


class ServingConfigError(ValueError):
    """A serving setting is missing, contradictory or invalid: the server refuses to start."""


class ClientError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None, headers=()):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = tuple(headers)

    def body(self) -> bytes:
        return error_body(self.code, self.message, self.field)


def error_body(code: str, message: str, field: str | None = None) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "field": field}})


def safe_name(name) -> str:
    """A field name fit to appear in an error message: bounded, printable, never a value."""
    text = str(name)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= 64 else text[:61] + "..."
