"""``mlplatform stack up``: the production stack on this machine, until Ctrl-C (see docs/operations.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import signal
import tempfile
import time
from pathlib import Path

import yaml

from . import LocalStack

EXAMPLE_MODELS = ("customer_churn", "delivery_time")
# What the environment file hands to a shell that runs ``mlplatform`` commands against the stack.
_CLIENT_PREFIXES = ("MLPLATFORM_", "MLFLOW_", "AWS_", "DAGSTER_")


def example_spec_text(stack: LocalStack, model: str) -> str:
    """The shipped example spec, reading its source from the stack's bucket and naming the stack's replicas."""
    from mlplatform_assets.lib.config import examples_models_dir

    data = yaml.safe_load((examples_models_dir() / f"{model}.yaml").read_text())
    data["source"] = {"uri": stack.source_uri(model), "file_pattern": data["source"]["file_pattern"]}
    data["serving"] = {"endpoints": stack.replica_urls, "poll_interval_s": stack.serving_poll_interval_s}
    return yaml.safe_dump(data, sort_keys=False)


def seed_example_source(stack: LocalStack, model: str, days: int, end: dt.date) -> list[dt.date]:
    """Write ``days`` days of generated example data, ending at ``end``, into the model's S3 source."""
    from mlplatform_assets.lib.data.example_data import GENERATORS

    written = [end - dt.timedelta(days=i) for i in reversed(range(days))]
    for day in written:
        stack.put_source_day(model, GENERATORS[model](day), day)
    return written


def write_client_env(stack: LocalStack) -> Path:
    """``<root>/stack.env`` (mode 0600: it holds the stack's generated credentials): ``set -a; . stack.env``
    points ``mlplatform`` commands (rollback, audit, lifecycle, ...) at the stack."""
    env = {**stack.cli_env("shell"), **stack.dagster_env("shell")}
    lines = [f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()) if k.startswith(_CLIENT_PREFIXES)]
    path = stack.root / "stack.env"
    path.touch(mode=0o600)
    path.write_text("\n".join(lines) + "\n")
    return path


def cmd_stack(args: argparse.Namespace, config=None) -> int:  # noqa: ANN001 - PlatformConfig, unused
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="mlplatform-stack-"))
    stack = LocalStack(root, model=args.model, replicas=args.replicas, sensor_interval_s=args.sensor_interval,
                       sensors_running=args.sensors_running)
    spec_text = example_spec_text(stack, args.model)
    stack.write_spec(args.model, spec_text)
    days = args.days or yaml.safe_load(spec_text)["training"]["window_days"]  # enough for a first training
    stopping = False

    def on_term(signum, frame):  # noqa: ANN001, ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    print(f"starting the stack under {root} (logs in {stack.logs_dir}) ...", flush=True)
    try:
        stack.up()
        end = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
        seeded = seed_example_source(stack, args.model, days, end)
        env_file = write_client_env(stack)
        key_file = root / "api-key"
        key_file.touch(mode=0o600)
        key_file.write_text(stack.api_key + "\n")
        print(stack.summary())
        print(f"\nsource:          {stack.source_uri(args.model)} ({len(seeded)} days {seeded[0]}..{seeded[-1]})\n"
              f"client env:      set -a; . {env_file}; set +a   (then: mlplatform audit {args.model}, ...)\n"
              f"API key:         {key_file}\n"
              f"first champion:  Dagster UI -> Jobs -> {args.model}__lifecycle -> Materialize the partition range\n"
              f"                 {seeded[0]}...{seeded[-1]}; or, with the client env: mlplatform lifecycle "
              f"--model {args.model}\nCtrl-C stops everything.", flush=True)
        while True:
            time.sleep(2)
            dead = stack.dead()
            if dead:
                print("a stack process exited:\n" + "\n".join(dead), flush=True)
                return 1
    except KeyboardInterrupt:
        stopping = True
        return 0
    finally:
        print("stopping the stack ...", flush=True)
        stack.down()
        if stopping and not args.dir and not args.keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)


def add_stack_parser(sub) -> None:  # noqa: ANN001 - argparse subparsers
    """Register ``mlplatform stack up`` on the CLI's subparsers."""
    p = sub.add_parser("stack", help="run the production stack locally (PostgreSQL, S3, MLflow, Dagster, serving)")
    actions = p.add_subparsers(dest="stack_command", required=True)
    up = actions.add_parser("up", help="start every component as its own process on 127.0.0.1 until Ctrl-C")
    up.add_argument("--dir", help="stack directory (default: a new temp dir, deleted on exit); kept when given")
    up.add_argument("--keep", action="store_true", help="keep the temp dir (logs) after exit")
    up.add_argument("--model", default="customer_churn", choices=EXAMPLE_MODELS, help="example model to deploy")
    up.add_argument("--days", type=int, default=None,
                    help="days of example data in the S3 source, ending yesterday (default: the training window)")
    up.add_argument("--replicas", type=int, default=2, help="serving replicas of the model")
    up.add_argument("--sensor-interval", type=int, default=30, help="minimum seconds between sensor ticks")
    up.add_argument("--sensors-running", action="store_true",
                    help="start the per-model sensors RUNNING (default: stopped; turn them on in the UI)")
    up.set_defaults(fn=cmd_stack)
