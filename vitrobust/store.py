"""Results database: every run, its models, measurements and checks, and named baselines.

SQLite (stdlib ``sqlite3``) in WAL mode, default path ``reports/vitrobust.sqlite``; or, given a
``postgresql://`` URL, the same tables and the same queries in PostgreSQL (``psycopg``, the
``vitrobust[postgres]`` extra), for CI runners that are thrown away after each job. What differs
between the two is in :mod:`vitrobust.store_backend`. A run is
written in two steps: :meth:`Store.begin_run` inserts a row with status ``running`` when the
session's first check starts, and :meth:`Store.record` writes the models, measurements and
checks *and* flips the status to ``complete`` in one transaction at its end. Readers
(:meth:`load_run`, :meth:`latest_run`, :meth:`baseline_run`, so the gate) only ever see complete
runs, so a process killed mid-record is never read back as a result: SQLite rolls the open
transaction back on the next open (PostgreSQL when the connection drops).

A killed session leaves its ``running`` row. The row holds the process that began it (pid, host,
and on Linux the boot and the process's start time, so a reused pid is not taken for it), and
:meth:`list_runs` shows ``interrupted`` for a row whose process is gone. That is decided when
read, not written back: no reader changes the database, no stale row needs a sweep, and the
``status`` column keeps the two values every version of the schema allows. A row begun on
another host stays ``running``: from here, its process cannot be seen.

It stores and returns :class:`vitrobust.record.RunRecord` (schema in ``docs/record.md``): what
:meth:`load_run` returns equals what :meth:`record` was given. The fields worth querying in SQL
(keys, kinds, values, counts, verdicts) are real columns; every other field of a record goes to
the row's ``extra`` JSON column, so a field added to the record later round-trips without a
schema change. The store writes what it is given and invents nothing (times are the producer's:
:func:`vitrobust.record.local_time_iso`). No torch.
"""
from __future__ import annotations

import functools
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from . import faults
from .liveness import process_gone, this_process
from .record import RunRecord, new_run_id
from .store_backend import StoreError, open_database

DEFAULT_DB = Path("reports") / "vitrobust.sqlite"
SCHEMA_VERSION = 1   # of the database tables, not of the run record (record.SCHEMA_VERSION)

__all__ = ["DEFAULT_DB", "SCHEMA_VERSION", "Store", "StoreError", "UnknownBaseline", "UnknownRun"]


class UnknownRun(StoreError):
    """No complete run with that id (it may never have finished)."""


class UnknownBaseline(StoreError):
    """No baseline of that name."""


# Fields kept as real columns so they can be queried; the rest of each record goes to ``extra``.
_RUN_COLS = ("run_id", "started", "finished", "git_commit")
_RUN_JSON = ("versions", "config", "artifacts", "warnings")
_MODEL_COLS = ("weight_hash", "params", "size_mb", "gflops", "throughput", "clean_acc")
_MEAS_COLS = ("key", "kind", "spec", "source", "target", "attack", "strategy", "data",
              "value", "k", "n", "robust_acc", "clean_acc")
_CHECK_COLS = ("spec", "nodeid", "claim", "status", "outcome", "xfail_reason", "message",
               "statistic", "p_value")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, started TEXT, finished TEXT, git_commit TEXT,
    versions TEXT, config TEXT, artifacts TEXT, warnings TEXT, extra TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'complete')));
CREATE TABLE IF NOT EXISTS models (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE, seq INTEGER NOT NULL,
    name TEXT NOT NULL, weight_hash TEXT, params INTEGER, size_mb REAL, gflops REAL,
    throughput REAL, clean_acc REAL, meta TEXT, extra TEXT, PRIMARY KEY (run_id, name));
CREATE TABLE IF NOT EXISTS measurements (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE, seq INTEGER NOT NULL,
    key TEXT NOT NULL, kind TEXT, spec TEXT, source TEXT, target TEXT, attack TEXT,
    threat_model TEXT, strategy TEXT, data TEXT, value REAL, k INTEGER, n INTEGER,
    lo REAL, hi REAL, robust_acc REAL, clean_acc REAL, outcomes TEXT, extra TEXT,
    PRIMARY KEY (run_id, seq));
CREATE INDEX IF NOT EXISTS measurements_key ON measurements (key, run_id);
CREATE TABLE IF NOT EXISTS checks (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE, seq INTEGER NOT NULL,
    spec TEXT, nodeid TEXT, check_text TEXT, params TEXT, claim TEXT, status TEXT,
    outcome TEXT, xfail_reason TEXT, message TEXT, "values" TEXT, statistic TEXT,
    p_value REAL, extra TEXT, PRIMARY KEY (run_id, seq));
