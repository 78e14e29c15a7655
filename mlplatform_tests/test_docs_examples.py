"""The YAML examples in docs/adding-a-model.md are valid as written, and the data-rules example does what
the doc says on real data.

Every ```yaml block is checked with the real spec loader: a block that starts with ``name:`` is a whole
spec; any other block is a fragment, checked as part of the doc's full example spec (``<!-- example:
full_spec -->``) with the fragment's top-level fields replacing the full spec's.
"""

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlplatform_assets.lib.data.storage import ObjectStore
from mlplatform_assets.lib.model import lifecycle
from mlplatform_assets.lib.spec import parse_spec

DOCS = Path(__file__).resolve().parents[1] / "docs" / "adding-a-model.md"
PLUGIN_DIR = Path(__file__).resolve().parent / "plugins" / "acme_features"
# What the doc's ${VAR} references stand for here (values of the documented shape; never used to connect).
VARIABLES = {"ORDERS_DB_URL": "postgresql+psycopg2://reader:secret@db.internal:5432/shop", "BUCKET": "acme-data"}


def yaml_blocks() -> list[tuple[str, str]]:
    """(label, text) of every yaml block: its ``<!-- example: NAME -->`` tag, else its line number."""
    text = DOCS.read_text()
    out = []
    for m in re.finditer(r"(?:<!-- example: (\S+) -->\n)?```yaml\n(.*?)```", text, re.S):
        out.append((m.group(1) or f"line {text[:m.start()].count(chr(10)) + 1}", m.group(2)))
    return out


def tagged(name: str) -> str:
    found = dict(yaml_blocks())
    assert name in found, f"docs/adding-a-model.md lost its {name} example"
    return found[name]


@pytest.fixture()
def plugin_trusted(monkeypatch):
    """The transformer example names the test plugin acme_features: importable and trusted."""
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    monkeypatch.setenv("MLPLATFORM_TRUSTED_MODULES", "acme_features")


@pytest.mark.parametrize("label, text", yaml_blocks(), ids=[label for label, _ in yaml_blocks()])
def test_every_yaml_example_is_a_valid_spec_or_spec_fragment(plugin_trusted, label, text):
    document = yaml.safe_load(text)
    assert isinstance(document, dict), f"{label}: not a YAML mapping"
    if "name" not in document:
        document = {**yaml.safe_load(tagged("full_spec")), **document}
    spec = parse_spec(yaml.safe_dump(document, sort_keys=False), f"docs {label}", variables=VARIABLES)
    for key in document:
        assert getattr(spec, key) is not None


def test_the_examples_the_doc_promises_are_there():
    assert {"full_spec", "lightgbm", "transformer", "column_rules"} <= {label for label, _ in yaml_blocks()}


def _flights_day(day: dt.date, rows: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "scheduled_departure": pd.Timestamp(day) + pd.to_timedelta(np.sort(rng.integers(0, 86_400, rows)), "s"),
        "dep_delay_min": rng.normal(10, 20, rows).round(1),
        "distance_km": rng.uniform(200, 4000, rows).round(0),
        "wind_speed_kmh": rng.uniform(0, 60, rows).round(1),
        "visibility_km": rng.uniform(1, 16, rows).round(1),
        "carrier": rng.choice(["AA", "DL", "UA", "WN"], rows),
        "origin": rng.choice(["ATL", "ORD", "DFW"], rows),
        "arrival_delay_min": rng.normal(5, 25, rows).round(1),
    })


def test_column_rules_example_quarantines_a_bad_day_and_only_warns_where_it_says(tmp_path):
    """The worked example on flights-like data, as the doc describes it: the weather column may be mostly
    null, an unknown carrier quarantines the day, implausible wind only warns."""
    spec = parse_spec(tagged("column_rules"), str(tmp_path / "flight_delay.yaml"), variables={}, base_dir=tmp_path)
    source = tmp_path / "data" / "flights"
    source.mkdir(parents=True)
    days = [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(3)]
    good, weather_gap, bad = (_flights_day(d, seed=i) for i, d in enumerate(days))
    weather_gap.loc[: int(len(weather_gap) * 0.6), "visibility_km"] = None  # 60% null: fine for this column
    weather_gap.loc[0, "wind_speed_kmh"] = 300.0  # above the warn-only max
    bad.loc[[3, 7], "carrier"] = "XE"
    for day, frame in zip(days, (good, weather_gap, bad)):
        frame.to_parquet(source / f"{day}.parquet", index=False)
    store = ObjectStore(str(tmp_path / "store"))

    # A fourth day without a file is quarantined too.
    ingested = {d.day: d for d in lifecycle.ingest_days(spec, [*days, days[-1] + dt.timedelta(days=1)], store)}
    assert [d for d, i in ingested.items() if i.quarantined] == [days[2], days[2] + dt.timedelta(days=1)]
    assert [(c.name, c.message) for c in ingested[days[2]].failures] == [
        ("allowed:carrier", "carrier: 2 of 200 rows outside allowed ['AA', 'AS', 'B6', 'DL', 'F9', 'HA', 'NK', "
                            "'UA', 'WN'] (1 distinct value(s)), e.g. 'XE'")]
    warned = [c for c in ingested[days[1]].checks if not c.passed]
    assert [(c.name, c.severity) for c in warned] == [("max:wind_speed_kmh", "warn")]
    assert ingested[days[1]].passed and ingested[days[0]].passed
    lifecycle.store_validated(spec, days, store)
    assert lifecycle.validated_days(spec, store) == days[:2]
