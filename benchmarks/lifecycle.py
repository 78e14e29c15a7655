"""Lifecycle benchmark: empty state -> champion for the customer_churn example, at growing row counts.

Each measurement runs in a fresh subprocess with a fresh state directory, so wall time includes
creating the Dagster and MLflow SQLite stores, and peak memory is the child's max RSS.

Peer, measured in the same run on the same files: a hand-wired script (pandas + the same sklearn
pipeline + MLflow log/register/alias, no Dagster, no checks, no evaluation report). The ratio
ours/peer is the platform's overhead for everything it adds (validation, lineage, reports, audit).

    python benchmarks/lifecycle.py [--rows 100000 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAYS = 60
END = dt.date(2026, 11, 28)

PEER = r'''
import os, sys, glob, time, warnings
warnings.filterwarnings("ignore")
import pandas as pd, mlflow, mlflow.sklearn
from mlflow.models import infer_signature
from threadpoolctl import threadpool_limits
from mlplatform_assets.lib.spec import load_spec
from mlplatform_assets.lib.config import examples_models_dir
from mlplatform_assets.lib.model.features import build_pipeline
from mlplatform_assets.lib.model.registry import trusted_types_for
home = sys.argv[1]
spec = load_spec(examples_models_dir() / "customer_churn.yaml", home)
files = sorted(glob.glob(os.path.join(spec.source.uri, "*.parquet")))
df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
df = df.dropna(subset=[spec.target.column]).sort_values(spec.timestamp_column)
cutoff = df[spec.timestamp_column].max().normalize() - pd.Timedelta(days=spec.training.holdout_days - 1)
feats = [*spec.features.numeric, *spec.features.categorical]
train, hold = df[df[spec.timestamp_column] < cutoff], df[df[spec.timestamp_column] >= cutoff]
pipe = build_pipeline(spec, spec.features.numeric, spec.features.categorical)
with threadpool_limits(1):
    pipe.fit(train[feats], train[spec.target.column])
mlflow.set_tracking_uri(f"sqlite:///{home}/mlflow.db")
exp = mlflow.create_experiment("peer", artifact_location=f"file://{home}/artifacts")
from sklearn.metrics import roc_auc_score
with mlflow.start_run(experiment_id=exp):
    mlflow.log_metric("roc_auc", roc_auc_score(hold[spec.target.column], pipe.predict_proba(hold[feats])[:, 1]))
    info = mlflow.sklearn.log_model(pipe, name="model", signature=infer_signature(train[feats].head(1000)),
                                    serialization_format="skops", skops_trusted_types=trusted_types_for(pipe))
mv = mlflow.register_model(info.model_uri, "peer")
mlflow.MlflowClient().set_registered_model_alias("peer", "champion", mv.version)
print("PEER_OK", len(train), len(hold))
'''


def write_data(home: Path, rows: int) -> None:
    """Pre-generate the example days at the requested size (the lifecycle keeps existing files)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mlplatform_assets.lib.data import example_data

    days = [END - dt.timedelta(days=i) for i in range(DAYS - 1, -1, -1)]
    example_data.write_example_days("customer_churn", home / "example-data" / "customer_churn", days,
                                    rows=max(1, rows // DAYS))


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    del before
    return wall, peak_mb, proc.stdout


def run_one(rows: int) -> dict:
    out = {"rows_requested": rows}
    for who in ("ours", "peer"):
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            write_data(home, rows)
            env = {**os.environ, "MLPLATFORM_HOME": str(home), "MLPLATFORM_MODELS_DIR": "",
                   "DAGSTER_HOME": str(home / "dagster")}
            env.pop("MLFLOW_TRACKING_URI", None)
            env.pop("MLPLATFORM_MODELS_DIR")
            if who == "ours":
                # A fresh interpreter per measurement: ru_maxrss of RUSAGE_CHILDREN is a max over all
                # children so far, so each size is measured by a wrapper that reports its own child.
                cmd = [sys.executable, __file__, "--child", "ours", "--home", str(home)]
            else:
                cmd = [sys.executable, __file__, "--child", "peer", "--home", str(home)]
            wall, _, stdout = measure(cmd, env)
            child = json.loads(stdout.strip().splitlines()[-1])
            out[who] = {"wall_s": round(wall, 2), "peak_rss_mb": child["peak_rss_mb"]}
            if who == "ours":
                out["train_rows"] = child.get("train_rows")
    out["wall_ratio_ours_over_peer"] = round(out["ours"]["wall_s"] / out["peer"]["wall_s"], 2)
    out["memory_ratio_ours_over_peer"] = round(out["ours"]["peak_rss_mb"] / out["peer"]["peak_rss_mb"], 2)
    return out


def child(kind: str, home: str) -> None:
    if kind == "peer":
        proc = subprocess.run([sys.executable, "-c", PEER, home], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps({"peak_rss_mb": round(peak, 1)}))
        return
    proc = subprocess.run([sys.executable, "-m", "mlplatform_assets.cli", "lifecycle", "--model", "customer_churn",
                           "--as-of", END.isoformat(), "--json"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    text = proc.stdout
    start = text.index("[\n")
    summary = json.JSONDecoder().raw_decode(text[start:])[0][0]
    features = summary["assets"]["features"]
    print(json.dumps({"peak_rss_mb": round(peak, 1),
                      "train_rows": features["train_rows"] + features["holdout_rows"]}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--child")
    p.add_argument("--home")
    a = p.parse_args()
    if a.child:
        child(a.child, a.home)
        return
    print(f"lifecycle benchmark: customer_churn, {DAYS} daily partitions, cores={os.cpu_count()}")
    results = []
    for rows in a.rows:
        r = run_one(rows)
        results.append(r)
        print(f"rows={r['train_rows']:>9,}  ours {r['ours']['wall_s']:7.1f} s {r['ours']['peak_rss_mb']:7.0f} MB | "
              f"peer {r['peer']['wall_s']:7.1f} s {r['peer']['peak_rss_mb']:7.0f} MB | "
              f"wall ratio {r['wall_ratio_ours_over_peer']:.2f}x, memory ratio {r['memory_ratio_ours_over_peer']:.2f}x")
    if len(results) > 1:
        a0, a1 = results[0], results[-1]
        growth = a1["ours"]["wall_s"] / a0["ours"]["wall_s"]
        print(f"growth: {a1['train_rows'] / a0['train_rows']:.1f}x rows -> {growth:.2f}x wall time (ours)")
    target = results[0]["ours"]["wall_s"]
    print(f"target: empty state -> champion < 60 s at ~100k rows: {target:.1f} s "
          f"({'met' if target < 60 else 'NOT met'})")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
