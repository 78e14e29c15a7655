"""Benchmark: mlplatform drift engine vs Evidently 0.7.23 DataDriftPreset.

    python benchmarks/drift.py                 # 1M rows (default)
    python benchmarks/drift.py --rows 200000   # quicker

Cases
  numeric : N rows x 20 numeric columns (reference and current, drift in some columns)
  mixed   : N rows x (10 numeric + 5 categorical string columns)

Every measured step runs in its own fresh subprocess:
  ours/profile : build_reference_profile(reference) (training time) + save to .npz
  ours/detect  : ReferenceProfile.load + detect_drift(profile, current) -- only the detect is timed
  evidently    : Report([DataDriftPreset()]).run(current, reference) + snapshot.dict()

Memory = peak RSS delta over the baseline: after the inputs are in memory (Evidently:
reference + current DataFrames; ours/detect: current DataFrame + loaded profile; ours/profile:
reference DataFrame) the process resets its peak-RSS counter (Linux: write "5" to
/proc/self/clear_refs), records VmRSS as the baseline, runs the step and reads VmHWM.  Both
sides are measured the same way.  (Fallback when clear_refs is not writable: a 5 ms RSS sampler.)

The table is followed by ONE JSON line (the last line) for the numeric case:
{"speedup", "memory_ratio" (ours/Evidently peak delta), "verdicts_agree", "verdicts_total"}.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


# ---------------------------------------------------------------------------------------------
# data (deterministic; reference and current come from independent streams so a worker can
# generate only the side it needs)
# ---------------------------------------------------------------------------------------------
def _numeric_frame(rows: int, n_cols: int, seed: int, current: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed + (1 if current else 0))
    cols = {}
    for i in range(n_cols):
        kind = i % 5
        # drift: every 4th column gets a 0.25 sd shift (W/std ~ 0.25 > 0.1); every 4th+1 a tiny
        # 0.03 sd shift that must NOT be flagged
        shift = (0.25 if i % 4 == 0 else 0.03 if i % 4 == 1 else 0.0) if current else 0.0
        if kind == 0:
            v = rng.normal(shift, 1.0, rows)
        elif kind == 1:
            v = rng.lognormal(shift, 1.0, rows)
        elif kind == 2:
            v = rng.uniform(shift, 1.0 + shift, rows)
        elif kind == 3:
            v = np.round(rng.normal(50 + 10 * shift, 10, rows))  # integer-valued, many uniques
        else:
            v = rng.normal(shift, 1.0, rows)
            v[rng.random(rows) < 0.05] = np.nan  # missing values
        cols[f"num_{i:02d}"] = v
    return pd.DataFrame(cols)


def _categorical_frame(rows: int, n_cols: int, seed: int, current: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 100 + (1 if current else 0))
    cols = {}
    for j in range(n_cols):
        n_cat = (3, 8, 20, 50, 2)[j % 5]
        cats = np.array([f"c{j}_{k}" for k in range(n_cat)], dtype=object)
        p = np.linspace(1.0, 2.0, n_cat)
        if current and j % 5 == 1:
            p = p[::-1]  # shifted frequencies
        if current and j % 5 == 2:
            cats = np.append(cats, f"c{j}_unseen")  # a category never seen in reference
            p = np.append(p, p.mean())
        cols[f"cat_{j}"] = rng.choice(cats, rows, p=p / p.sum())
    return pd.DataFrame(cols)


def make_frame(case: str, rows: int, current: bool, seed: int = 7) -> tuple[pd.DataFrame, list[str], list[str]]:
    if case == "numeric":
        df = _numeric_frame(rows, 20, seed, current)
        return df, list(df.columns), []
    if case == "mixed":
        num = _numeric_frame(rows, 10, seed, current)
        cat = _categorical_frame(rows, 5, seed, current)
        df = pd.concat([num, cat], axis=1)
        return df, list(num.columns), list(cat.columns)
    raise ValueError(case)


# ---------------------------------------------------------------------------------------------
# peak memory
# ---------------------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


class PeakRSS:
    """Peak RSS delta (bytes) over the RSS at __enter__."""

    def __enter__(self):
        gc.collect()
        self.method = "VmHWM reset"
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            self.method = "RSS sampler (5 ms)"
        self.baseline = _status_kb("VmRSS")
        self._peak = self.baseline
        self._stop = threading.Event()
        if self.method != "VmHWM reset":
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, _status_kb("VmRSS"))
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        if self.method == "VmHWM reset":
            self._peak = _status_kb("VmHWM")
        else:
            self._thread.join()
            self._peak = max(self._peak, _status_kb("VmRSS"))
        self.delta_bytes = max(0, self._peak - self.baseline) * 1024
        return False


# ---------------------------------------------------------------------------------------------
# workers
# ---------------------------------------------------------------------------------------------
def worker(step: str, case: str, rows: int, profile_path: str) -> dict:
    from mlplatform_assets.lib.monitoring import drift
    from mlplatform_assets.lib.monitoring.drift import evidently_oracle

    if step == "ours_profile":
        ref, num, cat = make_frame(case, rows, current=False)
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            profile = drift.build_reference_profile(ref, num, cat)
            seconds = time.perf_counter() - t0
        profile.save(profile_path)
        return {"seconds": seconds, "peak_bytes": mem.delta_bytes, "mem_method": mem.method,
                "profile_bytes": os.path.getsize(profile_path)}

    if step == "ours_detect":
        cur, _, _ = make_frame(case, rows, current=True)
        profile = drift.ReferenceProfile.load(profile_path)
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            result = drift.detect_drift(profile, cur)
            seconds = time.perf_counter() - t0
        return {"seconds": seconds, "peak_bytes": mem.delta_bytes, "mem_method": mem.method,
                "verdicts": result.verdicts,
                "stattests": {k: v.stattest for k, v in result.columns.items()},
                "dataset_drift": result.dataset_drift}

    if step == "evidently":
        ref, num, cat = make_frame(case, rows, current=False)
        cur, _, _ = make_frame(case, rows, current=True)
        import evidently  # noqa: F401  (import cost is not part of the measurement)
        from evidently.presets import DataDriftPreset  # noqa: F401

        with PeakRSS() as mem:
            t0 = time.perf_counter()
            res = evidently_oracle.evidently_column_results(ref, cur, num, cat)
            seconds = time.perf_counter() - t0
        return {"seconds": seconds, "peak_bytes": mem.delta_bytes, "mem_method": mem.method,
                "verdicts": {k: v["drifted"] for k, v in res.items()},
                "methods": {k: v["method"] for k, v in res.items()}}
    raise ValueError(step)


def run_worker(step: str, case: str, rows: int, profile_path: str) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as out:
        out_path = out.name
    try:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", step, "--case", case,
               "--rows", str(rows), "--profile-path", profile_path, "--out", out_path]
        subprocess.run(cmd, check=True, cwd=REPO)
        with open(out_path) as fh:
            return json.load(fh)
    finally:
        os.unlink(out_path)


def bench_case(case: str, rows: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ppath = os.path.join(tmp, "profile.npz")
        prof = run_worker("ours_profile", case, rows, ppath)
        det = run_worker("ours_detect", case, rows, ppath)
        ev = run_worker("evidently", case, rows, ppath)
    agree = sum(det["verdicts"][c] == ev["verdicts"][c] for c in ev["verdicts"])
    return {
        "case": case, "rows": rows, "profile": prof, "detect": det, "evidently": ev,
        "verdicts_agree": agree, "verdicts_total": len(ev["verdicts"]),
        "n_drifted_ours": sum(det["verdicts"].values()), "n_drifted_evidently": sum(ev["verdicts"].values()),
        "speedup": ev["seconds"] / det["seconds"],
        "memory_ratio": det["peak_bytes"] / ev["peak_bytes"] if ev["peak_bytes"] else float("nan"),
    }


def _mb(b: float) -> str:
    return f"{b / 2**20:,.0f} MB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cases", default="numeric,mixed", help="comma separated: numeric,mixed")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--profile-path", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        res = worker(args.worker, args.case, args.rows, args.profile_path)
        with open(args.out, "w") as fh:
            json.dump(res, fh)
        return 0

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    results = []
    for case in cases:
        print(f"running case {case!r} with {args.rows:,} rows ...", flush=True)
        results.append(bench_case(case, args.rows))

    print()
    print(f"cpu cores: {os.cpu_count()}  python {sys.version.split()[0]}  memory: peak RSS delta over baseline "
          f"({results[0]['evidently']['mem_method']}), each step in a fresh subprocess")
    hdr = f"{'case':<34}{'step':<28}{'wall s':>10}{'peak mem':>12}"
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        label = f"{r['case']} ({r['rows']:,} rows, {r['verdicts_total']} cols)"
        print(f"{label:<34}{'ours: build profile (train)':<28}{r['profile']['seconds']:>10.2f}"
              f"{_mb(r['profile']['peak_bytes']):>12}")
        print(f"{'':<34}{'ours: detect_drift':<28}{r['detect']['seconds']:>10.2f}{_mb(r['detect']['peak_bytes']):>12}")
        print(f"{'':<34}{'Evidently DataDriftPreset':<28}{r['evidently']['seconds']:>10.2f}"
              f"{_mb(r['evidently']['peak_bytes']):>12}")
        print(f"{'':<34}speedup {r['speedup']:.1f}x, memory ratio {r['memory_ratio']:.3f}, "
              f"verdicts agree {r['verdicts_agree']}/{r['verdicts_total']} "
              f"(drifted: ours {r['n_drifted_ours']}, Evidently {r['n_drifted_evidently']}), "
              f"profile file {_mb(r['profile']['profile_bytes'])}")
        disagree = [c for c in r["evidently"]["verdicts"] if r["evidently"]["verdicts"][c] != r["detect"]["verdicts"][c]]
        if disagree:
            print(f"{'':<34}DISAGREE: {disagree}")
    main_case = next((r for r in results if r["case"] == "numeric"), results[0])
    print(json.dumps({
        "speedup": round(main_case["speedup"], 2),
        "memory_ratio": round(main_case["memory_ratio"], 4),
        "verdicts_agree": main_case["verdicts_agree"],
        "verdicts_total": main_case["verdicts_total"],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
