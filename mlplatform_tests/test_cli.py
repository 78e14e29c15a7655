"""CLI commands that do not need a trained model."""

import pandas as pd

from mlplatform_assets.cli import main


def test_example_data_writes_normal_and_drifted_days(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLPLATFORM_HOME", str(tmp_path))
    monkeypatch.delenv("MLPLATFORM_MODELS_DIR", raising=False)
    assert main(["example-data", "--model", "customer_churn", "--start", "2026-11-01", "--end", "2026-11-02"]) == 0
    assert "wrote 2 day file(s)" in capsys.readouterr().out
    src = tmp_path / "example-data" / "customer_churn"
    normal = pd.read_parquet(src / "2026-11-02.parquet")
    # Existing days are kept unless --overwrite; --drift switches the generator's drift on.
    assert main(["example-data", "--model", "customer_churn", "--start", "2026-11-02", "--drift"]) == 0
    assert "wrote 0 day file(s)" in capsys.readouterr().out
    assert main(["example-data", "--model", "customer_churn", "--start", "2026-11-02", "--drift",
                 "--overwrite"]) == 0
    drifted = pd.read_parquet(src / "2026-11-02.parquet")
    assert drifted["monthly_charges"].mean() > 1.2 * normal["monthly_charges"].mean()
    assert "overseas" in set(drifted["region"]) and "overseas" not in set(normal["region"])


def test_unknown_model_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLPLATFORM_HOME", str(tmp_path))
    monkeypatch.delenv("MLPLATFORM_MODELS_DIR", raising=False)
    assert main(["example-data", "--model", "nope", "--start", "2026-11-01"]) == 2
    assert "unknown model(s) ['nope']" in capsys.readouterr().err
