"""The membership store's back-end: where the database is, and who may use it.

Everything below the membership logic of :mod:`target_braze_audience.store`:

- the `store_url` setting resolved to a SQLAlchemy URL, and rendered with every password
  form masked (:func:`resolve_store_url`, :func:`safe_store_url`);
- the engine and its one connection: SQLite pragmas and transaction control, the file-level
  failures of SQLite named with the file (:func:`sqlite_problem`), PostgreSQL's
  ``application_name``;
- the schema (:mod:`target_braze_audience.store_schema`), created under a PostgreSQL lock;
- locking: the SQLite ``flock``, PostgreSQL's store-wide and per-audience advisory locks;
- the dry-run scratch file (a dry run on a SQLite store that does not exist yet never
  creates it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import typing as t
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from target_braze_audience.store_schema import metadata, temp_metadata

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]

DEFAULT_STORE_PATH = ".braze_audience_store.sqlite"


class StoreBusyError(Exception):
    """Another run is using the same store."""


class AudienceBusyError(StoreBusyError):
    """Audiences of this run's input were held by another run (shared PostgreSQL store)."""


class StoreUnusableError(Exception):
    """The SQLite store file cannot be read or written (corrupt, truncated, read-only)."""


#: PostgreSQL advisory lock keys (documented in the README; other tools may look for them).
#: The store-wide lock (one bigint key): every run takes it SHARED, an `exclusive` run (and
#: every run of versions before concurrent runners) takes it EXCLUSIVE.
STORE_LOCK_KEY = 7405142001
#: Per-audience locks use the two-int form (AUDIENCE_LOCK_CLASS, audience_lock_key(name)).
AUDIENCE_LOCK_CLASS = 7405142
#: Schema creation is serialised by a transaction lock on this key (two runners starting at
#: once on an empty database would otherwise both CREATE the same tables).
SCHEMA_LOCK_KEY = 7405142000


def audience_lock_key(audience: str) -> int:
    """Stable 31-bit key of `audience`'s advisory lock (the same in every process).

    A collision between two audiences only serialises them (a run holding one is refused
    the other, naming it): safe, and unlikely (about n^2 / 2^32 for n audiences).
    """
    return int.from_bytes(hashlib.blake2b(audience.encode(), digest_size=4).digest(), "big") & (
        0x7FFFFFFF
    )


def application_name() -> str:
    """How this run shows in `pg_stat_activity` (and in another run's refusal message).

    PostgreSQL keeps 63 bytes: the host name is shortened to fit, pid and start time stay.
    """
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    head, tail = f"target-braze-audience pid={os.getpid()} host=", f" started={started}"
    room = max(63 - len(head) - len(tail), 8)
    return head + socket.gethostname()[:room] + tail


_RESTORE = (
    "restore it from a backup, or move it aside to start a new store (audiences then count "
    "as new: `backfill_existing_users` decides whether their current members are re-sent)"
)
# What SQLite says -> what the store file's owner can do about it.
_SQLITE_PROBLEMS = (
    ("file is not a database", f"is not a SQLite database (corrupt or another file): {_RESTORE}"),
    ("database disk image is malformed", f"is damaged (truncated or corrupt): {_RESTORE}"),
    (
        "readonly database",
        "cannot be written: make the file and its directory writable by this user, or point "
        "`store_url` at a writable path",
    ),
    (
        "unable to open database file",
        "cannot be opened: check that its directory exists and is writable by this user, or "
        "point `store_url` elsewhere",
    ),
)


def sqlite_problem(path: str, exc: BaseException) -> StoreUnusableError | None:
    """One clear error naming the store file for SQLite's file-level failures, else None."""
    text = str(exc).lower()
    for needle, what in _SQLITE_PROBLEMS:
        if needle in text:
            return StoreUnusableError(f"The membership store {path} {what}.")
    return None


# libpq keywords that open a key=value connection string ("host=db password=...").
_CONNINFO = re.compile(
    r"^\s*(host|hostaddr|port|dbname|user|password|passfile|service|sslmode|options)\s*=", re.I
)
# Query keys that carry a credential (password, sslpassword, ...) or point at one.
_SECRET_KEY = re.compile(r"pass|secret|token|key", re.I)


def _store_url_error(reason: str) -> ValueError:
    # Never repeat the value: it may hold a password.
    return ValueError(
        f"Setting `store_url` {reason} (its value is not shown: it may hold a password)"
    )


