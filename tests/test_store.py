"""The results database: round trip, baselines, and interrupted runs never read back as results."""
import dataclasses
import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from run_factory import clone, make_run
from vitrobust import store as store_module
from vitrobust.errors import VitrobustError
from vitrobust.record import RunConfig, RunRecord, RunWarning
from vitrobust.store import SCHEMA_VERSION, Store, StoreError, UnknownBaseline, UnknownRun

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "db" / "vitrobust.sqlite") as s:
        yield s


def raw_count(path, table, run_id):
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT count(*) FROM {table} WHERE run_id=?", (run_id,)).fetchone()[0]


def test_record_round_trips_the_run_record(store, tmp_path):
    run = make_run(artifact_dir=tmp_path)
    assert RunRecord.from_dict(run.to_dict()) == run
    assert store.record(run) == run.run_id
    back = store.load_run(run.run_id)
    assert isinstance(back, RunRecord) and back == run
    assert back.measurements[0].outcomes == run.measurements[0].outcomes
    assert None in back.measurements[0].outcomes   # nulls survive


def test_round_trip_fails_when_a_field_is_lost(store):
    # The comparison above can fail: a record differing in one field of one entry is not equal.
    run = make_run("r1")
    store.record(run)
    changed = dataclasses.replace(run, checks=[dataclasses.replace(run.checks[0], confidence=0.9),
                                               *run.checks[1:]])
    assert store.load_run("r1") != changed


def test_fields_without_a_column_round_trip_through_extra(store):
    """alias and confidence (measurements), confidence and intervals (checks), the model fields
    and the run's cache have no column: they travel in the extra JSON."""
    run = make_run("extra")
    meas, check, model = run.measurements[0], run.checks[0], run.models["deit_tiny:int8"]
    meas.alias, meas.confidence, check.confidence = "any[pgd, sp]", 0.9, 0.99
    model.throughput_batch, model.input_size, model.differentiable = 7, 28, False
    store.record(run)
    back = store.load_run("extra")
    assert back.measurements[0].alias == "any[pgd, sp]" and back.measurements[0].confidence == 0.9
    assert back.checks[0].confidence == 0.99 and back.checks[0].intervals == check.intervals
    assert back.models["deit_tiny:int8"] == model and back.cache == run.cache
    assert back.warnings[0].model == "deit_tiny:int8"
    with sqlite3.connect(store.path) as conn:
        extra = conn.execute("SELECT extra FROM measurements WHERE run_id='extra' AND seq=0").fetchone()
        assert json.loads(extra[0])["alias"] == "any[pgd, sp]"
        # The queryable columns are still there.
        row = conn.execute("SELECT key, kind, value, k, n, lo, hi FROM measurements "
                           "WHERE run_id='extra' AND seq=0").fetchone()
    assert row == (meas.key, meas.kind, meas.value, meas.k, meas.n, *meas.interval)


def test_a_minimal_record_round_trips(store):
    run = RunRecord("bare")
    store.record(run)
    assert store.load_run("bare") == run


def test_check_params_keep_their_order(store):
    run = make_run("order")
    run.checks[0].params = {"size": "tiny", "attack": "sp"}
    store.record(run)
    assert list(store.load_run("order").checks[0].params) == ["size", "attack"]


def test_run_id_comes_from_record_only():
    assert not hasattr(store_module, "new_run_id") or store_module.new_run_id.__module__ == "vitrobust.record"


def test_a_record_without_id_is_refused(store):
    with pytest.raises(StoreError, match="needs a run_id"):
        store.record(RunRecord(""))
    assert issubclass(StoreError, VitrobustError)


def test_database_is_wal_with_a_schema_version(store):
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "v.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version=?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_missing_or_garbage_database_is_a_one_line_error(tmp_path):
    with pytest.raises(StoreError, match="no results database"):
        Store(tmp_path / "absent.sqlite", create=False)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as err:
        Store(junk)
    assert "\n" not in str(err.value)


def test_rows_written_by_vitrobust_0_1_still_load(store):
    """0.1 wrote the same columns; its extra JSON held only what the old dicts had beyond them."""
    store.record(make_run("v01"))
    with sqlite3.connect(store.path) as conn:
        conn.execute("""UPDATE runs SET extra='{"cache": {"adversarial_reused": 1}}',"""
                     """ config='{"data": "digits", "limit": 200}' WHERE run_id='v01'""")
        conn.execute("UPDATE measurements SET extra='{}' WHERE run_id='v01'")
        conn.execute("UPDATE checks SET extra='{}' WHERE run_id='v01'")
    back = store.load_run("v01")
    assert back.schema_version == 1 and back.cache == {"adversarial_reused": 1}
    assert back.config == RunConfig(data="digits")
    assert back.measurements[0].alias is None and back.checks[0].intervals == {}
    assert back.measurements[0].value == make_run().measurements[0].value


def test_latest_run_is_the_last_complete_one(store):
    assert store.latest_run() is None
    store.record(make_run("r1", finished="2026-11-22T01:00:00+00:00"))
    store.record(make_run("r2", finished="2026-11-22T02:00:00+00:00"))
    assert store.latest_run().run_id == "r2"
    assert [r["run_id"] for r in store.list_runs()] == ["r2", "r1"]


