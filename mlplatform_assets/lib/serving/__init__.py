"""Deployed-endpoint HTTP service for ``models:/NAME@champion`` (see docs/serving.md).

Public API (imported lazily; importing this package has no side effects and does not import
MLflow, uvicorn or dagster):

* :func:`serve` - run the server (blocking).
* :func:`create_app` - the ASGI app factory; :class:`ThreadedServer` runs it in a thread.
* :func:`add_serve_arguments` / :func:`run_from_args` - CLI glue for ``mlplatform serve``.
* :func:`read_prediction_log` - the logged predictions as a pandas DataFrame.
* :class:`ServingConfigError` - raised before serving for an invalid, missing or contradictory setting.
"""

from __future__ import annotations

_EXPORTS = {
    "serve": "server", "ThreadedServer": "server", "add_serve_arguments": "server", "run_from_args": "server",
    "free_port": "server", "create_app": "app", "ServingApp": "app", "ServingSettings": "settings",
    "read_prediction_log": "predlog", "PredictionLogWriter": "predlog", "ServingConfigError": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