def resolve_store_url(store_url: str | None, cwd: Path | None = None) -> URL:
    """Turn the `store_url` setting into a SQLAlchemy URL.

    No value: ``.braze_audience_store.sqlite`` in the working directory. A libpq
    key=value string (``host=db dbname=x password=...``) is PostgreSQL; any other value
    without ``://`` is a SQLite file path. ``postgresql://`` and ``postgres://`` use psycopg 3.
    """
    value = (store_url or "").strip() or DEFAULT_STORE_PATH
    if "://" in value:
        return _database_url(value)
    if _CONNINFO.match(value):
        _require_psycopg()
        return _conninfo_url(value)
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = (cwd or Path.cwd()) / path
    return URL.create("sqlite+pysqlite", database=str(path))


def _database_url(value: str) -> URL:
    """Parse a ``scheme://`` store URL: SQLite or PostgreSQL (psycopg 3) only."""
    try:
        url = make_url(value)
    except (ValueError, sa.exc.ArgumentError):
        # SQLAlchemy's message quotes the whole URL, password included.
        raise _store_url_error("is not a valid database URL") from None
    if url.drivername in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in {"sqlite", "postgresql"}:
        msg = (
            f"store_url: unsupported database '{url.get_backend_name()}' "
            "(use a SQLite path or a postgresql:// URL)"
        )
        raise ValueError(msg)
    if url.get_driver_name() == "psycopg":
        _require_psycopg()
    return url


def _require_psycopg() -> None:
    if importlib.util.find_spec("psycopg") is None:
        # psycopg is an optional extra: say how to get it instead of SQLAlchemy's bare import error.
        msg = (
            "store_url: a PostgreSQL store needs the PostgreSQL driver, which is not installed: "
            "pip install 'target-braze-audience[postgres]'"
        )
        raise ValueError(msg)


