"""The results database on PostgreSQL: every store test again, on a throwaway local server.

A module-scoped fixture runs ``initdb`` and ``pg_ctl`` (PostgreSQL 15 from Debian's packages
where present: ``/usr/lib/postgresql/*/bin``, else whatever is on PATH) in a temporary directory,
listening on 127.0.0.1 only, on a free port, with password (SCRAM) authentication, and stops it at
teardown. Each test gets a fresh database (``db`` below), the same ``db`` interface the tests of
test_store.py use on SQLite, so all of those (but the few about SQLite itself) run here too.

Skipped, with the reason, only when no server binaries or no psycopg can be had (``.ci/run``
installs both); a server that is there but does not start is an error, not a skip.
"""
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

import test_store
from run_factory import clone, find, flip_outcomes, make_run
from test_store import store  # noqa: F401  (the shared tests' fixture, on this module's ``db``)
from vitrobust.gate import gate_main
from vitrobust.record import RunRecord
from vitrobust.store import SCHEMA_VERSION, Store, StoreError, UnknownBaseline

PG_MAJOR = "15"   # what Debian 12 packages and .ci/run installs; another major is used if alone

# Every test of test_store.py that is not about SQLite itself runs here as well, on PostgreSQL.
SHARED = sorted(name for name, test in vars(test_store).items()
                if name.startswith("test_") and callable(test) and not getattr(test, "sqlite_only", False))
globals().update({name: getattr(test_store, name) for name in SHARED})


# -- the server ----------------------------------------------------------------------------
def server_binaries() -> tuple[str, str] | None:
    """initdb and pg_ctl: Debian's /usr/lib/postgresql/<major>/bin (15 first), else PATH."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: (Path(d).parent.name != PG_MAJOR, d))
    for d in dirs:
        initdb, pg_ctl = Path(d) / "initdb", Path(d) / "pg_ctl"
        if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
            return str(initdb), str(pg_ctl)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    return (initdb, pg_ctl) if initdb and pg_ctl else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> list[str]:
    """Local addresses of the sockets listening on TCP ``port`` (from /proc/net/tcp{,6})."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:   # 0A: LISTEN
                if len(address) == 8:    # IPv4, little-endian bytes
                    found.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                else:
                    words = [bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, 32, 8)]
                    found.append(socket.inet_ntop(socket.AF_INET6, b"".join(words)))
    return found


class Server:
    """A throwaway PostgreSQL cluster in ``root``; as the unprivileged ``user`` when run as root
    (initdb refuses to run as root)."""

    def __init__(self, initdb: str, pg_ctl: str, root: Path, as_user: list[str]):
        self.initdb, self.pg_ctl, self.root, self.as_user = initdb, pg_ctl, root, as_user
        self.data, self.log = root / "data", root / "server.log"
        self.user, self.password = "vitrobust", "pw-" + secrets.token_hex(8)
        self.port, self.started, self.icu = None, False, False

    def run(self, *cmd, check=True):
        proc = subprocess.run([*self.as_user, *cmd], capture_output=True, text=True, timeout=180)
        if check and proc.returncode:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                               f"{proc.stdout}{proc.stderr}{log}")
        return proc

    def init(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        base = [self.initdb, "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
                "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C"]
        # An ICU en-US default collation (when the server has ICU): text then sorts as on most
        # real servers, unlike SQLite, so the store's byte-order collation is really tested.
        proc = self.run(*base, "--locale-provider=icu", "--icu-locale=en-US", check=False)
        self.icu = proc.returncode == 0
        if not self.icu:
            shutil.rmtree(self.data, ignore_errors=True)
            self.run(*base)
        pwfile.unlink()

    def start(self) -> None:
        for attempt in range(3):   # a free port can be taken between free_port() and the bind
            self.port = free_port()
            options = (f"-k {self.root} -h 127.0.0.1 -p {self.port} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off")
            proc = self.run(self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w",
                            "-t", "60", "-o", options, "start", check=attempt == 2)
            if proc.returncode == 0:
                self.started = True
                return

    def stop(self) -> None:
        if self.data.joinpath("postmaster.pid").exists() or self.started:
            self.run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
            self.started = False

    def url(self, dbname: str = "postgres", password: str | None = None) -> str:
        password = self.password if password is None else password
        return f"postgresql://{self.user}:{password}@127.0.0.1:{self.port}/{dbname}"

    def sql(self, query: str, params=(), dbname: str = "postgres", url: str | None = None):
        import psycopg

        with psycopg.connect(url or self.url(dbname), autocommit=True) as conn:
            cur = conn.execute(query.replace("?", "%s"), params)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []


def _unprivileged() -> tuple[list[str], str | None] | None:
    """The command prefix that runs as a non-root user, and that user (None: already one)."""
    if os.geteuid() != 0:
        return [], None
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", user, "--"], user
        if shutil.which("setpriv"):
            entry = pwd.getpwnam(user)
            return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
                    "--clear-groups", "--"], user
    return None


