"""The database under :class:`vitrobust.store.Store`: SQLite at a path, or PostgreSQL at a URL.

The store's schema and queries are written once, in SQL both databases run (``?`` placeholders,
``INSERT ... ON CONFLICT ... DO UPDATE``, ``NULLS LAST``, ``rowid``). Every difference left is
here, in the two connection classes:

====================  =============================  ==========================================
                      SQLite (a path; the default)   PostgreSQL (``postgresql://...``)
====================  =============================  ==========================================
driver                ``sqlite3`` (stdlib)           ``psycopg`` 3 (``vitrobust[postgres]``)
placeholders          ``?``                          ``?`` rewritten to ``%s``
connection            WAL, foreign keys on           autocommit, no server-side prepares
write transaction     ``BEGIN IMMEDIATE``            ``BEGIN`` + one advisory lock (writers
                                                     queue, as SQLite's write lock makes them)
read transaction      ``BEGIN`` (a WAL snapshot)     ``BEGIN ISOLATION LEVEL REPEATABLE READ``
column types          as written                     ``REAL`` -> ``DOUBLE PRECISION``,
                                                     ``INTEGER`` -> ``BIGINT`` (SQLite's 8-byte
                                                     numbers), ``TEXT`` -> ``TEXT COLLATE "C"``
                                                     (SQLite's byte-order comparison)
``rowid``             implicit in every table        an identity column ``rowid`` in every table
rows                  ``sqlite3.Row``                :class:`Row` (by position and by name)
errors                ``sqlite3.DatabaseError``      ``psycopg.Error``
a damaged database    one line: move the file aside  (the server's business)
``create=False``      the file must exist            the vitrobust tables must exist
====================  =============================  ==========================================

Messages name a database by :attr:`Database.where`: the path, or the URL without its password.
Every driver error becomes one line (:meth:`Database.describe`); for an SQLite file that is not
a database or is damaged (garbage, truncated), the line says how to move it aside, since nothing
in it can be trusted and the next run makes a new one.
"""
from __future__ import annotations

import re
import shlex
import sqlite3
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote

from .errors import VitrobustError

URL_SCHEMES = ("postgresql://", "postgres://")
PG_CONNECT_TIMEOUT = 10          # seconds, unless the URL sets connect_timeout
PG_WRITE_LOCK = 0x76697472       # "vitr": the advisory lock every writing transaction holds


class StoreError(VitrobustError):
    """A database that cannot be opened or used; the message is one line."""


def is_url(target) -> bool:
    """Whether ``target`` names a PostgreSQL database rather than an SQLite file."""
    return isinstance(target, str) and target.lower().startswith(URL_SCHEMES)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def open_database(target, *, create: bool = True) -> "Database":
    """A connection to ``target``: a ``postgresql://`` URL, else an SQLite path. With
    ``create=False`` a database vitrobust never wrote to is a :class:`StoreError`."""
    return (PostgresDatabase if is_url(target) else SQLiteDatabase)(target, create=create)


class Database:
    """One connection; :class:`vitrobust.store.Store` runs everything through these methods."""

    where: str                       # for messages: never holds a password
    path: Path | None = None         # the SQLite file
    errors: tuple = ()               # what the driver raises

    def execute(self, sql: str, params=()):
        """Run one statement (``?`` placeholders); a cursor to iterate or ``fetchone()``."""
        raise NotImplementedError

    def create_table_sql(self, statement: str) -> str:
        """One statement of the store's schema, in this database's types."""
        return statement

    def describe(self, exc: BaseException) -> str:
        """A driver error as one line naming this database."""
        return f"cannot use {self.where} as a results database: {one_line(exc)}"

    @contextmanager
    def transaction(self, write: bool):
        """One transaction: committed at the end, rolled back on any exception."""
        self._begin(write)
        try:
            yield
        except BaseException:
            try:
                self.execute("ROLLBACK")
            except self.errors:   # a damaged file or a lost connection: the first error says why
                pass
            raise
        self.execute("COMMIT")

    def _begin(self, write: bool) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._conn.close()


