"""Resources one step of work uses: wall time, CPU seconds and peak memory of this process.

CPU: ``getrusage`` of this process (every thread, so the OpenMP/BLAS threads an estimator fits with
are included) plus that of child processes reaped during the step. Worker processes that outlive the
step (joblib/loky keeps its pool alive for reuse) are not reaped, so their CPU is not counted; the
platform fits with threads (``MLPLATFORM_TRAIN_THREADS``), not process pools, so this is rarely a gap.

Peak memory: the highest resident set size (RSS) of the process while the step ran. When the step
raised the process's high-water mark (``ru_maxrss``) that mark is exact; otherwise the step peaked
below an earlier high-water mark and the peak comes from sampling RSS every
:data:`SAMPLE_INTERVAL_S` (a spike shorter than that can be missed). Without ``/proc`` (not Linux)
only the process high-water mark is known, and it is reported as the peak (an upper bound).
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from dataclasses import dataclass

SAMPLE_INTERVAL_S = 0.05


def current_rss_bytes() -> int | None:
    """This process's resident set size now; None where ``/proc`` is not available."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _max_rss_bytes() -> int:
    # ru_maxrss is in kilobytes on Linux and in bytes on macOS.
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass(frozen=True)
class StepUsage:
    wall_seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    baseline_rss_bytes: int  # RSS when the step began (0 when unknown)

    @property
    def peak_increase_bytes(self) -> int:
        """How far the step pushed RSS above where it started."""
        return max(0, self.peak_rss_bytes - self.baseline_rss_bytes)


class UsageMeter:
    """``with UsageMeter() as meter: ...`` then ``meter.usage`` (a :class:`StepUsage`)."""

    def __init__(self, sample_interval_s: float = SAMPLE_INTERVAL_S):
        self.sample_interval_s = sample_interval_s
        self.usage: StepUsage | None = None
        self._stop = threading.Event()
        self._sampled_peak = 0
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.sample_interval_s):
            rss = current_rss_bytes()
            if rss is not None and rss > self._sampled_peak:
                self._sampled_peak = rss

    def __enter__(self) -> "UsageMeter":
        self._baseline = current_rss_bytes()
        self._sampled_peak = self._baseline or 0
        self._hwm_before = _max_rss_bytes()
        self._cpu_before = _cpu_seconds()
        self._started = time.perf_counter()
        if self._baseline is not None:
            self._thread = threading.Thread(target=self._sample, name="mlplatform-usage-meter", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        wall = time.perf_counter() - self._started
        cpu = _cpu_seconds() - self._cpu_before
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        hwm_after = _max_rss_bytes()
        final = current_rss_bytes()
        if self._baseline is None:
            peak = hwm_after  # no sampling possible: the process high-water mark, an upper bound
        elif hwm_after > self._hwm_before:
            peak = hwm_after  # the step set a new high-water mark: exact
        else:
            peak = max(self._sampled_peak, final or 0)
        self.usage = StepUsage(wall_seconds=wall, cpu_seconds=cpu, peak_rss_bytes=peak,
                               baseline_rss_bytes=self._baseline or 0)


# The training cost of a version, as MLflow metrics on its run and trained_model metadata (same names).
TRAINING_METRICS = {
    "wall_seconds": "cost.train_wall_seconds",
    "cpu_seconds": "cost.train_cpu_seconds",
    "peak_memory_bytes": "cost.train_peak_memory_bytes",
    "peak_memory_increase_bytes": "cost.train_peak_memory_increase_bytes",
    "train_rows": "cost.train_rows",
    "holdout_rows": "cost.holdout_rows",
}


@dataclass(frozen=True)
class TrainingCost:
    """What one training step used (fit, drift references, MLflow logging and registration)."""

    wall_seconds: float
    cpu_seconds: float
    peak_memory_bytes: int
    peak_memory_increase_bytes: int
    train_rows: int
    holdout_rows: int

    @classmethod
    def of(cls, usage: StepUsage, train_rows: int, holdout_rows: int) -> "TrainingCost":
        return cls(usage.wall_seconds, usage.cpu_seconds, usage.peak_rss_bytes, usage.peak_increase_bytes,
                   train_rows, holdout_rows)

    def metrics(self) -> dict[str, float]:
        return {name: float(getattr(self, field)) for field, name in TRAINING_METRICS.items()}

    @classmethod
    def from_metrics(cls, metrics: dict[str, float]) -> "TrainingCost | None":
        """The cost recorded on a run; None for a run trained before costs were measured."""
        if not all(name in metrics for name in TRAINING_METRICS.values()):
            return None
        values = {field: metrics[name] for field, name in TRAINING_METRICS.items()}
        for field in ("peak_memory_bytes", "peak_memory_increase_bytes", "train_rows", "holdout_rows"):
            values[field] = int(values[field])
        return cls(**values)


def log_training_cost(client, run_id: str, cost: TrainingCost) -> None:  # noqa: ANN001 - MlflowClient
    """Record ``cost`` as metrics on the version's MLflow run (one request)."""
    from mlflow.entities import Metric

    now_ms = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now_ms, 0) for k, v in cost.metrics().items()])
