"""The alert sink port: interface, registry and configuration from the environment.

A sink is a subclass of :class:`AlertSink` in its own module under ``alerting/sinks/``. Defining
the class registers it (``__init_subclass__``); :func:`sink_types` imports every module of that
package, so adding a sink is one module plus its test and nothing else changes. Each sink is
enabled by its own URL variable (``url_variable``), any combination at once.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping
from urllib.parse import urlsplit

from mlplatform_assets.lib.config import ConfigError, Variable, number, text
from mlplatform_assets.lib.monitoring.alerting.alert import Alert
from mlplatform_assets.lib.monitoring.alerting.http import (
    RetryPolicy,
    post_json,
    redact_url,
)

ENV_ALERT_TIMEOUT = "MLPLATFORM_ALERT_TIMEOUT_S"
ENV_ALERT_MAX_ATTEMPTS = "MLPLATFORM_ALERT_MAX_ATTEMPTS"
ENV_ALERT_BACKOFF = "MLPLATFORM_ALERT_BACKOFF_S"
ENV_ALERT_BUDGET = "MLPLATFORM_ALERT_RETRY_BUDGET_S"

_REGISTRY: dict[str, type[AlertSink]] = {}


class AlertConfigError(ConfigError):
    """A sink variable is malformed. The message names the variable and never contains a secret."""


class AlertSink(ABC):
    """Somewhere an alert is delivered to. Subclasses set ``name`` and ``url_variable`` and build the payload.

    ``name`` keys the outcome in the alert record's ``delivery`` field; ``url_variable`` is the
    environment variable whose value (the endpoint, a secret) enables the sink.
    """

    name: ClassVar[str]
    url_variable: ClassVar[str]
    # Any further settings of this sink, declared here so docs/configuration.md and the start-up check see them.
    extra_variables: ClassVar[tuple[Variable, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not hasattr(cls, "name") or not hasattr(cls, "url_variable"):  # an intermediate base, not a sink
            return
        for other in _REGISTRY.values():
            if other is not cls and (other.name == cls.name or other.url_variable == cls.url_variable):
                raise TypeError(f"alert sink {cls.__name__} reuses the name or variable of {other.__name__}")
        _REGISTRY[cls.name] = cls

    def __init__(self, url: str, policy: RetryPolicy) -> None:
        self.url = url
        self.policy = policy

    @classmethod
    def from_env(cls, url: str, env: Mapping[str, str], policy: RetryPolicy) -> AlertSink:
        """Build the sink; override to read (and validate) sink-specific variables from ``env``."""
        return cls(url, policy)

    def endpoint(self) -> str:
        """Where the payload is POSTed (the configured URL unless the sink appends an API path)."""
        return self.url

    @abstractmethod
    def payload(self, alert: Alert) -> Any:
        """The JSON-serializable body that tells the receiver about ``alert``."""

    def deliver(self, alert: Alert) -> dict[str, Any]:
        """POST the payload with retries; the outcome for the ``delivery`` field. Never raises for HTTP failures."""
        return post_json(self.endpoint(), self.payload(alert), self.policy, sink=self.name)

    def __repr__(self) -> str:  # the URL is a secret: host only
        return f"{type(self).__name__}({redact_url(self.url)})"


def sink_types() -> dict[str, type[AlertSink]]:
    """Every sink, by name: the modules of ``alerting/sinks/`` are imported on first use."""
    from mlplatform_assets.lib.monitoring.alerting import sinks

    for module in pkgutil.iter_modules(sinks.__path__):
        importlib.import_module(f"{sinks.__name__}.{module.name}")
    return dict(sorted(_REGISTRY.items()))


def check_url(variable: str, url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host; otherwise an error naming ``variable`` (host only)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise AlertConfigError(f"{variable} is not a valid URL (it could not be parsed)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise AlertConfigError(f"{variable} must be an absolute http:// or https:// URL with a host "
                               f"and no spaces, got {redact_url(url)}")
    return url


def number_variable(variable: str, default: float, *, minimum: float, integer: bool = False,
                    description: str = "") -> Variable:
    """A numeric alert setting (not a secret, so its value may be quoted in errors) >= ``minimum``."""
    kind = "an integer" if integer else "a number"
    return Variable(variable, number(minimum=minimum, integer=integer), default, f"{kind} >= {minimum:g}",
                    description, "alerts")


def _read(variable: Variable, env: Mapping[str, str] | None):
    try:
        return variable.read(env)
    except ConfigError as exc:
        raise AlertConfigError(str(exc)) from None


_DEFAULT_POLICY = RetryPolicy()
RETRY_VARIABLES = {
    "timeout_s": number_variable(ENV_ALERT_TIMEOUT, _DEFAULT_POLICY.timeout_s, minimum=0.01,
                                 description="Seconds one delivery attempt may take."),
    "max_attempts": number_variable(ENV_ALERT_MAX_ATTEMPTS, _DEFAULT_POLICY.max_attempts, minimum=1, integer=True,
                                    description="Delivery attempts per sink (retries on 5xx, 429, network errors)."),
    "backoff_s": number_variable(ENV_ALERT_BACKOFF, _DEFAULT_POLICY.backoff_s, minimum=0.0,
                                 description="First backoff between attempts (doubles each retry)."),
    "budget_s": number_variable(ENV_ALERT_BUDGET, _DEFAULT_POLICY.budget_s, minimum=0.01,
                                description="Total seconds one alert's delivery may take per sink."),
}


def url_variable_of(sink_type: type[AlertSink]) -> Variable:
    return Variable(sink_type.url_variable, text, None, "an http(s) URL",
                    f"Enables the {sink_type.name} alert sink.", "alerts",
                    secret=True)


def alert_variables() -> tuple[Variable, ...]:
    """Every alert variable: delivery policy, each sink's URL and its extra settings."""
    found = list(RETRY_VARIABLES.values())
    for sink_type in sink_types().values():
        found += [url_variable_of(sink_type), *sink_type.extra_variables]
    return tuple(found)


def retry_policy_from_env(env: Mapping[str, str] | None) -> RetryPolicy:
    return RetryPolicy(**{field: _read(var, env) for field, var in RETRY_VARIABLES.items()})


def sink_setting(sink_type: type[AlertSink], name: str, env: Mapping[str, str] | None):
    """The value of one of ``sink_type.extra_variables``."""
    return _read(next(v for v in sink_type.extra_variables if v.name == name), env)


def load_alert_sinks(environ: Mapping[str, str] | None = None) -> list[AlertSink]:
    """The sinks enabled in ``environ`` (default ``os.environ``), validated. Raises :class:`AlertConfigError`."""
    policy = retry_policy_from_env(environ)
    sinks: list[AlertSink] = []
    for sink_type in sink_types().values():
        url = _read(url_variable_of(sink_type), environ)
        if url:
            sinks.append(sink_type.from_env(check_url(sink_type.url_variable, url), environ, policy))
    return sinks