class SQLiteDatabase(Database):
    errors = (sqlite3.DatabaseError,)

    def __init__(self, path, *, create: bool = True):
        self.path = Path(path)
        self.where = str(self.path)
        if not self.path.exists():
            if not create:
                raise StoreError(f"no results database at {self.path}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: transactions are ours (BEGIN/COMMIT), whatever Python's
            # implicit-transaction rules are.
            self._conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(self.describe(exc)) from None

    def execute(self, sql: str, params=()):
        return self._conn.execute(sql, params)

    def describe(self, exc: BaseException) -> str:
        damage = _sqlite_damage(exc)
        if damage is None:
            return super().describe(exc)
        return (f"{self.where}: {damage} ({one_line(exc)}); move it aside "
                f"({_move_aside(self.path)}) and re-run")

    def _begin(self, write: bool) -> None:
        # IMMEDIATE takes the write lock up front, so two writers queue instead of failing
        # half-way; a plain BEGIN reads one snapshot.
        self.execute("BEGIN IMMEDIATE" if write else "BEGIN")


_NOTADB, _CORRUPT = 26, 11   # SQLite's primary result codes SQLITE_NOTADB, SQLITE_CORRUPT


def _sqlite_damage(exc: BaseException) -> str | None:
    """What is wrong with the file, when ``exc`` says it is not (or no longer) a database."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(exc).lower()
    if code == _NOTADB or "not a database" in text:
        return "not a SQLite database"
    if code == _CORRUPT or "malformed" in text:
        return "a damaged SQLite database"
    return None


def _move_aside(path: Path) -> str:
    """The shell command that moves the file to a free ``.bad`` name. (Its ``-wal`` and ``-shm``
    companions, if any, may stay: SQLite deletes a WAL it finds beside an empty database file.)"""
    bad, n = Path(f"{path}.bad"), 1
    while bad.exists():
        bad, n = Path(f"{path}.bad{n}"), n + 1
    return f"mv {shlex.quote(str(path))} {shlex.quote(str(bad))}"


def redacted_url(url: str) -> str:
    """``scheme://user@host:port/dbname``: no password, no query string (it may hold one)."""
    scheme, _, rest = url.partition("://")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    dbname = path.split("?", 1)[0]
    return f"{scheme}://{user + '@' if at and user else ''}{hostport}/{dbname}".rstrip("/")


def _url_password(url: str) -> str | None:
    netloc = url.partition("://")[2].partition("/")[0].partition("?")[0]
    userinfo = netloc.rpartition("@")[0]
    return unquote(userinfo.partition(":")[2]) if ":" in userinfo else None


class Row:
    """A PostgreSQL result row read by position or by column name, as ``sqlite3.Row`` is
    (``dict(row)`` works too)."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict, values):
        self._index, self._values = index, values

    def __getitem__(self, key):
        return self._values[key if isinstance(key, int) else self._index[key]]

    def keys(self) -> list:
        return list(self._index)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self):
        return iter(self._values)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._index, self._values))!r})"


def _row_factory(cursor):
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(index, values)


# A quoted string or identifier (left alone), a ? placeholder, or a % (escaped for psycopg).
_TOKEN = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*")|(\?)|(%)""")


@lru_cache(maxsize=256)
def _pg_sql(sql: str) -> str:
    return _TOKEN.sub(lambda m: m.group(1) or ("%s" if m.group(2) else "%%"), sql)


def _pg_param(value):
    return int(value) if isinstance(value, bool) else value   # SQLite stores True as 1


class PostgresDatabase(Database):
    def __init__(self, url: str, *, create: bool = True):
        self.where = redacted_url(url)
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
        except ImportError:
            raise StoreError(f"{self.where} is a PostgreSQL database, which needs psycopg: "
                             "pip install vitrobust[postgres]") from None
        self.errors = (psycopg.Error,)
        password = _url_password(url)
        try:
            info = conninfo_to_dict(url)
            info.setdefault("connect_timeout", PG_CONNECT_TIMEOUT)
            # prepare_threshold=None: no server-side prepared statements (poolers such as
            # PgBouncer in transaction mode do not keep them).
            self._conn = psycopg.connect(**info, autocommit=True, prepare_threshold=None,
                                         row_factory=_row_factory)
        except psycopg.Error as exc:
            reason = one_line(exc)
            if password:
                reason = reason.replace(password, "***")
            raise StoreError(f"cannot connect to the PostgreSQL database {self.where}: "
                             f"{reason}") from None
        if not create:
            try:
                (exists,) = self.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
            except psycopg.Error as exc:
                self.close()
                raise StoreError(f"cannot use {self.where} as a results database: "
                                 f"{one_line(exc)}") from None
            if not exists:
                self.close()
                raise StoreError(f"no results database at {self.where} (no vitrobust tables)")

    def execute(self, sql: str, params=()):
        return self._conn.execute(_pg_sql(sql), tuple(map(_pg_param, params)))

    def create_table_sql(self, statement: str) -> str:
        statement = re.sub(r"\bREAL\b", "DOUBLE PRECISION", statement)
        statement = re.sub(r"\bINTEGER\b", "BIGINT", statement)
        statement = re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', statement)
        if re.match(r"\s*CREATE TABLE\b", statement):
            # SQLite's implicit rowid (insertion order, kept by UPDATE), as the last column so
            # INSERTs without a column list fill the same columns in both.
            body = statement.rstrip()
            assert body.endswith(")"), statement
            statement = body[:-1] + ", rowid BIGINT GENERATED ALWAYS AS IDENTITY)"
        return statement

    def _begin(self, write: bool) -> None:
        if write:
            self.execute("BEGIN")
            self.execute("SELECT pg_advisory_xact_lock(?)", (PG_WRITE_LOCK,))
        else:
            self.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
