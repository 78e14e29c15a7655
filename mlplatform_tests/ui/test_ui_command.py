"""What ``mlplatform ui`` opens and where metadata links point (the processes themselves: test_browser.py)."""

from mlplatform_assets.cli import build_parser, ui_command
from mlplatform_assets.commands.ui import PlatformUI
from mlplatform_assets.lib.config import load_config


def test_lifecycle_prints_a_ui_command_that_opens_the_same_state_from_anywhere(tmp_path):
    home = tmp_path / "my state"
    assert ui_command(load_config({"MLPLATFORM_HOME": str(home)})) == f"MLPLATFORM_HOME='{home}' mlplatform ui"
    moved = load_config({"MLPLATFORM_HOME": str(home), "DAGSTER_HOME": str(tmp_path / "dh"),
                         "MLFLOW_TRACKING_URI": "sqlite:////srv/mlflow.db"})
    assert ui_command(moved) == (f"MLPLATFORM_HOME='{home}' DAGSTER_HOME={tmp_path / 'dh'} "
                                 f"MLFLOW_TRACKING_URI=sqlite:////srv/mlflow.db mlplatform ui")


def test_links_follow_the_mlflow_ui_it_starts(tmp_path):
    config = load_config({"MLPLATFORM_HOME": str(tmp_path)})
    assert config.mlflow_ui_url == "http://127.0.0.1:5000"
    ui = PlatformUI(config, "127.0.0.1", 3100, 5100)
    assert ui.starts_mlflow and ui.mlflow_url == "http://127.0.0.1:5100"
    assert ui.dagster_url == "http://127.0.0.1:3100"
    # Listening on every interface still prints (and links) an address a browser can open.
    assert PlatformUI(config, "0.0.0.0", 3100, 5100).mlflow_url == "http://127.0.0.1:5100"


def test_an_explicit_mlflow_ui_url_or_a_tracking_server_wins(tmp_path):
    proxied = load_config({"MLPLATFORM_HOME": str(tmp_path), "MLPLATFORM_MLFLOW_UI_URL": "https://mlflow.example.com/"})
    ui = PlatformUI(proxied, "127.0.0.1", 3100, 5100)
    assert ui.starts_mlflow and ui.mlflow_url == "https://mlflow.example.com"
    server = load_config({"MLPLATFORM_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": "http://127.0.0.1:5999"})
    ui = PlatformUI(server, "127.0.0.1", 3100, 5100)
    assert not ui.starts_mlflow and ui.mlflow_url == "http://127.0.0.1:5999"


def test_ui_arguments_default_to_the_documented_ports():
    args = build_parser().parse_args(["ui"])
    assert (args.host, args.port, args.mlflow_port) == ("127.0.0.1", 3000, 5000)
