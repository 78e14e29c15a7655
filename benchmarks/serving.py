"""Serving benchmark: our endpoint vs ``mlflow models serve`` on the same model and machine.

    python benchmarks/serving.py [--duration 10] [--concurrency 1 8 32] [--workers 1]

One run: trains a HistGradientBoostingClassifier (20 numeric features, 20k rows) as a platform
Pipeline, registers it (skops) in a throw-away SQLite MLflow store as ``models:/NAME@champion``,
starts OUR service and ``mlflow models serve --env-manager local`` as subprocesses on free
127.0.0.1 ports, and drives one-row requests at each concurrency for a fixed duration with an
asyncio raw-socket keep-alive load generator (one connection per concurrent client). The load
generator and the servers share the machine's cores: on a 2-core box the generator takes a
large share of one core, so absolute numbers are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mlplatform_assets.lib.serving import free_port  # noqa: E402
from mlplatform_assets.lib.serving import testing as T  # noqa: E402

NAME = "bench-model"
N_FEATURES = 20


def _log_to_file(config, label: str) -> dict:
    """Server output goes to a file: an unread pipe fills up (MLflow's server logs every request)
    and then blocks the server, which once made MLflow look like it stalled under load."""
    path = Path(config.state_dir) / f"{label}-server.log"
    return {"stdout": open(path, "wb"), "stderr": subprocess.STDOUT}


def _wait_ready(url_path: str, port: int, proc, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = proc.log_path
            raise RuntimeError(f"server exited early:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{url_path}", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready in time")


def start_ours(config, workers: int):
    port = free_port()
    env = dict(os.environ, MLPLATFORM_HOME=config.state_dir, MLFLOW_TRACKING_URI=config.mlflow_tracking_uri,
               MLPLATFORM_PREDICTION_LOG_URI=config.prediction_log_uri)
    proc = subprocess.Popen([sys.executable, "-m", "mlplatform_assets.lib.serving", "--model", NAME, "--port", str(port),
                             "--workers", str(workers), "--log-level", "warning", "--allow-unauthenticated"], env=env,
                            cwd=config.state_dir,
                            **_log_to_file(config, "ours"))
    proc.log_path = Path(config.state_dir) / "ours-server.log"
    _wait_ready("/readyz", port, proc)
    return proc, port


def start_mlflow(config, workers: int):
    port = free_port()
    # MLflow 3.17 refuses skops models unless pickle deserialization is allowed.
    env = dict(os.environ, MLFLOW_TRACKING_URI=config.mlflow_tracking_uri, MLFLOW_ALLOW_PICKLE_DESERIALIZATION="true")
    proc = subprocess.Popen(["mlflow", "models", "serve", "-m", f"models:/{NAME}@champion", "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)], env=env, cwd=config.state_dir,
                            **_log_to_file(config, "mlflow"))
    proc.log_path = Path(config.state_dir) / "mlflow-server.log"
    _wait_ready("/ping", port, proc)
    return proc, port


def request_bytes(port: int, path: str, row: list[float]) -> bytes:
    body = json.dumps({"dataframe_split": {"columns": [f"f{i}" for i in range(N_FEATURES)], "data": [row]}}).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _one(reader, writer, req):
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return int(head[9:12]), b"connection: close" in head.lower()


async def _client(port, payloads, deadline, lat, errors, timeout=10.0):
    """One keep-alive connection sending requests back to back; a request slower than
    ``timeout`` counts as an error and the connection is replaced."""
    reader = writer = None
    i = 0
    while time.perf_counter() < deadline:
        if writer is None:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                errors[0] += 1
                await asyncio.sleep(0.05)
                continue
        req = payloads[i % len(payloads)]
        i += 1
        t0 = time.perf_counter()
        try:
            status, close = await asyncio.wait_for(_one(reader, writer, req), timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            errors[0] += 1
            writer.close()
            writer = None
            continue
        lat.append(time.perf_counter() - t0)
        if status != 200:
            errors[0] += 1
        if close:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def _drive(port, payloads, concurrency, duration):
    lat: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + duration
    t0 = time.perf_counter()
    await asyncio.gather(*(_client(port, payloads, deadline, lat, errors) for _ in range(concurrency)))
    return lat, errors[0], time.perf_counter() - t0


def drive(port, path, concurrency, duration, rows):
    payloads = [request_bytes(port, path, r) for r in rows]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(_drive(port, payloads, concurrency, min(1.0, duration / 5)))  # warm-up
    lat, errors, elapsed = runner(_drive(port, payloads, concurrency, duration))
    lat.sort()
    pct = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000) if lat else (lambda q: float("nan"))
    return {"requests": len(lat), "rps": len(lat) / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "errors": errors}


def in_process_floor(config, rows) -> dict:
    from threadpoolctl import threadpool_limits

    from mlplatform_assets.lib.serving.model import load_version

    handle = load_version(config, NAME, "1", 10)
    cols = [f"f{i}" for i in range(N_FEATURES)]
    out = {}
    with threadpool_limits(1):
        import pandas as pd

        frames = [pd.DataFrame([r], columns=cols) for r in rows[:50]]
        for f in frames:
            handle.model.predict_proba(f)
        ts = []
        for k in range(400):
            t = time.perf_counter()
            handle.model.predict_proba(frames[k % len(frames)])
            ts.append(time.perf_counter() - t)
        out["pipeline_predict_proba_1row_ms"] = statistics.median(ts) * 1000
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per server per concurrency level")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--workers", type=int, default=1, help="worker processes for BOTH servers (default 1)")
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="mlplatform-bench-serving-")
    config = T.make_config(tmp)
    print(f"cores: {os.cpu_count()} (load generator and servers share them)", flush=True)
    t = time.perf_counter()
    T.register_model(config, NAME, "hgb", n_rows=args.rows, n_features=N_FEATURES)
    print(f"trained + registered HistGradientBoostingClassifier ({N_FEATURES} features, {args.rows} rows) "
          f"in {time.perf_counter() - t:.1f}s", flush=True)
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(200, N_FEATURES)).round(6).tolist()
    floor = in_process_floor(config, rows)
    print(f"in-process floor (1 thread, one-row Pipeline.predict_proba): "
          f"{floor['pipeline_predict_proba_1row_ms']:.2f} ms", flush=True)

    results = {"floor": floor, "servers": {}, "duration_s": args.duration, "workers": args.workers}
    servers = [("ours", start_ours, "/invocations"), ("mlflow", start_mlflow, "/invocations")]
    for label, starter, path in servers:
        proc, port = starter(config, args.workers)
        try:
            for c in args.concurrency:
                r = drive(port, path, c, args.duration, rows)
                results["servers"].setdefault(label, {})[c] = r
                print(f"{label:>6} c={c:<3} {r['rps']:9.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                      f"p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}  ({r['requests']} requests)", flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    ours, theirs = results["servers"]["ours"], results["servers"]["mlflow"]
    top = max(args.concurrency)
    ratio = ours[top]["rps"] / max(theirs[top]["rps"], 1e-9)
    results["ratio_at_max_concurrency"] = ratio
    print(f"throughput ratio at c={top}: {ratio:.1f}x (target >= 10x); our p99 {ours[top]['p99_ms']:.2f} ms vs "
          f"mlflow p50 {theirs[top]['p50_ms']:.2f} ms")
    if 1 in ours:
        print(f"c=1: our p50 {ours[1]['p50_ms']:.2f} ms = "
              f"{ours[1]['p50_ms'] / floor['pipeline_predict_proba_1row_ms']:.1f}x the in-process floor (target <= 3x)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