@pytest.fixture(scope="module")
def pg_server():
    binaries = server_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin "
                    "or on PATH: apt-get install postgresql (.ci/run does)")
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e .[postgres]")
    switch = _unprivileged()
    if switch is None:
        pytest.skip("running as root with neither runuser nor setpriv, nor a postgres/nobody "
                    "user: initdb refuses to run as root")
    as_user, user = switch
    # /tmp rather than pytest's tmp_path: the server's user must be able to reach the folder.
    root = Path(tempfile.mkdtemp(prefix="vitrobust-pg-", dir="/tmp" if user else None))
    server = Server(*binaries, root, as_user)
    try:
        if user:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


class PostgresDatabases:
    """The ``db`` of test_store.py on the server: each ``fresh()`` is a new database's URL."""

    name = "postgres"

    def __init__(self, server: Server):
        self.server, self.names = server, []
        self.main = self.fresh()

    def fresh(self) -> str:
        name = f"t_{os.getpid()}_{secrets.token_hex(4)}"
        self.server.sql(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return self.server.url(name)

    def sql(self, query: str, params=(), target=None) -> list[tuple]:
        return self.server.sql(query, params, url=target or self.main)

    def drop(self) -> None:
        for name in self.names:
            self.server.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(pg_server):
    databases = PostgresDatabases(pg_server)
    yield databases
    databases.drop()


# -- PostgreSQL only -------------------------------------------------------------------------
def test_the_store_tests_run_here_too():
    assert {"test_record_round_trips_the_run_record", "test_baselines",
            "test_process_killed_mid_record_is_never_read_back",
            "test_ties_go_to_the_run_begun_last"} <= set(SHARED)
    assert "test_database_is_wal" not in SHARED   # SQLite's own
    assert len(SHARED) >= 20


def test_server_listens_on_loopback_only(pg_server):
    assert pg_server.sql("SHOW listen_addresses") == [("127.0.0.1",)]
    assert pg_server.sql("SELECT host(inet_server_addr())") == [("127.0.0.1",)]
    assert pg_server.sql("SHOW server_version")[0][0].split(".")[0].isdigit()
    if Path("/proc/net/tcp").exists():
        assert listening_addresses(pg_server.port) == ["127.0.0.1"]


def test_same_tables_and_columns_as_sqlite(db, tmp_path):
    with Store(db.main), Store(tmp_path / "s.sqlite"):
        pass
    pg = db.sql("SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema()")
    lite = test_store.SQLiteDatabases(tmp_path)
    lite_cols = set()
    for (table,) in lite.sql("SELECT name FROM sqlite_master WHERE type='table'",
                             target=tmp_path / "s.sqlite"):
        for _, column, kind, *_ in lite.sql(f"PRAGMA table_info({table})", target=tmp_path / "s.sqlite"):
            lite_cols.add((table, column, kind))
    # The same tables and columns, plus the rowid SQLite keeps implicitly.
    assert {(t, c) for t, c, _ in pg} == {(t, c) for t, c, _ in lite_cols} | {
        (t, "rowid") for t, _, _ in lite_cols}
    # 8-byte numbers as in SQLite: REAL is double precision, INTEGER is bigint.
    pg_types = {(t, c): k for t, c, k in pg}
    assert {pg_types[t, c] for t, c, k in lite_cols if k == "REAL"} == {"double precision"}
    assert {pg_types[t, c] for t, c, k in lite_cols if k == "INTEGER"} == {"bigint"}
    assert db.sql("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


def test_the_server_collation_is_not_byte_order(pg_server, db):
    """So test_text_sorts_by_code_point would fail without the store's COLLATE "C"."""
    if not pg_server.icu:
        pytest.skip("this server has no ICU: its databases already sort by byte")
    words = db.sql("SELECT w FROM (VALUES ('b'), ('B'), ('a'), ('_z')) v(w) ORDER BY w")
    assert [w for (w,) in words] != sorted(["b", "B", "a", "_z"])


def test_writers_queue_as_in_sqlite(db):
    """A writer waits for another's transaction to end (SQLite's BEGIN IMMEDIATE)."""
    with Store(db.main) as first, Store(db.main) as second:
        done = threading.Event()

        def write():
            second.begin_run(RunRecord("second"))
            done.set()

        with first._transaction():
            first._conn.execute("INSERT INTO runs (run_id, status) VALUES ('first', 'running')")
            thread = threading.Thread(target=write)
            thread.start()
            assert not done.wait(1.0)   # blocked while the first transaction is open
        assert done.wait(30)
        thread.join()
        assert {r["run_id"] for r in first.list_runs(include_incomplete=True)} == {"first", "second"}


def test_no_psycopg_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "psycopg", None)   # import psycopg raises ImportError
    url = "postgresql://ci:hunter2-secret@db.example.org:5432/results"
    with pytest.raises(StoreError) as err:
        Store(url)
    message = str(err.value)
    assert "pip install vitrobust[postgres]" in message and "db.example.org" in message
    assert "\n" not in message and "hunter2" not in message
    assert gate_main(["--baseline", "release", "--db", url]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "pip install vitrobust[postgres]" in stderr
    assert "hunter2" not in stderr and "Traceback" not in stderr


def test_unreachable_or_malformed_url_is_a_one_line_error():
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e .[postgres]")
    port = free_port()   # nothing listens there
    for url in (f"postgresql://ci:hunter2-secret@127.0.0.1:{port}/results",
                "postgresql://ci:hunter2-secret@127.0.0.1:notaport/results"):
        with pytest.raises(StoreError) as err:
            Store(url)
        message = str(err.value)
        assert message.startswith("cannot connect to the PostgreSQL database postgresql://ci@127.0.0.1:")
        assert "\n" not in message and "hunter2" not in message, message


def test_wrong_password_is_a_one_line_error_without_it(pg_server):
    url = pg_server.url(password="wrong-" + secrets.token_hex(4))
    with pytest.raises(StoreError) as err:
        Store(url)
    message = str(err.value)
    assert "password authentication failed" in message and "127.0.0.1" in message
    assert "\n" not in message and "wrong-" not in message and pg_server.password not in message


def test_password_from_the_environment(pg_server, db, monkeypatch):
    """As the README suggests for CI: the URL without its password, PGPASSWORD set."""
    url = db.main.replace(f":{pg_server.password}@", "@")
    monkeypatch.setenv("PGPASSWORD", "not-" + pg_server.password)
    with pytest.raises(StoreError, match="password authentication failed"):
        Store(url)
    monkeypatch.setenv("PGPASSWORD", pg_server.password)
    with Store(url) as s:
        s.record(RunRecord("env"))
        assert s.load_run("env") == RunRecord("env")


def test_messages_never_hold_the_password(pg_server, db):
    with Store(db.main) as s:
        assert s.where == db.main.replace(f":{pg_server.password}@", "@") and s.path is None
        with pytest.raises(UnknownBaseline) as err:
            s.baseline_run("nope")
    assert "127.0.0.1" in str(err.value) and pg_server.password not in str(err.value)


def test_a_connection_lost_midway_is_a_one_line_error(pg_server, db):
    """The server ends the session (a restart, a failover): the next call is one line naming
    the database without its password, not a psycopg traceback."""
    with Store(db.main) as s:
        s.record(make_run("r1"))
        (backend,) = s._conn.execute("SELECT pg_backend_pid()").fetchone()
        pg_server.sql("SELECT pg_terminate_backend(?)", (backend,))
        with pytest.raises(StoreError) as err:
            s.list_runs()
        with pytest.raises(StoreError):
            s.record(make_run("r2"))
    message = str(err.value)
    assert message.startswith(f"cannot use {s.where} as a results database: ")
    assert "\n" not in message and pg_server.password not in message


def test_an_empty_database_is_not_a_results_database(db, capsys):
    with pytest.raises(StoreError, match="no results database at postgresql://vitrobust@127.0.0.1"):
        Store(db.main, create=False)
    assert db.sql("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()") == [(0,)]
    assert gate_main(["--baseline", "release", "--db", db.main]) == 2
    assert "no results database" in capsys.readouterr().err


def test_history_baselines_and_gate_through_a_url(pg_server, db, tmp_path, capsys):
    """A CI job records a run and saves a baseline; later jobs (new connections, other
    processes) read the history back, gate against it, and re-render a report."""
    from vitrobust import cli
    from vitrobust.run import RunOptions

    # The plugin keeps --vitrobust-db as given: a URL is not made a path.
    options = {"vitrobust_db": db.main, "vitrobust_report_dir": "reports"}
    config = SimpleNamespace(getoption=lambda name: options.get(name), rootpath=tmp_path,
                             invocation_params=SimpleNamespace(args=[]))
    assert RunOptions.from_config(config, started="").db == db.main

    base = make_run("base", finished="2026-11-22T01:00:00+00:00")
    with Store(RunOptions.from_config(config, started="").db) as job1:
        job1.record(base)
        job1.save_baseline("release", "base")
    with Store(db.main, create=False) as job2:
        assert [r["run_id"] for r in job2.list_runs()] == ["base"]
        assert job2.baseline_run("release") == base
        assert [b["name"] for b in job2.list_baselines()] == ["release"]
        job2.record(clone(base, "same"))
    assert gate_main(["--baseline", "release", "--db", db.main]) == 0
    assert "no regressions: run same against baseline 'release'" in capsys.readouterr().out

    worse = clone(base, "worse")
    worse.finished = "2026-11-22T03:00:00+00:00"
    flip_outcomes(find(worse, "asr(deit_tiny:int8, sp)"), 30, to=1)
    with Store(db.main) as job3:
        job3.record(worse)
        assert job3.latest_run() == worse
    # The command line, in another process, as a CI step runs it.
    proc = subprocess.run([sys.executable, "-m", "vitrobust.cli", "gate", "--baseline", "release",
                           "--db", db.main], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "asr(deit_tiny:int8, sp)" in proc.stdout and "1 regression(s): run worse" in proc.stdout
    assert pg_server.password not in proc.stdout + proc.stderr

    assert cli.main(["report", "base", "--db", db.main, "--out", str(tmp_path / "out")]) == 0
    assert "report:" in capsys.readouterr().out
    report = next((tmp_path / "out").rglob("report.json"))
    assert '"run_id": "base"' in report.read_text()
    assert cli.main(["report", "ghost", "--db", db.main, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "run 'ghost' is not recorded" in err and pg_server.password not in err
