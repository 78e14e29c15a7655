"""The audit trail: concurrent writers never overwrite each other; records come back in time order."""

import threading

from mlplatform_assets.lib.data.storage import read_records
from mlplatform_assets.lib.model.registry import AuditRecord, MlflowSettings, Registry


def test_concurrent_audit_records_all_survive_in_order(tmp_path):
    settings = MlflowSettings(f"sqlite:///{tmp_path}/mlflow.db", f"sqlite:///{tmp_path}/mlflow.db",
                              (tmp_path / "artifacts").as_uri())
    registry = Registry(settings, str(tmp_path / "audit.jsonl"))
    registry.client.create_registered_model("m")

    def write(i: int) -> None:
        Registry(settings, str(tmp_path / "audit.jsonl")).record(AuditRecord(
            time=f"t{i}", model="m", action="reject", from_version="1", to_version=str(i),
            decision="kept_champion", reason=f"writer {i}", actor="test"))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = registry.audit_records("m")
    assert sorted(r["reason"] for r in records) == sorted(f"writer {i}" for i in range(8))
    assert len(read_records(tmp_path / "audit.jsonl")) == 8

    registry.record(AuditRecord(time="later", model="m", action="rollback", from_version="2", to_version="1",
                                decision="rolled_back", reason="last one", actor="test"))
    assert registry.audit_records("m")[-1]["reason"] == "last one"
