"""lib/model/lifecycle.py data steps on a real local store: ingest, quarantine records, validated days and
the training window (no MLflow, no Dagster)."""

import json

import pytest

from mlplatform_assets.lib.data.storage import ObjectStore
from mlplatform_assets.lib.model import lifecycle
from mlplatform_assets.lib.model.features import DatasetError
from mlplatform_assets.lib.spec import parse_spec
from mlplatform_tests.conftest import SMALL_DAYS, small_spec_yaml, write_churn_days


def _spec(source, on_failure: str = "quarantine", training: str = ""):
    text = small_spec_yaml(str(source)).replace(
        "  min_rows: 50\n", f"  min_rows: 50\n  on_failure: {on_failure}\n  columns:\n"
                            "    - {column: monthly_charges, max: 500}\n")
    return parse_spec(text.replace("  seed: 3\n", f"  seed: 3\n{training}"), "m.yaml", variables={})


@pytest.fixture()
def source(tmp_path):
    write_churn_days(tmp_path / "source", SMALL_DAYS)
    bad = tmp_path / "source" / f"{SMALL_DAYS[2]}.parquet"
    import pandas as pd

    frame = pd.read_parquet(bad)
    frame.loc[0, "monthly_charges"] = 800.0
    frame.to_parquet(bad, index=False)
    (tmp_path / "source" / f"{SMALL_DAYS[5]}.parquet").unlink()
    return tmp_path / "source"


def _ingest_and_store(spec, store):
    ingested = lifecycle.ingest_days(spec, SMALL_DAYS, store)
    lifecycle.store_validated(spec, SMALL_DAYS, store)
    return ingested


def test_quarantine_records_failing_and_missing_days_and_training_leaves_them_out(source, tmp_path):
    spec = _spec(source)
    store = ObjectStore(str(tmp_path / "data"))
    ingested = {d.day: d for d in _ingest_and_store(spec, store)}
    bad, gap = SMALL_DAYS[2], SMALL_DAYS[5]
    assert [d for d, i in ingested.items() if i.quarantined] == [bad, gap]
    assert [c.name for c in ingested[bad].failures] == ["max:monthly_charges"]
    assert lifecycle.quarantined_days(spec, store) == [bad, gap]
    record = json.loads(store.read_bytes(lifecycle.quarantine_key(spec.name, gap)))
    assert record["failed_checks"] == {"non_empty": "no data: file not found"} and record["rows"] == 0
    assert lifecycle.validated_days(spec, store) == [d for d in SMALL_DAYS if d not in (bad, gap)]
    assert not store.exists(lifecycle.validated_key(spec.name, bad))

    dataset = lifecycle.load_training_dataset(spec, store)
    assert dataset.quarantined_days == [bad, gap]
    assert not {bad, gap} & set(dataset.days)
    assert len(dataset.days) == len(SMALL_DAYS) - 2

    # Asking for exactly a quarantined day (reproduce does) is refused, naming it.
    with pytest.raises(DatasetError, match=f"validated data missing for day\\(s\\) \\['{bad}'\\]"):
        lifecycle.load_training_dataset(spec, store, days=[SMALL_DAYS[0], bad])


def test_too_few_valid_days_name_the_counts_the_days_and_the_minimum(source, tmp_path):
    spec = _spec(source, training="  min_partitions: 9\n")
    store = ObjectStore(str(tmp_path / "data"))
    _ingest_and_store(spec, store)
    with pytest.raises(DatasetError) as err:
        lifecycle.load_training_dataset(spec, store, end=SMALL_DAYS[-1])
    assert str(err.value) == (f"training window {SMALL_DAYS[0]}..{SMALL_DAYS[-1]} has 8 valid day(s) after "
                              f"quarantining 2 ({SMALL_DAYS[2]}, {SMALL_DAYS[5]}); at least 9 are required "
                              "(training.min_partitions)")


def test_a_good_copy_of_a_day_that_now_fails_stays_stored_but_unused_until_it_passes_again(source, tmp_path):
    spec = _spec(source)
    store = ObjectStore(str(tmp_path / "data"))
    day = SMALL_DAYS[2]
    write_churn_days(source, [day])  # first a good version of the day
    _ingest_and_store(spec, store)
    assert day in lifecycle.validated_days(spec, store)
    good_copy = store.read_bytes(lifecycle.validated_key(spec.name, day))

    import pandas as pd

    frame = pd.read_parquet(source / f"{day}.parquet")
    frame.loc[0, "monthly_charges"] = 800.0
    frame.to_parquet(source / f"{day}.parquet", index=False)
    _ingest_and_store(spec, store)
    assert day not in lifecycle.validated_days(spec, store)
    assert store.read_bytes(lifecycle.validated_key(spec.name, day)) == good_copy  # nothing lost

    write_churn_days(source, [day])
    _ingest_and_store(spec, store)
    assert day in lifecycle.validated_days(spec, store)
    assert lifecycle.quarantine_record(spec, store, day) is None


def test_block_mode_writes_no_quarantine_record(source, tmp_path):
    spec = _spec(source, on_failure="block")
    store = ObjectStore(str(tmp_path / "data"))
    ingested = lifecycle.ingest_days(spec, SMALL_DAYS, store)
    assert [d.day for d in ingested if not d.passed] == [SMALL_DAYS[2], SMALL_DAYS[5]]
    assert not any(d.quarantined for d in ingested)
    assert lifecycle.quarantined_days(spec, store) == []
