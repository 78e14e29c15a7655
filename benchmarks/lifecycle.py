"""Lifecycle benchmark: empty state -> champion for the customer_churn example, at growing row counts.

Each measurement runs in a fresh subprocess with a fresh state directory, so wall time includes
creating the Dagster and MLflow SQLite stores, and peak memory is the child's max RSS.

Peer, measured in the same run on the same files: a hand-wired script (pandas + the same sklearn
pipeline + MLflow log/register/alias, no Dagster, no checks, no evaluation report). The ratio
ours/peer is the platform's overhead for everything it adds (validation, lineage, reports, audit).

    python benchmarks/lifecycle.py [--rows 100000 1000000]

Rigor mode: the cost of every default-on evaluation check next to the training step, per example model, in
one process on the same in-memory dataset (each timing is the best of ``--repeats``: the machine is shared, and
the minimum is the run least disturbed by other work). Budget: all default-on rigor < 30% of the training step.

    python benchmarks/lifecycle.py --rigor [--rows 100000] [--models customer_churn delivery_time]
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


RIGOR_BUDGET = 0.30


def _best_of(repeats: int, fn):
    """(seconds, result) of the fastest of ``repeats`` calls."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def example_dataset(model: str, rows: int):
    """The example model's spec and training dataset over DAYS generated days of ~rows in total, validated and
    split exactly as the lifecycle does (in memory: the data store is not what is measured here)."""
    from mlplatform_assets.lib.config import examples_models_dir
    from mlplatform_assets.lib.data import example_data, validation
    from mlplatform_assets.lib.model.features import build_dataset
    from mlplatform_assets.lib.spec import load_spec

    with tempfile.TemporaryDirectory() as tmp:
        spec = load_spec(examples_models_dir() / f"{model}.yaml", tmp)
    generate = getattr(example_data, spec.source.example_generator)
    days = [END - dt.timedelta(days=i) for i in range(DAYS - 1, -1, -1)]
    frames = {d: generate(d, rows=max(1, rows // DAYS)) for d in days}
    numeric, categorical = validation.infer_feature_columns(spec, next(iter(frames.values())))
    frames = {d: validation.clean_day(spec, f, numeric, categorical) for d, f in frames.items()}
    return spec, build_dataset(spec, frames, numeric, categorical)


def rigor_costs(model: str, rows: int, repeats: int) -> dict:
    """Seconds of the training step (``fit``) and of each default-on rigor piece with a champion present."""
    from threadpoolctl import threadpool_limits

    from mlplatform_assets.lib.model import importance, rigor, staleness, uncertainty
    from mlplatform_assets.lib.model.features import build_pipeline, fit_pipeline
    from mlplatform_assets.lib.model.training import fit, predict_frame

    spec, dataset = example_dataset(model, rows)
    train_s, result = _best_of(repeats, lambda: fit(spec, dataset))
    # A champion to compare against: the same pipeline fitted on the older half of the training rows (not timed).
    older = dataset.train.iloc[: len(dataset.train) // 2]
    champion = build_pipeline(spec, dataset.numeric, dataset.categorical)
    with threadpool_limits(1):
        fit_pipeline(spec, champion, older[dataset.feature_columns], older[dataset.target])
        champion_preds = predict_frame(champion, dataset.X("holdout"), spec.task)
    challenger_preds = result.holdout_predictions
    # Each piece as the evaluation step runs it (one thread), on the same holdout.
    pieces = {
        "interval+baselines+slices (rigor.assess)":
            lambda: rigor.assess(spec, dataset, challenger_preds, champion_preds),
        "permutation importance (importance.importance_report)":
            lambda: importance.importance_report(spec, dataset.X("holdout"), dataset.y("holdout"), result.pipeline,
                                                 champion, "champion") if spec.evaluation.importance.enabled else None,
        "staleness backtest (staleness.backtest)":
            lambda: staleness.backtest(spec, dataset, challenger_preds),
    }
    # Below a piece, informational rows not added to the total: where rigor.assess spends its time, and the opt-in
    # staleness refits (why they are not the default).
    staleness_cfg = spec.monitoring.staleness.model_copy(update={"cuts": 3})
    with_refits = spec.model_copy(update={"monitoring": spec.monitoring.model_copy(update={"staleness": staleness_cfg})})
    assess, _, backtest = pieces
    parts = {
        assess: {
            "of which: baseline fits (rigor.fit_baselines)": lambda: rigor.fit_baselines(spec, dataset),
            "of which: one paired interval (uncertainty.paired_interval)": lambda: uncertainty.paired_interval(
                spec.task, spec.metrics.primary, spec.metrics.direction or "maximize", dataset.y("holdout"),
                challenger_preds, champion_preds, spec.target.positive_class, spec.promotion.confidence,
                spec.training.seed)},
        backtest: {
            "opt-in: with cuts: 3 (two refits)": lambda: staleness.backtest(with_refits, dataset, challenger_preds)},
    }
    seconds = {}
    part_seconds: dict[str, dict[str, float]] = {}
    for name, fn in pieces.items():
        with threadpool_limits(1):
            seconds[name] = round(_best_of(repeats, fn)[0], 3)
            part_seconds[name] = {part: round(_best_of(repeats, part_fn)[0], 3)
                                  for part, part_fn in parts.get(name, {}).items()}
    return {"model": model, "train_rows": len(dataset.train), "holdout_rows": len(dataset.holdout),
            "training_step_s": round(train_s, 3), "pieces_s": seconds, "parts_s": part_seconds,
            "rigor_share": round(sum(seconds.values()) / train_s, 4)}


def run_rigor(models: list[str], rows: int, repeats: int) -> None:
    print(f"rigor cost benchmark: {rows:,} rows over {DAYS} days, best of {repeats}, cores={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}, budget {RIGOR_BUDGET:.0%} of the training step")
    results = []
    for model in models:
        r = rigor_costs(model, rows, repeats)
        results.append(r)
        print(f"\n{model}: {r['train_rows']:,} train / {r['holdout_rows']:,} holdout rows; "
              f"training step (fit) {r['training_step_s']:.2f} s")
        for name, sec in r["pieces_s"].items():
            print(f"  {name:<60} {sec:7.2f} s  {sec / r['training_step_s']:6.1%}")
            for part, part_s in r["parts_s"][name].items():
                print(f"    {part:<58} {part_s:7.2f} s  {part_s / r['training_step_s']:6.1%}")
        verdict = "within" if r["rigor_share"] < RIGOR_BUDGET else "OVER"
        print(f"  {'total default-on rigor':<60} {sum(r['pieces_s'].values()):7.2f} s  {r['rigor_share']:6.1%}  "
              f"({verdict} the {RIGOR_BUDGET:.0%} budget)")
    print(json.dumps(results))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, nargs="+", default=None)
    p.add_argument("--child")
    p.add_argument("--home")
    p.add_argument("--rigor", action="store_true", help="time the default-on rigor pieces against the training step")
    p.add_argument("--models", nargs="+", default=["customer_churn", "delivery_time"])
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    if a.child:
        child(a.child, a.home)
        return
    if a.rigor:
        run_rigor(a.models, (a.rows or [100_000])[0], a.repeats)
        return
    a.rows = a.rows or [100_000, 1_000_000]
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
