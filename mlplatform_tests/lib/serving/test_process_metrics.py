"""/metrics carries the standard process, platform and GC collectors next to the request metrics."""

from __future__ import annotations

import os

from prometheus_client import ProcessCollector

from mlplatform_assets.lib.serving.metrics import WorkerProcessCollector
from mlplatform_tests.lib.serving.conftest import metric_value


def test_metrics_expose_process_platform_and_gc_collectors(client):
    text = client.get("/metrics").text
    # This process (the test runs the server in a thread): its real RSS and open descriptors.
    assert metric_value(text, "process_resident_memory_bytes") > 10 * 1024 * 1024
    assert metric_value(text, "process_open_fds") >= 3
    assert metric_value(text, "process_cpu_seconds_total") > 0
    assert metric_value(text, "process_max_fds") > 0
    assert metric_value(text, "python_info") == 1
    assert metric_value(text, "python_gc_collections_total", generation="0") >= 0
    # The request metrics are still there, once (no duplicate registration).
    assert text.count("# TYPE mlplatform_serving_requests_total counter") == 1


def test_worker_collector_labels_each_live_worker_and_skips_dead_ones(tmp_path):
    """Multi-worker mode: the process metrics of every live worker (found from prometheus_client's live-gauge
    files), each with its pid; a worker killed without cleanup (its files left behind) is skipped."""
    me = os.getpid()
    dead = 2 ** 22 + 1  # above the default pid_max: never a live process
    for name in (f"gauge_livesum_{me}.db", f"gauge_liveall_{me}.db", f"gauge_livesum_{dead}.db",
                 f"counter_{me}.db"):
        (tmp_path / name).write_bytes(b"")
    families = {f.name: f for f in WorkerProcessCollector(str(tmp_path)).collect()}
    rss = families["process_resident_memory_bytes"]
    assert [s.labels for s in rss.samples] == [{"pid": str(me)}]
    expected = {f.name: f for f in ProcessCollector(registry=None).collect()}["process_resident_memory_bytes"]
    assert abs(rss.samples[0].value - expected.samples[0].value) < 50 * 1024 * 1024
    assert families["process_cpu_seconds"].samples[0].value > 0
    (tmp_path / "empty").mkdir()
    assert WorkerProcessCollector(str(tmp_path / "empty")).collect() == []
