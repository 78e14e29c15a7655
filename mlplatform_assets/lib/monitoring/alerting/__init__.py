"""Alert delivery: the :class:`~.sink.AlertSink` port and its implementations (one module each in ``sinks/``).

Plain Python (no Dagster import). Callers use the façade :mod:`mlplatform_assets.lib.monitoring.alerts`
(``send_alert``, ``read_alerts``); this package holds the pieces behind it:

* :mod:`.alert` - the :class:`~.alert.Alert` record and its severity per kind;
* :mod:`.http` - one JSON POST with bounded retries (exponential backoff, per-attempt timeout,
  total time budget) that never raises and never logs a secret URL;
* :mod:`.sink` - the sink interface, the registry (every module in ``sinks/``) and the validated
  configuration from environment variables (:func:`~.sink.load_alert_sinks`);
* ``sinks/webhook.py``, ``sinks/slack.py``, ``sinks/alertmanager.py`` - the sinks.
"""