def _conninfo_url(value: str) -> URL:
    """Turn a libpq key=value connection string into a psycopg URL (libpq reads its query)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(value)
    except Exception:  # libpq's message quotes the string
        raise _store_url_error("is not a valid libpq key=value connection string") from None
    return URL.create("postgresql+psycopg", query={k: str(v) for k, v in params.items()})


def _is_conninfo(value: str) -> bool:
    """Tell whether libpq would expand this `dbname` (it holds "=" or a URI) into a conninfo."""
    return "=" in value or "://" in value


def safe_store_url(url: URL) -> str:
    """Render the store URL for logs and errors, every credential form libpq accepts masked.

    A password can sit in the userinfo (``user:pw@``), in query keys (``?password=``,
    ``?sslpassword=``) and inside a ``dbname`` that is itself a connection string.
    """
    if url.get_backend_name() == "sqlite":
        return url.render_as_string(hide_password=True)
    query = {
        key: "***"
        if _SECRET_KEY.search(key)
        or any(_is_conninfo(v) for v in ((val,) if isinstance(val, str) else val))
        else val
        for key, val in url.query.items()
    }
    database = "***" if url.database and _is_conninfo(url.database) else url.database
    rendered = url.set(query=query, database=database).render_as_string(hide_password=True)
    return rendered.replace("%2A%2A%2A", "***")


def _on_sqlite_connect(dbapi_conn: t.Any, *, wal: bool) -> None:
    """Pragmas of every SQLite connection of the store."""
    # Take transaction control away from pysqlite so that BEGIN covers DDL and
    # SELECTs too (SQLAlchemy's documented recipe); a dry run then rolls back all.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    if wal:
        cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA temp_store=FILE")
    cur.execute("PRAGMA cache_size=-16000")
    # The seen marks' temporary table and its lookup index live in the temp database,
    # whose cache is SQLite's default 2 MB unless set: past ~100,000 marks every
    # chunk's index probes and inserts then went to the temp file (3,000,000
    # memberships: -20% store CPU with 32 MB). Bounded, so memory stays flat.
    cur.execute("PRAGMA temp.cache_size=-32000")
    cur.close()


class StoreBackend:
    """The database of a membership store: engine, one connection, schema, locks.

    Attributes used by the membership logic: `conn` (the connection; its transaction stays
    open until :meth:`commit`), `insert` (the dialect's INSERT, with ``on_conflict_*``) and
    `ph` (the DB-API placeholder for hand-written hot-path SQL).
    """

    def __init__(
        self,
        store_url: str | None,
        *,
        dry_run: bool = False,
        logger: logging.Logger | None = None,
        exclusive: bool = False,
    ) -> None:
        """Open (and create) the database, taking the locks of :meth:`_lock_writer`."""
        self.logger = logger or logging.getLogger(__name__)
        self.dry_run = dry_run
        self.exclusive = exclusive
        self.url = resolve_store_url(store_url)
        self._scratch_dir: str | None = None
        self._lock_file: t.BinaryIO | None = None
        if dry_run and self.is_sqlite and not Path(str(self.url.database)).exists():
            # Dry run on a store that does not exist yet: never create the file.
            self._scratch_dir = tempfile.mkdtemp(prefix="braze-audience-dry-")
            self.url = self.url.set(database=os.path.join(self._scratch_dir, "store.sqlite"))
        if self.is_sqlite:
            self._lock_writer()  # before any connection touches the file
        self.engine = self._create_engine()
        self.conn: Connection = self.engine.connect()
        # Only the backend in use is imported (the PostgreSQL dialect costs ~30 ms of start-up).
        self.insert: t.Callable[[sa.Table], t.Any]
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            self.insert = sqlite_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            self.insert = pg_insert
        self.ph = "?" if self.is_sqlite else "%s"
        self._closed = False
        self._create_schema()

    def _create_schema(self) -> None:
        """Create the tables that are missing, then this run's temporary tables."""
        if self.is_sqlite or self.dry_run:
            metadata.create_all(self.conn)
        else:
            self._lock_writer()  # a session lock: needs the connection
            # Two runners starting at once on an empty database: one creates the tables,
            # the other waits, then finds them. Committed at once, so the lock is not held
            # through this run's long transaction.
            self.conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
            metadata.create_all(self.conn)
            self.conn.commit()
        temp_metadata.create_all(self.conn)

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite backend."""
        return self.url.get_backend_name() == "sqlite"

    @property
    def display_url(self) -> str:
        """The store URL with every password form masked (safe to log)."""
        return safe_store_url(self.url)

    @property
    def shares_store(self) -> bool:
        """Whether other runs may use this store at the same time (PostgreSQL, not exclusive)."""
        return not (self.is_sqlite or self.dry_run or self.exclusive)

    def _create_engine(self) -> Engine:
        if not self.is_sqlite:
            # The name tells another run which run holds an audience or the store.
            return sa.create_engine(
                self.url,
                pool_pre_ping=False,
                connect_args={"application_name": application_name()},
            )
        Path(str(self.url.database)).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(self.url, connect_args={"timeout": 60})
        wal = not self.dry_run
        path = str(self.url.database)

        @sa.event.listens_for(engine, "handle_error")
        def _on_error(context: t.Any) -> None:
            # A corrupt, truncated or read-only file surfaces on whichever statement touches
            # it first, as a SQLAlchemy traceback without the path: name the file instead.
            problem = sqlite_problem(path, context.original_exception)
            if problem is not None:
                raise problem

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: t.Any, _rec: t.Any) -> None:
            _on_sqlite_connect(dbapi_conn, wal=wal)

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN")

        return engine

    # -- locks -------------------------------------------------------------------------

    def _lock_writer(self) -> None:
        """Refuse to start while another run uses the store in a way this one cannot share.

        Two runs delivering the same audience would deliver its deltas twice (on SQLite the
        second one could also fail mid-run with ``database is locked``). Locks are held until
        :meth:`close` or the end of the process (kill -9 included):

        - SQLite: one writer. An exclusive ``flock`` on ``<store file>.lock`` next to the
          file (SQLite's own locks last one transaction; this run commits after every
          request).
        - PostgreSQL: the session advisory lock STORE_LOCK_KEY, SHARED by normal runs
          (they then hold audiences one by one: :meth:`lock_audience`), EXCLUSIVE for an
          `exclusive` run (and for runs of earlier versions, which had one writer).

        A dry run changes nothing and takes no lock.
        """
        if self.dry_run:
            return
        if self.is_sqlite:
            self._lock_sqlite_file()
        else:
            self._lock_postgres_store()

    def _lock_postgres_store(self) -> None:
        """Take STORE_LOCK_KEY (shared, or exclusive for an `exclusive` run) or refuse."""
        fn = "pg_try_advisory_lock" if self.exclusive else "pg_try_advisory_lock_shared"
        holders = self.try_lock(
            f"{fn}({STORE_LOCK_KEY})",
            STORE_LOCK_KEY >> 32,
            STORE_LOCK_KEY & 0xFFFFFFFF,
            1,
            exclusive_only=not self.exclusive,
        )
        if holders is None:
            return
        self.close()
        if self.exclusive:
            msg = (
                f"Another run is using the membership store {self.display_url} "
                f"({holders}); this run needs the store to itself (exclusive): wait "
                "for the other runs to finish (or use another store_url)"
            )
        else:
            msg = (
                f"Another run is using the membership store {self.display_url} "
                f"exclusively ({holders}); wait for it to finish (or use another "
                "store_url)"
            )
        raise StoreBusyError(msg)

    def _lock_sqlite_file(self) -> None:
        """Take the exclusive ``flock`` on ``<store file>.lock`` or refuse."""
        busy = (
            f"Another run is using the membership store {self.display_url}; wait for it to "
            "finish (or use another store_url)"
        )
        if fcntl is None:  # pragma: no cover (Windows)
            self.logger.warning("Cannot lock %s on this platform: run one job at a time", busy)
            return
        path = Path(f"{self.url.database}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+b")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            if exc.errno not in {errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK}:
                raise
            msg = f"{busy} (lock file {path})"
            raise StoreBusyError(msg) from None
        self._lock_file = handle

    def lock_audience(self, audience: str) -> str | None:
        """Try `audience`'s session advisory lock: None when taken, else who holds it.

        The lock is (AUDIENCE_LOCK_CLASS, audience_lock_key(audience)), kept until
        :meth:`close` (PostgreSQL only).
        """
        key = audience_lock_key(audience)
        return self.try_lock(
            f"pg_try_advisory_lock({AUDIENCE_LOCK_CLASS}, {key})", AUDIENCE_LOCK_CLASS, key, 2
        )

    def try_lock(
        self, call: str, classid: int, objid: int, objsubid: int, *, exclusive_only: bool = False
    ) -> str | None:
        """Try an advisory lock without waiting: None when taken, else who holds it.

        A lock whose holder cannot be found belongs to a session that is ending (its
        backend releases locks when it exits, a moment after its client left): tried again
        for up to a second before giving up.
        """
        for _ in range(10):
            if self.conn.exec_driver_sql(f"SELECT {call}").scalar():
                return None
            holder = self._lock_holders(classid, objid, objsubid, exclusive_only=exclusive_only)
            if holder is not None:
                return holder
            time.sleep(0.1)
        return "a run that has just ended"

    def _lock_holders(
        self, classid: int, objid: int, objsubid: int, *, exclusive_only: bool = False
    ) -> str | None:
        """Describe the other sessions holding an advisory lock (pg_locks x pg_stat_activity)."""
        rows = self.conn.exec_driver_sql(
            "SELECT a.application_name, l.pid, a.client_addr, a.backend_start "
            "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid() "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid = %s AND l.objid = %s AND l.objsubid = %s "
            "AND (NOT %s OR l.mode = 'ExclusiveLock') ORDER BY l.pid",
            (classid, objid, objsubid, exclusive_only),
        ).all()
        if not rows:
            return None
        return "; ".join(
            f"{app or 'another session'} (PostgreSQL backend {pid}"
            + (f" from {addr}" if addr else "")
            + (f", connected {started:%Y-%m-%d %H:%M:%S%z}" if started else "")
            + ")"
            for app, pid, addr, started in rows
        )

    # -- transactions ------------------------------------------------------------------

    def commit(self) -> None:
        """Commit the open transaction (never in dry run)."""
        if not self.dry_run:
            self.conn.commit()

    def close(self) -> None:
        """Roll back anything uncommitted, release the locks and the database."""
        if self._closed:
            return
        self._closed = True
        try:
            self.conn.rollback()
            if not self.is_sqlite and not self.dry_run:
                # Released now, not when the server notices the session ended: the next
                # run of these audiences may start at once.
                with contextlib.suppress(sa.exc.DBAPIError):
                    self.conn.exec_driver_sql("SELECT pg_advisory_unlock_all()")
                    self.conn.rollback()
            self.conn.close()
        finally:
            self.engine.dispose()
            if self._scratch_dir:
                shutil.rmtree(self._scratch_dir, ignore_errors=True)
            if self._lock_file is not None:
                self._lock_file.close()  # releases the flock
                self._lock_file = None
