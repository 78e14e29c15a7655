"""Snapshot of everything the example specs define: unintended changes show up in review.

Regenerate after an intended change with: MLPLATFORM_UPDATE_SNAPSHOT=1 pytest mlplatform_tests/defs/test_definitions.py
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from mlplatform_assets.definitions import build_definitions
from mlplatform_assets.lib.config import load_config

SNAPSHOT = Path(__file__).with_name("definitions_snapshot.json")
REPO = Path(__file__).resolve().parents[2]


def describe(defs: dg.Definitions) -> dict:
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    return {
        "assets": sorted("/".join(k.path) for k in graph.get_all_asset_keys()),
        "asset_checks": sorted(f"{'/'.join(k.asset_key.path)}:{k.name}" for k in graph.asset_check_keys),
        "blocking_checks": sorted(f"{'/'.join(s.asset_key.path)}:{s.name}" for a in graph.assets_defs
                                  for s in a.check_specs if s.blocking),
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
        "schedules": sorted(s.name for s in repo.schedule_defs),
        "sensors": sorted(s.name for s in repo.sensor_defs),
        "resources": sorted(repo.get_top_level_resources()),
        "groups": sorted({graph.get(k).group_name for k in graph.get_all_asset_keys()}),
    }


def test_definitions_snapshot(tmp_path):
    config = load_config({"MLPLATFORM_HOME": str(tmp_path)})
    current = describe(build_definitions(config))
    if os.environ.get("MLPLATFORM_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=2) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_every_asset_is_described_and_grouped(tmp_path):
    defs = build_definitions(load_config({"MLPLATFORM_HOME": str(tmp_path)}))
    graph = defs.get_repository_def().asset_graph
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, f"{key} has no description"
        assert node.group_name == key.path[0]


def test_dagster_definitions_validate_passes_for_workspace(tmp_path):
    env = {**os.environ, "MLPLATFORM_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(REPO / "workspace.yaml")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr


def test_import_has_no_side_effects(tmp_path):
    """Importing the code location reads no environment and creates nothing."""
    code = ("import os; os.environ['MLPLATFORM_HOME']='/nonexistent/should-not-be-created'; "
            "import mlplatform_assets.definitions, mlplatform_assets.cli; "
            "print(os.path.exists('/nonexistent/should-not-be-created'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
    assert list(tmp_path.iterdir()) == []
