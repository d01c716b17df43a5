"""The results database: round trip, baselines, and interrupted runs never read back as results.

Every test here runs on SQLite; test_store_postgres.py runs the same tests (all but those marked
``sqlite_only``) on a throwaway PostgreSQL server, through its own ``db`` fixture.
"""
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


class SQLiteDatabases:
    """Where the tests' stores live, and SQL on them that goes around the store (sqlite3)."""

    name = "sqlite"

    def __init__(self, folder: Path):
        self.folder, self.made = folder, 0
        self.main = self.fresh()   # the database of the ``store`` fixture

    def fresh(self) -> str:
        """A database no store has opened yet (a path or a URL: what Store takes)."""
        self.made += 1
        return str(self.folder / f"db{self.made}" / "vitrobust.sqlite")

    def sql(self, query: str, params=(), target=None) -> list[tuple]:
        """Run one statement (``?`` placeholders) on ``target`` (default: the main one), committed."""
        conn = sqlite3.connect(target or self.main)
        try:
            with conn:
                return [tuple(r) for r in conn.execute(query, params).fetchall()]
        finally:
            conn.close()


def sqlite_only(test):
    """A test of SQLite itself (files, pragmas): not run again on PostgreSQL."""
    test.sqlite_only = True
    return test


@pytest.fixture
def db(tmp_path):
    return SQLiteDatabases(tmp_path)


@pytest.fixture
def store(db):
    with Store(db.main) as s:
        yield s


def raw_count(db, table, run_id, target=None):
    return db.sql(f"SELECT count(*) FROM {table} WHERE run_id=?", (run_id,), target)[0][0]


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


def test_fields_without_a_column_round_trip_through_extra(store, db):
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
    [extra] = db.sql("SELECT extra FROM measurements WHERE run_id='extra' AND seq=0")
    assert json.loads(extra[0])["alias"] == "any[pgd, sp]"
    # The queryable columns are still there, with the numbers exactly as recorded.
    [row] = db.sql("SELECT key, kind, value, k, n, lo, hi FROM measurements "
                   "WHERE run_id='extra' AND seq=0")
    assert row == (meas.key, meas.kind, meas.value, meas.k, meas.n, *meas.interval)
    assert type(row[2]) is float and type(row[3]) is int


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