CREATE TABLE IF NOT EXISTS baselines (
    name TEXT PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs(run_id), created TEXT NOT NULL);
"""


def now_iso() -> str:
    """UTC time to the second: when a baseline was saved (the store's own stamp)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _dump(value) -> str | None:
    # Insertion order is kept (no sort_keys): a check's params print in the spec's order.
    return None if value is None else json.dumps(value, default=_json_default)


def _json_default(value):
    """numpy scalars and arrays as plain numbers and lists; anything else as its text."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _scalar(value):
    """numpy scalars (np.int64 k, n, ...) as plain Python numbers, which sqlite3 can bind."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def _load(text):
    return None if text is None else json.loads(text)


def _pop_cols(entry: dict, cols) -> list:
    return [_scalar(entry.pop(c, None)) for c in cols]


def _translated(method):
    """Driver errors (a damaged file, a lost connection) as one-line StoreErrors
    naming the database, whichever method met them."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except self._conn.errors as exc:
            raise StoreError(self._conn.describe(exc)) from None
    return wrapper




class Store:
    """The results database at ``path``: an SQLite file (created with its parent folder unless
    ``create=False``) or a ``postgresql://user:password@host:port/dbname`` URL (its tables are
    created unless ``create=False``). ``where`` names it in messages (never with a password);
    ``path`` is the SQLite file (None for PostgreSQL)."""

    def __init__(self, path: str | os.PathLike = DEFAULT_DB, *, create: bool = True):
        self._conn = open_database(path, create=create)
        self.path: Path | None = self._conn.path
        self.where: str = self._conn.where
        try:
            self._init_schema()
        except self._conn.errors as exc:
            self._conn.close()
            raise StoreError(self._conn.describe(exc)) from None
        except StoreError:
            self._conn.close()
            raise

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _init_schema(self) -> None:
        with self._transaction():
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self._conn.execute(self._conn.create_table_sql(statement))
            row = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
            if row[0] is None:
                self._conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise StoreError(f"{self.where} has schema v{row[0]}, newer than this vitrobust "
                                 f"(v{SCHEMA_VERSION}); upgrade vitrobust")

    def _transaction(self):
        # Takes the write lock up front, so two writers queue instead of failing half-way; any
        # exception rolls everything back.
        return self._conn.transaction(write=True)

    # -- writing ---------------------------------------------------------------------------
    @_translated
    def begin_run(self, run: RunRecord) -> str:
        """Insert a ``running`` row for ``run`` (its header: id, started, commit, versions,
        config; models and results may still be empty) and for the process calling this (see
        :func:`this_process`); returns its run id, a new one
        (:func:`vitrobust.record.new_run_id`) when the record has none."""
        run_id = run.run_id or new_run_id()
        with self._transaction():
            if self._status(run_id) is not None:
                raise StoreError(f"run {run_id} already exists in {self.where}")
            head = run.to_dict()
            self._conn.execute(
                "INSERT INTO runs (run_id, started, git_commit, versions, config, extra, status) "
                "VALUES (?, ?, ?, ?, ?, ?, 'running')",
                (run_id, head["started"], head["git_commit"], _dump(head["versions"]),
                 _dump(head["config"]), _dump({"process": this_process()})))
        return run_id

    @_translated
    def discard_run(self, run_id: str) -> None:
        """Delete run ``run_id`` if it is still ``running`` (a session that had nothing to
        record); a complete run is never deleted."""
        with self._transaction():
            self._conn.execute("DELETE FROM runs WHERE run_id=? AND status='running'", (run_id,))

    @_translated
    def record(self, run: RunRecord) -> str:
        """Write a whole run record in one transaction and mark it complete; returns its id.

        The run may or may not have been begun with :meth:`begin_run`; recording a run id that
        is already complete is an error (results are immutable once recorded).
        """
        if not run.run_id:
            raise StoreError("a run record needs a run_id to be recorded "
                             "(vitrobust.record.new_run_id(), or the id begin_run returned)")
        run_id = run.run_id
        data = run.to_dict()
        models, measurements, checks = data.pop("models"), data.pop("measurements"), data.pop("checks")
        cols = [data.pop(c) for c in _RUN_COLS]
        blobs = [_dump(data.pop(c)) for c in _RUN_JSON]
        values = (cols[1], cols[3], *blobs, _dump(data))   # data: the fields without a column
        with self._transaction():
            status = self._status(run_id)
            if status == "complete":
                raise StoreError(f"run {run_id} is already recorded in {self.where}")
            if status is None:
                self._conn.execute(
                    "INSERT INTO runs (run_id, started, git_commit, versions, config, artifacts,"
                    " warnings, extra, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running')",
                    (run_id, *values))
            else:
                self._conn.execute(
                    "UPDATE runs SET started=?, git_commit=?, versions=?, config=?, artifacts=?,"
                    " warnings=?, extra=? WHERE run_id=?", (*values, run_id))
            self._insert_models(run_id, models)
            self._insert_measurements(run_id, measurements)
            self._insert_checks(run_id, checks)
            faults.point("db-transaction")
            # Last statement of the transaction: only now does the run become visible.
            self._conn.execute("UPDATE runs SET status='complete', finished=? WHERE run_id=?",
                               (cols[2], run_id))
        return run_id

    def _insert_models(self, run_id: str, models: dict) -> None:
        for seq, (name, info) in enumerate(models.items()):
            info.pop("name", None)   # the column (the dict key)
            cols = _pop_cols(info, _MODEL_COLS)
            meta = info.pop("meta", None)
            self._conn.execute(
                "INSERT INTO models (run_id, seq, name, weight_hash, params, size_mb, gflops,"
                " throughput, clean_acc, meta, extra) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, seq, name, *cols, _dump(meta), _dump(info)))

    def _insert_measurements(self, run_id: str, measurements: list) -> None:
        for seq, meas in enumerate(measurements):
            cols = _pop_cols(meas, _MEAS_COLS)
            interval = meas.pop("interval", None)
            lo, hi = (None, None) if interval is None else interval
            threat = meas.pop("threat_model", None)
            outcomes = meas.pop("outcomes", None)
            self._conn.execute(
                "INSERT INTO measurements (run_id, seq, key, kind, spec, source, target, attack,"
                " strategy, data, value, k, n, robust_acc, clean_acc, lo, hi, threat_model,"
                " outcomes, extra) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, seq, *cols, _scalar(lo), _scalar(hi), _dump(threat),
                 None if outcomes is None else
                 json.dumps([None if o is None else _scalar(o) for o in outcomes]), _dump(meas)))

    def _insert_checks(self, run_id: str, checks: list) -> None:
        for seq, check in enumerate(checks):
            cols = _pop_cols(check, _CHECK_COLS)
            text, params, values = check.pop("check"), check.pop("params"), check.pop("values")
            self._conn.execute(
                "INSERT INTO checks (run_id, seq, spec, nodeid, claim, status, outcome,"
                " xfail_reason, message, statistic, p_value, check_text, params, \"values\","
                " extra) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, seq, *cols, text, _dump(params), _dump(values), _dump(check)))

    @_translated
    def save_baseline(self, name: str, run_id: str) -> None:
        """Point baseline ``name`` at complete run ``run_id`` (``"latest"`` allowed); replaces."""
        if run_id == "latest":
            latest = self._latest_id()
            if latest is None:
                raise UnknownRun(f"no complete run in {self.where} to save as baseline {name!r}")
            run_id = latest
        with self._transaction():
            if self._status(run_id) != "complete":
                raise UnknownRun(f"no complete run {run_id!r} in {self.where}")
            self._conn.execute("INSERT INTO baselines (name, run_id, created) VALUES (?, ?, ?) "
                               "ON CONFLICT (name) DO UPDATE SET run_id=excluded.run_id, "
                               "created=excluded.created", (name, run_id, now_iso()))

    # -- reading ---------------------------------------------------------------------------
    def _status(self, run_id: str) -> str | None:
        row = self._conn.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return None if row is None else row[0]

    def _latest_id(self) -> str | None:
        row = self._conn.execute(
            "SELECT run_id FROM runs WHERE status='complete' "
            "ORDER BY finished DESC NULLS LAST, started DESC NULLS LAST, rowid DESC LIMIT 1"
        ).fetchone()
        return None if row is None else row[0]

    @_translated
    def load_run(self, run_id: str) -> RunRecord:
        """The complete run ``run_id``, equal to what was recorded; :class:`UnknownRun` otherwise."""
        # One read transaction, so a concurrent writer cannot show us half of another state.
        with self._conn.transaction(write=False):
            return RunRecord.from_dict(self._read_run(run_id))

    def _read_run(self, run_id: str) -> dict:
        """The run as :meth:`RunRecord.to_dict` wrote it (rows of older versions included)."""
        row = self._conn.execute("SELECT * FROM runs WHERE run_id=? AND status='complete'",
                                 (run_id,)).fetchone()
        if row is None:
            raise UnknownRun(f"run {run_id!r} {self._why_not(run_id)} in {self.where}")
        run = _load(row["extra"]) or {}
        run.update({c: row[c] for c in _RUN_COLS})
        run.update({c: _load(row[c]) for c in _RUN_JSON})
        run["models"] = {}
        for m in self._conn.execute("SELECT * FROM models WHERE run_id=? ORDER BY seq", (run_id,)):
            info = _load(m["extra"]) or {}
            info.update({c: m[c] for c in _MODEL_COLS}, meta=_load(m["meta"]))
            run["models"][m["name"]] = info
        run["measurements"] = []
        for m in self._conn.execute("SELECT * FROM measurements WHERE run_id=? ORDER BY seq",
                                    (run_id,)):
            meas = _load(m["extra"]) or {}
            meas.update({c: m[c] for c in _MEAS_COLS}, threat_model=_load(m["threat_model"]),
                        interval=None if m["lo"] is None else [m["lo"], m["hi"]],
                        outcomes=_load(m["outcomes"]))
            run["measurements"].append(meas)
        run["checks"] = []
        for c in self._conn.execute("SELECT * FROM checks WHERE run_id=? ORDER BY seq", (run_id,)):
            check = _load(c["extra"]) or {}
            check.update({col: c[col] for col in _CHECK_COLS}, check=c["check_text"],
                         params=_load(c["params"]), values=_load(c["values"]))
            run["checks"].append(check)
        return run

    def _why_not(self, run_id: str) -> str:
        row = self._conn.execute("SELECT status, extra FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            return "is not recorded"
        process = (_load(row["extra"]) or {}).get("process")
        if process_gone(process):
            return (f"never completed: it was interrupted (its process {process['pid']} on "
                    f"{process['host']} is gone)")
        if isinstance(process, dict):
            return f"never completed: it is still running, or was interrupted on {process.get('host')}"
        return "never completed (interrupted?)"

    @_translated
    def latest_run(self) -> RunRecord | None:
        """The most recently finished complete run, or None when there is none."""
        run_id = self._latest_id()
        return None if run_id is None else self.load_run(run_id)

    @_translated
    def baseline_run(self, name: str) -> RunRecord:
        """The run that baseline ``name`` points at; :class:`UnknownBaseline` otherwise."""
        row = self._conn.execute("SELECT run_id FROM baselines WHERE name=?", (name,)).fetchone()
        if row is None:
            known = ", ".join(b["name"] for b in self.list_baselines()) or "none"
            raise UnknownBaseline(f"unknown baseline {name!r} in {self.where} (known: {known})")
        return self.load_run(row[0])

    @_translated
    def list_baselines(self) -> list[dict]:
        """``{name, run_id, created}`` per baseline, by name."""
        rows = self._conn.execute("SELECT name, run_id, created FROM baselines ORDER BY name")
        return [dict(r) for r in rows]

    @_translated
    def list_runs(self, include_incomplete: bool = False) -> list[dict]:
        """Summaries (run_id, started, finished, status, git_commit, counts, and for a run not
        complete the pid and host that began it), newest first. ``include_incomplete`` adds
        runs not complete: ``interrupted`` when their process is gone (:func:`process_gone`),
        else ``running``."""
        where = "" if include_incomplete else "WHERE r.status='complete'"
        rows = self._conn.execute(
            "SELECT r.run_id, r.started, r.finished, r.status, r.git_commit, "
            "(SELECT count(*) FROM measurements m WHERE m.run_id=r.run_id) AS measurements, "
            "(SELECT count(*) FROM checks c WHERE c.run_id=r.run_id) AS checks, "
            "(SELECT count(*) FROM checks c WHERE c.run_id=r.run_id AND c.outcome='failed') "
            "AS failed, CASE WHEN r.status='complete' THEN NULL ELSE r.extra END AS extra "
            f"FROM runs r {where} ORDER BY r.started DESC NULLS LAST, r.rowid DESC")
        out = []
        for row in rows:
            run = dict(row)
            process = (_load(run.pop("extra")) or {}).get("process") or {}
            if run["status"] != "complete":
                run.update(pid=process.get("pid"), host=process.get("host"))
                if process_gone(process):
                    run["status"] = "interrupted"
            out.append(run)
        return out
