"""Dynamic batching: one dedicated predict thread serves every request of the process.

The event loop validates a request and submits it; the predict thread takes everything
already queued, waits up to ``window_s`` for more while other requests are still being
parsed by the loop (never when the loop is idle, so a lone request pays no window), groups
the items by the model version they were validated against, builds ONE DataFrame per group
(column lists concatenated, not row by row), calls the model once, and fans the results back
to the loop with a single ``call_soon_threadsafe``. The thread limits OpenMP/BLAS pools to one
thread for its whole life (threadpoolctl), so predict never oversubscribes the cores.

With a spooled prediction log (``writer.durable``) the answers of a batch are handed to the log
writer with its rows and sent once those rows are fsynced to the local spool.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import orjson

from mlplatform_assets.lib.serving.errors import error_body
from mlplatform_assets.lib.serving.predlog import LogChunk

log = logging.getLogger("mlplatform.serving.batcher")
_STOP = object()


class Item:
    __slots__ = ("handle", "cols", "n", "fut", "request_id", "ts_us")

    def __init__(self, handle, cols, n, fut, request_id, ts_us):
        self.handle, self.cols, self.n, self.fut, self.request_id, self.ts_us = handle, cols, n, fut, request_id, ts_us


def _resolve(results) -> None:
    for fut, status, body in results:
        if not fut.done():
            fut.set_result((status, body))


class Batcher:
    def __init__(self, metrics, writer=None, window_s: float = 0.001, max_batch_rows: int = 2048):
        self.metrics = metrics
        self.writer = writer
        self.window_s = window_s
        self.max_batch_rows = max_batch_rows
        self.parsing = 0  # requests the loop has accepted but not yet submitted (written by the loop only)
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop = None

    def start(self, loop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="mlplatform-predict", daemon=True)
        self._thread.start()

    def submit(self, item: Item) -> None:
        self._q.put(item)

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is not None:
            self._q.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    # -- predict thread -------------------------------------------------------------------
    def _run(self) -> None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)  # for this thread, for good
        q = self._q
        stop = False
        while not stop:
            item = q.get()
            if item is _STOP:
                break
            batch = [item]
            rows = item.n
            deadline = None
            while rows < self.max_batch_rows:
                try:
                    nxt = q.get_nowait()
                except queue.Empty:
                    if self.window_s <= 0 or self.parsing <= 0:
                        break
                    now = time.perf_counter()
                    if deadline is None:
                        deadline = now + self.window_s
                    if now >= deadline:
                        break
                    try:
                        nxt = q.get(timeout=deadline - now)
                    except queue.Empty:
                        break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
                rows += nxt.n
            try:
                self._process(batch)
            except Exception:  # noqa: BLE001 - the thread must survive anything
                log.exception("predict batch failed unexpectedly")
                body = error_body("internal_error", "prediction failed")
                self._loop.call_soon_threadsafe(_resolve, [(it.fut, 500, body) for it in batch])
        # drain: anything still queued gets an answer
        leftovers = []
        while True:
            try:
                it = q.get_nowait()
            except queue.Empty:
                break
            if it is not _STOP:
                leftovers.append(it)
        if leftovers:
            self._process(leftovers)

    def _process(self, batch) -> None:
        groups: dict[int, list] = {}
        for it in batch:
            groups.setdefault(id(it.handle), []).append(it)
        results = []
        chunks = []
        for items in groups.values():
            out, logged = self._predict_group(items)
            results.extend(out)
            chunks.extend(logged)
        writer = self.writer
        if writer is not None and writer.durable and chunks:
            loop = self._loop
            writer.submit(*chunks, on_logged=lambda: loop.call_soon_threadsafe(_resolve, results))
            return
        self._loop.call_soon_threadsafe(_resolve, results)
        if writer is not None and chunks:
            writer.submit(*chunks)

    def _predict_group(self, items):
        """([(future, status, body)], [LogChunk of the predicted rows] when there is a log)."""
        handle = items[0].handle
        if len(items) == 1:
            cols = items[0].cols
        else:
            cols = {}
            for name in handle.validator.names:
                acc = []
                for it in items:
                    acc.extend(it.cols[name])
                cols[name] = acc
        try:
            pred = handle.predict(handle.build_frame(cols))
        except Exception as exc:  # noqa: BLE001
            if len(items) > 1:  # isolate the request that the model refused
                out, chunks = [], []
                for it in items:
                    one, logged = self._predict_group([it])
                    out.extend(one)
                    chunks.extend(logged)
                return out, chunks
            log.warning("model %s v%s refused a validated request: %s", handle.name, handle.version,
                        type(exc).__name__)
            status = 422 if isinstance(exc, (ValueError, TypeError, KeyError, IndexError)) else 500
            code = "prediction_failed" if status == 422 else "internal_error"
            msg = (f"the model could not score this input ({type(exc).__name__}); check categorical values "
                   "and ranges against the training data") if status == 422 else "prediction failed"
            return [(items[0].fut, status, error_body(code, msg))], []
        n_total = sum(it.n for it in items)
        m = self.metrics
        m.batch_rows.observe(n_total)
        m.predictions.labels(handle.name, handle.version).inc(n_total)
        preds = pred.predictions
        proba = pred.proba
        try:
            if proba is not None:
                col = proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)
                h = m.prediction_proba.labels(handle.name)
                for v in col.tolist():
                    h.observe(v)
            elif handle.is_classifier is False and preds.dtype.kind in "fiu":
                h = m.prediction_value.labels(handle.name)
                for v in preds.tolist():
                    h.observe(v)
            if handle.is_classifier:
                counts = {}
                for c in preds.tolist():
                    counts[c] = counts.get(c, 0) + 1
                for c, k in counts.items():
                    m.predicted_class.labels(handle.name, str(c)).inc(k)
        except Exception:  # noqa: BLE001 - metrics must never fail a prediction
            log.exception("prediction metrics failed")
        out = []
        off = 0
        classes = handle.classes
        for it in items:
            sl = slice(off, off + it.n)
            body = {"predictions": preds[sl].tolist(), "model_name": handle.name,
                    "model_version": handle.version, "request_id": it.request_id}
            if proba is not None:
                p = proba[sl]
                body["classes"] = classes
                body["probabilities"] = p.tolist()
                if proba.shape[1] == 2:
                    body["positive_class"] = classes[1]
                    body["positive_probability"] = p[:, 1].tolist()
            out.append((it.fut, 200, orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)))
            off += it.n
        if self.writer is None:
            return out, []
        rid, rows, ts = [], [], []
        for it in items:
            rid.extend([it.request_id] * it.n)
            rows.extend(range(it.n))
            ts.extend([it.ts_us] * it.n)
        meta = {"request_id": rid, "row": rows, "timestamp_us": ts, "model_name": handle.name,
                "model_version": handle.version, "prediction": preds, "probabilities": proba}
        kinds = {c.name: c.kind for c in handle.columns}
        return out, [LogChunk(cols, kinds, n_total, meta)]