def test_database_has_a_schema_version(store, db):
    assert db.sql("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    Store(db.main).close()   # opening it again does not add a second row
    assert db.sql("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


@sqlite_only
def test_database_is_wal(store, db):
    assert db.sql("PRAGMA journal_mode") == [("wal",)]


def test_newer_schema_is_refused(db):
    target = db.fresh()
    Store(target).close()
    db.sql("UPDATE schema_version SET version=?", (SCHEMA_VERSION + 1,), target)
    with pytest.raises(StoreError, match="newer"):
        Store(target)


def test_opening_an_existing_database_without_create(store, db):
    store.record(make_run("r1"))
    with Store(db.main, create=False) as again:
        assert again.load_run("r1") == make_run("r1")


@sqlite_only
def test_missing_or_garbage_database_is_a_one_line_error(tmp_path):
    with pytest.raises(StoreError, match="no results database"):
        Store(tmp_path / "absent.sqlite", create=False)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as err:
        Store(junk)
    assert "\n" not in str(err.value)


def test_rows_written_by_vitrobust_0_1_still_load(store, db):
    """0.1 wrote the same columns; its extra JSON held only what the old dicts had beyond them."""
    store.record(make_run("v01"))
    db.sql("""UPDATE runs SET extra='{"cache": {"adversarial_reused": 1}}',"""
           """ config='{"data": "digits", "limit": 200}' WHERE run_id='v01'""")
    db.sql("UPDATE measurements SET extra='{}' WHERE run_id='v01'")
    db.sql("UPDATE checks SET extra='{}' WHERE run_id='v01'")
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


def test_ties_go_to_the_run_begun_last(store):
    """Same times: the order runs were begun in decides (SQLite's rowid), not the order they
    completed in, nor their ids."""
    started, finished = make_run().started, "2026-11-22T01:00:00+00:00"
    begun = ["c3", "a1", "d4", "b2"]
    for run_id in begun:
        store.begin_run(RunRecord(run_id, started=started))
    for run_id in ["b2", "d4", "c3", "a1"]:
        store.record(make_run(run_id, finished=finished))
    assert store.latest_run().run_id == "b2"
    assert [r["run_id"] for r in store.list_runs()] == begun[::-1]


def test_runs_without_times_sort_last(store):
    store.record(make_run("timed", finished="2026-11-22T01:00:00+00:00"))
    store.record(RunRecord("untimed", started=None, finished=None))   # NULLs in the database
    store.begin_run(RunRecord("begun-untimed", started=None))
    assert store.latest_run().run_id == "timed"
    assert [r["run_id"] for r in store.list_runs(include_incomplete=True)][0] == "timed"


def test_text_sorts_by_code_point(store):
    run = make_run("r1")
    store.record(run)
    names = ["b", "B", "a", "_z", "Z", "a-1", "a1", "é"]
    for name in names:
        store.save_baseline(name, "r1")
    assert [b["name"] for b in store.list_baselines()] == sorted(names)


def test_large_integers_and_exact_floats_round_trip(store):
    run = make_run("big")
    model = run.models["deit_tiny"]
    model.params, model.size_mb = 3_000_000_000, 1 / 3   # beyond 32-bit ints, beyond 32-bit floats
    run.measurements[0].value = 0.1 + 0.2
    store.record(run)
    back = store.load_run("big")
    assert back.models["deit_tiny"].params == 3_000_000_000
    assert back.models["deit_tiny"].size_mb == 1 / 3 and back.measurements[0].value == 0.1 + 0.2
    assert back == run


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


def test_record_failing_halfway_leaves_nothing_half_written(store, db, monkeypatch):
    store.record(make_run("good", finished="2026-11-22T01:00:00+00:00"))
    store.begin_run(RunRecord("broken"))

    def explode(self, run_id, checks):
        raise RuntimeError("disk on fire")   # after models and measurements were inserted

    monkeypatch.setattr(Store, "_insert_checks", explode)
    with pytest.raises(RuntimeError):
        store.record(make_run("broken", finished="2026-11-22T09:00:00+00:00"))
    assert raw_count(db, "measurements", "broken") == 0
    assert raw_count(db, "models", "broken") == 0
    with pytest.raises(UnknownRun):
        store.load_run("broken")
    assert store.latest_run().run_id == "good"
    # The same run can be recorded properly afterwards.
    monkeypatch.undo()
    store.record(make_run("broken", finished="2026-11-22T09:00:00+00:00"))
    assert store.latest_run().run_id == "broken"


def test_process_killed_mid_record_is_never_read_back(db):
    target = db.fresh()
    with Store(target) as s:
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
        Store({target!r}).record(make_run("killed", finished="2026-11-22T09:00:00+00:00"))
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    with Store(target) as s:
        assert s.latest_run().run_id == "good"
        with pytest.raises(UnknownRun):
            s.load_run("killed")
        assert raw_count(db, "measurements", "killed", target) == 0
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


# -- interrupted runs: the process that began a run is gone ------------------------------------------
def _begin_in_a_child(target: str, run_id: str) -> int:
    """Begin ``run_id`` in a child process that then exits; the child's pid."""
    child = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from vitrobust.record import RunRecord
        from vitrobust.store import Store
        with Store({target!r}) as s:
            s.begin_run(RunRecord({run_id!r}, started="2026-11-22T05:00:00"))
        print(os.getpid())
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


def test_a_run_whose_process_is_gone_reads_as_interrupted(store, db):
    import socket

    store.record(make_run("done", finished="2026-11-22T01:00:00+00:00"))
    pid = _begin_in_a_child(db.main, "killed")
    store.begin_run(RunRecord("here", started="2026-11-22T06:00:00"))   # this process: alive
    runs = {r["run_id"]: r for r in store.list_runs(include_incomplete=True)}
    assert {k: r["status"] for k, r in runs.items()} == {"done": "complete", "killed": "interrupted",
                                                        "here": "running"}
    assert (runs["killed"]["pid"], runs["killed"]["host"]) == (pid, socket.gethostname())
    assert "pid" not in runs["done"]
    # never a result: not the latest, not loadable, not a baseline
    assert store.latest_run().run_id == "done"
    with pytest.raises(UnknownRun, match=f"interrupted \\(its process {pid} on .* is gone\\)"):
        store.load_run("killed")
    with pytest.raises(UnknownRun, match="still running"):
        store.load_run("here")
    with pytest.raises(UnknownRun):
        store.save_baseline("b", "killed")
    assert [r["run_id"] for r in store.list_runs()] == ["done"]


def test_what_the_store_cannot_see_is_not_called_interrupted(store, db):
    """Another host's run, and a row of a version that recorded no process, stay 'running'; a
    live process that took the pid over (another start time) does not keep a dead run alive."""
    for run_id in ("elsewhere", "old", "reused"):
        store.begin_run(RunRecord(run_id))
    process = json.loads(db.sql("SELECT extra FROM runs WHERE run_id='elsewhere'")[0][0])["process"]
    db.sql("UPDATE runs SET extra=? WHERE run_id='elsewhere'",
           (json.dumps({"process": {**process, "host": "another-host"}}),))
    db.sql("UPDATE runs SET extra=NULL WHERE run_id='old'")
    db.sql("UPDATE runs SET extra=? WHERE run_id='reused'",
           (json.dumps({"process": {**process, "start": "another-boot/1"}}),))
    status = {r["run_id"]: r["status"] for r in store.list_runs(include_incomplete=True)}
    reused = "interrupted" if process["start"] else "running"   # no /proc: the pid alone decides
    assert status == {"elsewhere": "running", "old": "running", "reused": reused}


def test_discard_run_deletes_a_running_row_only(store):
    store.record(make_run("done"))
    store.begin_run(RunRecord("empty"))
    store.discard_run("empty")
    store.discard_run("done")   # complete: kept
    assert [r["run_id"] for r in store.list_runs(include_incomplete=True)] == ["done"]


# -- a damaged SQLite file -----------------------------------------------------------------------------
def _damaged(tmp_path, how: str) -> Path:
    path = tmp_path / "reports" / "vitrobust.sqlite"
    path.parent.mkdir()
    if how == "garbage":
        path.write_bytes(b"\x00 not sqlite \xff" * 700)
    else:
        with Store(path) as s:
            for i in range(3):
                s.record(make_run(f"r{i}"))
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    return path


@sqlite_only
@pytest.mark.parametrize("how, what", [("garbage", "not a SQLite database (file is not a database)"),
                                       ("truncated", "a damaged SQLite database (database disk image is malformed)")])
def test_a_damaged_database_is_one_line_saying_how_to_move_it_aside(tmp_path, how, what):
    path = _damaged(tmp_path, how)
    with pytest.raises(StoreError) as err:
        Store(path)
    message = str(err.value)
    assert message == f"{path}: {what}; move it aside (mv {path} {path}.bad) and re-run"
    subprocess.run(f"mv {path} {path}.bad", shell=True, check=True)
    with Store(path) as fresh:   # the next run makes a new database there
        fresh.record(make_run("after"))
        assert fresh.latest_run().run_id == "after"
    # a second damaged file is moved to a name still free
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match=f"mv {path} {path}.bad1\\)"):
        Store(path)


@sqlite_only
def test_damage_met_after_opening_is_one_line_too(tmp_path):
    """Pages of a table overwritten, the schema intact: the file opens, and the first read of the
    damage is the same one line (not a sqlite3.DatabaseError from the middle of the store)."""
    path = tmp_path / "vitrobust.sqlite"
    with Store(path) as s:
        for i in range(6):
            s.record(make_run(f"r{i}"))
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(path.read_bytes())
    data[4 * page:] = bytes([0xA5]) * (len(data) - 4 * page)   # everything past the first pages
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError) as err:
        with Store(path) as s:
            for run in s.list_runs():
                s.load_run(run["run_id"])
    assert str(err.value).startswith(f"{path}: a damaged SQLite database") and "\n" not in str(err.value)


def test_the_runs_command_lists_complete_runs_and_with_all_the_interrupted_one(store, db, capsys):
    from vitrobust.cli import main

    store.record(make_run("done", finished="2026-11-22T01:00:00+00:00"))
    _begin_in_a_child(db.main, "killed")
    assert main(["runs", "--db", str(db.main)]) == 0
    out = capsys.readouterr().out
    assert "done" in out and "complete" in out and "killed" not in out
    assert main(["runs", "--db", str(db.main), "--all"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert "interrupted" in lines["killed"] and "complete" in lines["done"]
