from __future__ import annotations

import subprocess
import sys


def test_import_has_no_side_effects_and_no_dagster():
    code = (
        "import os, sys, threading\n"
        "before = dict(os.environ)\n"
        "import mlplatform_assets.lib.serving as s\n"
        "from mlplatform_assets.lib.serving import app, server, model, predlog, batcher, manager, validation, protocol\n"
        "s.serve, s.create_app, s.read_prediction_log, s.add_serve_arguments, s.run_from_args\n"
        "assert 'dagster' not in sys.modules\n"
        "assert dict(os.environ) == before\n"
        "assert threading.active_count() == 1\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_arguments():
    import argparse

    from mlplatform_assets.lib.serving import add_serve_arguments

    args = add_serve_arguments(argparse.ArgumentParser()).parse_args(
        ["--model", "m", "--port", "9000", "--workers", "2", "--poll-interval", "3"])
    assert (args.model, args.host, args.port, args.workers, args.poll_interval_s) == ("m", "127.0.0.1", 9000, 2, 3.0)