def test_begin_then_record_completes_the_run(store):
    run_id = store.begin_run(RunRecord("begun", started="2026-11-22T00:15:00",
                                       versions={"python": "3"}, config=RunConfig(data="digits")))
    assert run_id == "begun"
    assert store.list_runs(include_incomplete=True)[0]["status"] == "running"
    run = make_run(run_id)
    store.record(run)
    assert store.load_run(run_id).checks == run.checks
    assert store.load_run(run_id) == run   # the begun header was replaced by the record's
    assert store.list_runs()[0]["status"] == "complete"
    assert store.begin_run(RunRecord("")) != ""   # no id yet: the store hands out a new one


def test_a_run_is_recorded_once(store):
    store.record(make_run("r1"))
    with pytest.raises(StoreError, match="already recorded"):
        store.record(make_run("r1"))
    with pytest.raises(StoreError, match="already exists"):
        store.begin_run(RunRecord("r1"))


def test_begun_but_never_recorded_run_is_not_a_result(store):
    store.record(make_run("done", finished="2026-11-22T01:00:00+00:00"))
    store.begin_run(RunRecord("dangling", started="2026-11-22T03:00:00+00:00"))
    with pytest.raises(UnknownRun, match="never completed"):
        store.load_run("dangling")
    assert store.latest_run().run_id == "done"
    assert [r["run_id"] for r in store.list_runs()] == ["done"]
    assert {r["run_id"] for r in store.list_runs(include_incomplete=True)} == {"done", "dangling"}
    with pytest.raises(UnknownRun):
        store.save_baseline("release", "dangling")


def test_record_failing_halfway_leaves_nothing_half_written(store, monkeypatch):
    store.record(make_run("good", finished="2026-11-22T01:00:00+00:00"))
    store.begin_run(RunRecord("broken"))

    def explode(self, run_id, checks):
        raise RuntimeError("disk on fire")   # after models and measurements were inserted

    monkeypatch.setattr(Store, "_insert_checks", explode)
    with pytest.raises(RuntimeError):
        store.record(make_run("broken", finished="2026-11-22T09:00:00+00:00"))
    assert raw_count(store.path, "measurements", "broken") == 0
    assert raw_count(store.path, "models", "broken") == 0
    with pytest.raises(UnknownRun):
        store.load_run("broken")
    assert store.latest_run().run_id == "good"
    # The same run can be recorded properly afterwards.
    monkeypatch.undo()
    store.record(make_run("broken", finished="2026-11-22T09:00:00+00:00"))
    assert store.latest_run().run_id == "broken"


def test_process_killed_mid_record_is_never_read_back(tmp_path):
    db = tmp_path / "killed.sqlite"
    with Store(db) as s:
        s.record(make_run("good", finished="2026-11-22T01:00:00+00:00"))
    # A child writes a run and is SIGKILLed inside record(), after the measurements are in.
    child = textwrap.dedent(f"""
        import os, signal, sys
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
        from run_factory import make_run
        from vitrobust.store import Store
        def die(self, run_id, checks):
            os.kill(os.getpid(), signal.SIGKILL)
        Store._insert_checks = die
        Store({str(db)!r}).record(make_run("killed", finished="2026-11-22T09:00:00+00:00"))
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    with Store(db) as s:
        assert s.latest_run().run_id == "good"
        with pytest.raises(UnknownRun):
            s.load_run("killed")
        assert raw_count(db, "measurements", "killed") == 0
        assert [r["run_id"] for r in s.list_runs()] == ["good"]


def test_baselines(store):
    run = make_run("r1")
    store.record(run)
    store.record(clone(run, "r2"))
    store.save_baseline("release-1.0", "r1")
    assert store.baseline_run("release-1.0") == run
    store.save_baseline("release-1.0", "latest")   # re-pointing replaces
    assert store.baseline_run("release-1.0").run_id in {"r1", "r2"}
    with pytest.raises(UnknownBaseline, match="release-1.0"):
        store.baseline_run("nope")
    assert [b["name"] for b in store.list_baselines()] == ["release-1.0"]


def test_load_unknown_run(store):
    with pytest.raises(UnknownRun, match="not recorded"):
        store.load_run("nothing")


def test_numpy_scalars_are_stored_as_numbers(store):
    np = pytest.importorskip("numpy")
    run = make_run("np")
    meas = run.measurements[0]
    meas.k, meas.n, meas.value = np.int64(meas.k), np.int64(meas.n), np.float64(meas.value)
    meas.outcomes = [None if o is None else np.int64(o) for o in meas.outcomes]
    meas.threat_model = {"eps": np.float32(0.25), "mask": np.array([1, 2])}
    run.models["deit_tiny"].meta = {"keep_rate": np.float32(0.5)}
    store.record(run)
    back = store.load_run("np")
    assert back.measurements[0].k == int(meas.k) and type(back.measurements[0].k) is int
    assert back.measurements[0].outcomes == [None if o is None else int(o) for o in meas.outcomes]
    assert all(type(o) is int for o in back.measurements[0].outcomes if o is not None)
    assert back.measurements[0].threat_model == {"eps": 0.25, "mask": [1, 2]}
    assert back.models["deit_tiny"].meta == {"keep_rate": 0.5}
