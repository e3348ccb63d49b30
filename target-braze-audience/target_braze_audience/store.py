"""The membership store: what Braze was last told, plus pending and rejected deltas.

One small interface (:class:`MembershipStore`) over SQLAlchemy Core, with two backends:
an embedded SQLite file (default ``.braze_audience_store.sqlite`` in the working
directory) and PostgreSQL (``postgresql://`` / ``postgresql+psycopg://`` URLs).

Memory stays flat whatever the audience sizes: the per-run "seen" marks live in a
temporary table of the same database, deltas are computed with set-based SQL
(``INSERT ... SELECT``), membership rows arrive in chunks through ``executemany`` and
pending deltas are read back in keyset-paginated pages.

The database itself (URL, engine, schema creation, locks, the dry-run scratch file) is
:class:`~target_braze_audience.store_backend.StoreBackend`; the tables are described in
:mod:`target_braze_audience.store_schema`. This module holds the membership logic.

Transactions: everything a run computes stays in one open transaction until the first
delivery result is committed; a crash, SIGTERM or failure before that leaves the store
untouched. In ``dry_run`` the transaction is always rolled back and a missing SQLite
file is never created.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import typing as t
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from target_braze_audience.store_backend import (
    AUDIENCE_LOCK_CLASS,
    DEFAULT_STORE_PATH,
    STORE_LOCK_KEY,
    AudienceBusyError,
    StoreBackend,
    StoreBusyError,
    StoreUnusableError,
    audience_lock_key,
    resolve_store_url,
    safe_store_url,
)
from target_braze_audience.store_schema import (
    ADD,
    PENDING,
    REJECTED,
    REMOVE,
    REOFFER,
    audience_tbl,
    incoming,
    kept,
    member_uid,
    membership,
    meta_tbl,
    pending,
    seen,
    update_only,
)

__all__ = [
    "ADD",
    "AUDIENCE_LOCK_CLASS",
    "DEFAULT_STORE_PATH",
    "MIN_MEMBERS_FOR_REMOVAL_GUARD",
    "PENDING",
    "REJECTED",
    "REMOVE",
    "REOFFER",
    "STORE_LOCK_KEY",
    "AudienceBusyError",
    "AudienceOp",
    "Delta",
    "DeltaKind",
    "KeptMark",
    "Membership",
    "MembershipStore",
    "OverLimit",
    "PendingRow",
    "PendingUser",
    "Rejection",
    "SeenMark",
    "SnapshotOutcome",
    "StoreBusyError",
    "StoreMismatchError",
    "StoreUnusableError",
    "audience_lock_key",
    "resolve_store_url",
    "safe_store_url",
]


class StoreMismatchError(Exception):
    """The store was built for another attribute or identifier."""


#: Audiences with fewer stored members than this are exempt from `max_removal_fraction`.
MIN_MEMBERS_FOR_REMOVAL_GUARD = 20


@dataclass
class SnapshotOutcome:
    """What a complete snapshot changed in the pending deltas."""

    removes: int = 0
    baseline: int = 0
    dropped_adds: int = 0
    kept: int = 0  # stored members not seen with an id, kept because their uid was seen
    held: int = 0  # removals held back by max_removal_fraction (not queued)
    stored: int = 0  # members the store held for the audience (when removals were computed)


class SeenMark(t.NamedTuple):
    """A membership seen in this run's input (:meth:`MembershipStore.add_seen`)."""

    audience: str
    user_id: str
    scan_id: str  # "" when the record names no scan
    lytics_uid: str | None = None


class KeptMark(t.NamedTuple):
    """A profile seen without a usable identifier, kept by its Lytics uid (add_kept)."""

    audience: str
    scan_id: str  # "" when the record names no scan
    lytics_uid: str


class Delta(t.NamedTuple):
    """One (user, audience) change: an explicit delta, or one Braze accepted."""

    user_id: str
    audience: str
    op: str  # ADD or REMOVE (REOFFER is recorded as ADD)


class Rejection(t.NamedTuple):
    """A delta Braze refused, with its reason."""

    user_id: str
    audience: str
    reason: str


class Membership(t.NamedTuple):
    """A (user, audience) pair (update-only adds: :meth:`MembershipStore.record_update_only`)."""

    user_id: str
    audience: str


class AudienceOp(t.NamedTuple):
    """A pending delta of one user: the audience and its op (ADD, REMOVE or REOFFER)."""

    audience: str
    op: str


class PendingUser(t.NamedTuple):
    """A user with pending or rejected deltas (:meth:`MembershipStore.iter_pending_users`)."""

    user_id: str
    ops: list[AudienceOp]


class PendingRow(t.NamedTuple):
    """A row of braze_pending (:meth:`MembershipStore.pending_rows`)."""

    user_id: str
    audience: str
    op: str
    status: str  # PENDING or REJECTED
    attempted: bool
    reason: str | None


class DeltaKind(t.NamedTuple):
    """A key of :meth:`MembershipStore.pending_breakdown`."""

    audience: str
    op: str
    status: str


class OverLimit(t.NamedTuple):
    """Users whose array would exceed the limit (users_over_array_length)."""

    total: int
    sample: list[str]  # the first few, by user id


class MembershipStore:
    """What Braze holds per (audience, user), and the deltas still to deliver."""

    def __init__(
        self,
        store_url: str | None,
        *,
        dry_run: bool = False,
        logger: logging.Logger | None = None,
        exclusive: bool = False,
    ) -> None:
        """Open (and create) the store; in `dry_run` nothing is ever committed.

        Concurrency (see :class:`StoreBackend`): SQLite has one writer at a time. On
        PostgreSQL, runs share the store and each audience is held by one run at a time
        (:meth:`claim`); with `exclusive`, this run takes the whole store: it refuses to
        start while any other run uses it, and other runs refuse to start while it does
        (for modes that write what other runs' audiences hold, e.g. whole-array writes).
        """
        self.backend = StoreBackend(store_url, dry_run=dry_run, logger=logger, exclusive=exclusive)
        self.logger = self.backend.logger
        self.conn: Connection = self.backend.conn
        self._insert = self.backend.insert
        self._ph = self.backend.ph
        # Audiences this run holds on a shared PostgreSQL store (None: every audience, i.e.
        # SQLite, dry run, exclusive run, or no claim made yet). Pending-delta reads and
        # writes are scoped to them.
        self._held: set[str] | None = None
        self._refused: dict[str, str] = {}  # audience -> the run holding it
        # Cheap run-level facts that let the hot path skip whole statements.
        self._may_have_removes = (
            self.conn.execute(
                sa.select(pending.c.user_id).where(pending.c.op == REMOVE).limit(1)
            ).first()
            is not None
        )
        self._audience_has_members: dict[str, bool] = {}
        self._seen_seq = 0
        self._seen_indexed = False
        self._seen_analyzed = 0  # seen marks when braze_seen_tmp was last analyzed
        self._kept_audiences: set[str] = set()
        # Where an `add` not backed by this run's marks could sit in braze_pending (see
        # complete_snapshot): audiences with deltas left from earlier runs or explicit
        # deltas, and the scan ids each audience's marks arrived with.
        self._stale_add_audiences: set[str] = set(
            self.conn.execute(sa.select(pending.c.audience).distinct()).scalars()
        )
        self._seen_scans: dict[str, set[str]] = {}

    # -- back-end ------------------------------------------------------------------------

    @property
    def url(self) -> URL:
        """The store's database URL (may hold a password: log :attr:`display_url`)."""
        return self.backend.url

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine of the store."""
        return self.backend.engine

    @property
    def dry_run(self) -> bool:
        """Whether nothing is ever committed."""
        return self.backend.dry_run

    @property
    def exclusive(self) -> bool:
        """Whether this run holds the whole store (see :class:`StoreBackend`)."""
        return self.backend.exclusive

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite backend."""
        return self.backend.is_sqlite

    @property
    def display_url(self) -> str:
        """The store URL with every password form masked (safe to log)."""
        return self.backend.display_url

    @property
    def shares_store(self) -> bool:
        """Whether other runs may use this store at the same time (PostgreSQL, not exclusive)."""
        return self.backend.shares_store

    def commit(self) -> None:
        """Commit the open transaction (never in dry run)."""
        self.backend.commit()

    def close(self) -> None:
        """Roll back anything uncommitted and release the database."""
        self.backend.close()

    # -- audiences (shared PostgreSQL store) -----------------------------------------

    def claim(self, audience: str) -> str | None:
        """Hold `audience` for the rest of the run; None when held, else who holds it.

        On a shared PostgreSQL store: a session advisory lock
        (:meth:`StoreBackend.lock_audience`), tried without waiting, taken before anything
        of the audience is written and kept until the run ends. Elsewhere (SQLite: one
        writer; dry run; exclusive run) every audience is this run's. From the first claim
        on, pending deltas are read and delivered only for held audiences.
        """
        if not self.shares_store:
            return None
        if self._held is None:
            self._held = set()
        if audience in self._held:
            return None
        if audience in self._refused:
            return self._refused[audience]
        holder = self.backend.lock_audience(audience)
        if holder is None:
            self._held.add(audience)
            self._refresh_audience(audience)
            return None
        self._refused[audience] = holder
        return holder

    def _refresh_audience(self, audience: str) -> None:
        """Update the run-level facts about `audience` read when the store opened.

        Another run may have held the audience since (and left pending adds or removes):
        the hot path's shortcuts (no remove to cancel, no stale add to drop) must not rely
        on what the store held before this run got the audience.
        """
        p = pending.c
        mine = p.audience == audience
        any_delta, any_remove = self.conn.execute(
            sa.select(sa.exists().where(mine), sa.exists().where(mine, p.op == REMOVE))
        ).one()
        if any_delta:
            self._stale_add_audiences.add(audience)
        if any_remove:
            self._may_have_removes = True
        self._audience_has_members.pop(audience, None)

    def is_initialized(self, audience: str) -> bool:
        """Whether `audience` has had a complete snapshot (read now, not cached)."""
        q = sa.select(audience_tbl.c.initialized).where(audience_tbl.c.audience == audience)
        return bool(self.conn.execute(q).scalar())

    def claim_leftovers(self) -> dict[str, str]:
        """Try to hold every audience with deltas left in the store; return the busy ones.

        Called before delivery: deltas of audiences not in this run's input (failures and
        rejections of earlier runs, update-only re-offers) are delivered by whichever run
        holds the audience, as a single runner always did; an audience another run holds
        is left to it. Returns audience -> the run holding it.
        """
        if not self.shares_store:
            return {}
        if self._held is None:
            self._held = set()
        names = set(
            self.conn.execute(
                sa.union(
                    sa.select(pending.c.audience).distinct(),
                    sa.select(update_only.c.audience).distinct(),
                )
            ).scalars()
        )
        busy: dict[str, str] = {}
        for aud in sorted(names - self._held):
            holder = self.claim(aud)
            if holder is not None:
                busy[aud] = holder
        return busy

    def _scope(self, col: t.Any) -> list[t.Any]:
        """WHERE terms limiting `col` (an audience column) to the audiences this run holds."""
        return [] if self._held is None else [col.in_(sorted(self._held))]

    def check_meta(self, **expected: str) -> None:
        """Record (first run) or check the settings the store was built for.

        The first run commits them at once (not with its deltas): a concurrent run's insert
        of the same keys would otherwise wait for this run's whole transaction.
        """
        rows: dict[str, str] = {
            k: v for k, v in self.conn.execute(sa.select(meta_tbl.c.key, meta_tbl.c.value))
        }
        missing = {k: v for k, v in expected.items() if k not in rows}
        if missing:
            ins = self._insert(meta_tbl)
            self.conn.execute(
                ins.on_conflict_do_nothing(index_elements=[meta_tbl.c.key]),
                [{"key": k, "value": v} for k, v in missing.items()],
            )
            self.commit()
            rows = {k: v for k, v in self.conn.execute(sa.select(meta_tbl.c.key, meta_tbl.c.value))}
        for key, value in expected.items():
            if key in rows and rows[key] != value:
                msg = (
                    f"The membership store {self.display_url} was built with {key}="
                    f"'{rows[key]}', but the setting is '{value}'. Use another store_url "
                    f"for a different {key}."
                )
                raise StoreMismatchError(msg)

    # -- reads ---------------------------------------------------------------------------

    def initialized_audiences(self) -> set[str]:
        """Audiences that have had a complete snapshot."""
        q = sa.select(audience_tbl.c.audience).where(audience_tbl.c.initialized.is_(True))
        return set(self.conn.execute(q).scalars())

    def memberships(self, audience: str | None = None) -> dict[tuple[str, str], bool]:
        """(audience, user_id) -> present. For tests and small audiences only."""
        q = sa.select(membership.c.audience, membership.c.user_id, membership.c.present)
        if audience is not None:
            q = q.where(membership.c.audience == audience)
        return {(a, u): bool(p) for a, u, p in self.conn.execute(q)}

    def pending_rows(self) -> list[PendingRow]:
        """All pending/rejected deltas, by user then audience."""
        p = pending.c
        q = sa.select(p.user_id, p.audience, p.op, p.status, p.attempted, p.reason).order_by(
            p.user_id, p.audience
        )
        return [PendingRow(u, a, o, s, bool(at), r) for u, a, o, s, at, r in self.conn.execute(q)]

    def pending_breakdown(self) -> tuple[int, dict[DeltaKind, int]]:
        """Users with deltas, and deltas per (audience, op, status): two aggregate scans."""
        p = pending.c
        mine = self._scope(p.audience)
        users = self.conn.execute(
            sa.select(sa.func.count(p.user_id.distinct())).where(*mine)
        ).scalar()
        q = (
            sa.select(p.audience, p.op, p.status, sa.func.count())
            .where(*mine)
            .group_by(p.audience, p.op, p.status)
        )
        return int(users or 0), {DeltaKind(a, o, s): int(n) for a, o, s, n in self.conn.execute(q)}

    def pending_counts(self) -> dict[str, dict[str, int]]:
        """Count deltas per audience: {"pending": n, "rejected": n}."""
        q = (
            sa.select(pending.c.audience, pending.c.status, sa.func.count())
            .where(*self._scope(pending.c.audience))
            .group_by(pending.c.audience, pending.c.status)
        )
        out: dict[str, dict[str, int]] = {}
        for aud, status, n in self.conn.execute(q):
            out.setdefault(aud, {})[status] = int(n)
        return out

    # -- membership records --------------------------------------------------------------

    def _load_incoming(self, rows: Sequence[tuple[t.Any, ...]], cols: str) -> None:
        # Hot path: plain DB-API executemany (SQLAlchemy's per-row parameter processing
        # costs more than the insert itself at hundreds of thousands of rows).
        marks = ", ".join([self._ph] * len(rows[0]))
        self.conn.exec_driver_sql(
            f"INSERT INTO braze_incoming_tmp ({cols}) VALUES ({marks})",  # noqa: S608
            list(rows),
        )

    def _has_members(self, audience: str) -> bool:
        """Whether the store holds any membership row for `audience` (cached per run)."""
        known = self._audience_has_members.get(audience)
        if known is None:
            q = sa.select(membership.c.user_id).where(membership.c.audience == audience).limit(1)
            known = self.conn.execute(q).first() is not None
            self._audience_has_members[audience] = known
        return known

    def _index_seen(self) -> None:
        """Build the lookup index of the seen marks (once per run, when first needed)."""
        if not self._seen_indexed:
            self.conn.exec_driver_sql(
                "CREATE INDEX IF NOT EXISTS braze_seen_tmp_key "
                "ON braze_seen_tmp (audience, user_id, scan_id)"
            )
            self._seen_indexed = True

    def _analyze_seen(self, *, force: bool = False) -> None:
        """PostgreSQL: give the planner statistics for the seen marks (temporary table).

        Autovacuum never analyzes temporary tables, so without this the planner assumes the
        marks of an audience are one row and plans the snapshot's anti-join over them as a
        nested loop over a materialized list: 10,000 x 10,000 comparisons per audience of
        10,000 members, hours at a million (EXPLAIN ANALYZE: "Rows Removed by Join Filter:
        49995000"). ANALYZE samples a bounded number of rows (~0.3 s); it is re-run each time
        the table has doubled (`force`: whenever it grew), so the estimates stay within 2x.
        """
        if self.is_sqlite or self._seen_seq == self._seen_analyzed:
            return
        if force or self._seen_seq >= 2 * self._seen_analyzed:
            self.conn.exec_driver_sql("ANALYZE braze_seen_tmp")
            self._seen_analyzed = self._seen_seq

    def add_kept(self, rows: Sequence[KeptMark]) -> None:
        """Record profiles seen without an identifier (kept by their Lytics uid)."""
        if not rows:
            return
        self._kept_audiences.update(r[0] for r in rows)
        ph = self._ph
        self.conn.exec_driver_sql(
            "INSERT INTO braze_kept_tmp (audience, scan_id, lytics_uid) "  # noqa: S608
            f"VALUES ({ph}, {ph}, {ph})",
            list(rows),
        )

    def add_seen(
        self, rows: Sequence[SeenMark], silent_audiences: Iterable[str] = ()
    ) -> dict[str, int]:
        """Record memberships seen this run and queue `add` for those Braze lacks.

        Args:
            rows: the marks in input order (a row may leave out the uid).
            silent_audiences: audiences still in their silent baseline (no adds queued).

        Returns:
            audience -> number of newly seen members Braze already has (unchanged).

        """
        if not rows:
            return {}
        last = self._mark_seen(rows)
        n = seen.alias("new").c
        # Bounded on both sides: with only `seq > last`, SQLite plans a scan of the whole
        # covering index of the seen marks ("SCAN new USING COVERING INDEX
        # braze_seen_tmp_key") instead of the chunk's rowid range once that index exists
        # (from the first complete snapshot on): every chunk read every mark so far
        # (1,000,000 memberships in 20 audiences: add_seen 7.7 -> 6.2 s CPU).
        fresh = n.seq.between(last + 1, self._seen_seq)
        present = self._stored_presence(n)
        silent = list(silent_audiences)
        unchanged: dict[str, int] = {}
        unchanged_possible = any(self._has_members(a) for a in {r[0] for r in rows})
        if unchanged_possible:
            unchanged, lacking = self._count_chunk(n, fresh, present, last)
            if not lacking.difference(silent):
                self._cancel_removes(n, fresh)
                return unchanged
        self._queue_adds(n, fresh, present, silent, probe=unchanged_possible)
        self._cancel_removes(n, fresh)
        return unchanged

    def _mark_seen(self, rows: Sequence[SeenMark]) -> int:
        """Append the chunk's marks; return the last seq before them."""
        if len(rows[0]) == 3:
            rows = [SeenMark(*r) for r in rows]
        last = self._seen_seq
        self._append_seen(rows)
        self._seen_seq = int(self.conn.execute(sa.select(sa.func.max(seen.c.seq))).scalar() or 0)
        for aud, scan in {(r[0], r[2]) for r in rows}:
            self._seen_scans.setdefault(aud, set()).add(scan)
        return last

    @staticmethod
    def _stored_presence(n: t.Any) -> t.Any:
        """Select what Braze holds for a chunk row (`n`: columns of the chunk's seen marks)."""
        m = membership.c
        # A correlated scalar subquery: one primary-key probe per row on both backends. As
        # a join, PostgreSQL planned a hash join over a sequential scan of the whole
        # braze_membership for every chunk of 10,000 rows (auto_explain: "Seq Scan on
        # braze_membership rows=300000" per chunk), work that grows with the store:
        # quadratic over a run.
        return (
            sa.select(m.present)
            .where(m.audience == n.audience, m.user_id == n.user_id)
            .scalar_subquery()
        )

    def _count_chunk(
        self, n: t.Any, fresh: t.Any, present: t.Any, last: int
    ) -> tuple[dict[str, int], set[str]]:
        """Newly seen members Braze already has, and audiences with a row Braze may lack.

        One pass over the chunk answers both questions: in the steady state (nothing
        changed) the INSERT of adds, a second probe per row, is then skipped.
        """
        s = seen.c
        self._index_seen()
        self._analyze_seen()
        # OFFSET 0 keeps PostgreSQL from flattening the subquery, which would
        # evaluate the probe once per reference to `present` (twice per row).
        chunk = (
            sa.select(n.audience, n.user_id, present.label("present"))
            .where(fresh)
            .offset(0)
            .subquery()
        )
        c = chunk.c
        seen_before = sa.exists().where(
            s.audience == c.audience, s.user_id == c.user_id, s.seq <= last
        )
        held = c.present.is_(True)
        counts = sa.select(
            c.audience,
            sa.func.count(sa.case((sa.and_(held, ~seen_before), c.user_id)).distinct()),
            sa.func.count(sa.case((held, None), else_=1)),
        ).group_by(c.audience)
        unchanged: dict[str, int] = {}
        lacking: set[str] = set()
        for a, u, k in self.conn.execute(counts):
            if u:
                unchanged[a] = int(u)
            if k:
                lacking.add(a)
        return unchanged, lacking

    def _queue_adds(
        self, n: t.Any, fresh: t.Any, present: t.Any, silent: list[str], *, probe: bool
    ) -> None:
        """Queue `add` for the chunk's rows Braze lacks (all of them unless `probe`)."""
        p = pending.c
        cols = (n.user_id, n.audience, sa.literal(ADD), sa.literal(PENDING), sa.false())
        cond = [fresh]
        if silent:
            cond.append(n.audience.not_in(silent))
        if probe:  # else the store has nobody in these audiences yet
            cond.append(sa.not_(present.is_(True)))
        adds = sa.select(*cols).distinct().where(*cond)
        ins = self._insert(pending).from_select(
            ["user_id", "audience", "op", "status", "attempted"], adds
        )
        self.conn.execute(
            ins.on_conflict_do_update(
                index_elements=[p.user_id, p.audience],
                set_={
                    "op": ADD,
                    "status": PENDING,
                    "reason": None,
                    "updated_at": sa.func.current_timestamp(),
                },
            )
        )

    def _cancel_removes(self, n: t.Any, fresh: t.Any) -> None:
        """Cancel the removes pending for members seen again in this chunk."""
        if not self._may_have_removes:
            return
        p = pending.c
        in_chunk = sa.tuple_(p.user_id, p.audience).in_(
            sa.select(n.user_id, n.audience).where(fresh)
        )
        # A remove that may already have reached Braze is undone with an add.
        self.conn.execute(
            pending.update()
            .where(p.op == REMOVE, p.attempted.is_(True), p.status != REJECTED, in_chunk)
            .values(op=ADD, status=PENDING, reason=None)
        )
        self.conn.execute(pending.delete().where(p.op == REMOVE, in_chunk))

    def _append_seen(self, rows: Sequence[tuple[t.Any, ...]]) -> None:
        """Append seen marks (audience, user_id, scan_id, lytics_uid) in input order."""
        if self.is_sqlite:
            # Hot path: plain DB-API executemany (SQLAlchemy's per-row parameter processing
            # costs more than the insert itself at hundreds of thousands of rows).
            self.conn.exec_driver_sql(
                "INSERT INTO braze_seen_tmp (audience, user_id, scan_id, lytics_uid) "
                "VALUES (?, ?, ?, ?)",
                rows if isinstance(rows, list) else list(rows),
            )
            return
        # PostgreSQL: COPY, one stream per chunk (executemany is one statement per row:
        # 300,000 round trips through the pipeline and the executor for 300,000 marks).
        cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            with cursor.copy(
                "COPY braze_seen_tmp (audience, user_id, scan_id, lytics_uid) FROM STDIN"
            ) as copy:
                write = copy.write_row
                for row in rows:
                    write(row)
        finally:
            cursor.close()

    # -- explicit deltas -------------------------------------------------------------------

    def apply_explicit(self, rows: Sequence[Delta]) -> dict[str, dict[str, int]]:
        """Queue explicit deltas from a delta-shaped stream.

        Latest intent wins per (user, audience). An `add` Braze already has and a
        `remove` of a membership Braze is known not to hold are skipped.

        Returns:
            audience -> {"add": queued, "remove": queued, "skipped": n}.

        """
        if not rows:
            return {}
        intents = self._explicit_intents(rows)
        counts: dict[str, dict[str, int]] = {}
        for (_u, a), op in intents.items():
            c = counts.setdefault(a, {ADD: 0, REMOVE: 0, "skipped": 0})
            c[op or "skipped"] += 1
        self._write_explicit(intents)
        return counts

    def _explicit_intents(self, rows: Sequence[Delta]) -> dict[tuple[str, str], str | None]:
        """(user, audience) -> the op to queue (None: nothing to send), latest intent last.

        Each row is judged against what Braze holds (per the store) and the delta pending,
        both as the earlier rows of the chunk left them.
        """
        self._load_incoming(
            [(n, a, u, o) for n, (u, a, o) in enumerate(rows)], "seq, audience, user_id, op"
        )
        i, m, p = incoming.c, membership.c, pending.c
        q = (
            sa.select(i.user_id, i.audience, i.op, m.present, p.op, p.attempted)
            .select_from(
                incoming.outerjoin(
                    membership, sa.and_(m.audience == i.audience, m.user_id == i.user_id)
                ).outerjoin(pending, sa.and_(p.audience == i.audience, p.user_id == i.user_id))
            )
            .where(i.seq.is_not(None))
            .order_by(i.seq)
        )
        state: dict[tuple[str, str], tuple[bool | None, str | None, bool]] = {}
        for user, aud, op, present, p_op, p_att in self.conn.execute(q):
            key = (user, aud)
            if key not in state:
                state[key] = (present, p_op, bool(p_att))
            present, p_op, p_att = state[key]
            state[key] = (present, _explicit_op(op, present, p_op, p_att), p_att)
        self.conn.execute(incoming.delete())
        return {key: op for key, (_pr, op, _at) in state.items()}

    def _write_explicit(self, intents: dict[tuple[str, str], str | None]) -> None:
        """Upsert the explicit deltas to queue, delete those with nothing to send."""
        p = pending.c
        upserts = [
            {"user_id": u, "audience": a, "op": o, "status": PENDING, "attempted": False}
            for (u, a), o in intents.items()
            if o is not None
        ]
        deletes = [{"u": u, "a": a} for (u, a), o in intents.items() if o is None]
        if upserts:
            self._may_have_removes = True
            self._stale_add_audiences.update(a for (_u, a), o in intents.items() if o == ADD)
            ins = self._insert(pending)
            self.conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[p.user_id, p.audience],
                    set_={
                        "op": ins.excluded.op,
                        "status": PENDING,
                        "reason": None,
                        "updated_at": sa.func.current_timestamp(),
                    },
                ),
                upserts,
            )
        if deletes:
            self.conn.execute(
                pending.delete().where(
                    p.user_id == sa.bindparam("u"), p.audience == sa.bindparam("a")
                ),
                deletes,
            )

    # -- snapshots ---------------------------------------------------------------------

    def complete_snapshot(
        self,
        audience: str,
        scan_id: str | None,
        *,
        baseline: bool,
        member_count: int | None = None,
        max_removal_fraction: float = 1.0,
    ) -> SnapshotOutcome:
        """Apply a verifiably complete snapshot of `audience`.

        Queues `remove` for members Braze holds that were not seen with `scan_id` (any
        scan of this run when None), except those whose Lytics uid was seen in the scan
        (a profile without its id, or with another of its ids, is still a member); with
        `baseline`, first records the seen members as what Braze already has, silently.
        Pending adds for users no longer in the audience are dropped (or turned into
        removes when a request carrying them may have reached Braze). Marks the audience
        initialized.

        When the removals would exceed `max_removal_fraction` of the members the store
        holds (audiences of at least MIN_MEMBERS_FOR_REMOVAL_GUARD members), nothing is
        removed or dropped: `held` tells how many removals were held back; the stored
        memberships stay, so the next snapshot decides again.
        """
        out = SnapshotOutcome()
        self._index_seen()
        self._analyze_seen(force=True)
        self._remember_uids(audience, scan_id)
        if baseline:
            out.baseline = self._record_baseline(audience, scan_id)
        if self._has_members(audience):
            self._queue_removes(audience, scan_id, max_removal_fraction, out)
        if not out.held:
            # Held: the snapshot may be truncated, so it decides nothing else either (no
            # pending add is dropped or undone on its word).
            out.dropped_adds = self._drop_stale_adds(audience, scan_id)
        self._mark_initialized(audience, scan_id, member_count)
        return out

    @staticmethod
    def _seen_in(scan_id: str | None, aud_col: t.Any, user_col: t.Any) -> t.Any:
        """EXISTS: (aud_col, user_col) was seen with `scan_id` (any scan of the run: None)."""
        s = seen.c
        cond = [s.audience == aud_col, s.user_id == user_col]
        if scan_id is not None:
            cond.append(s.scan_id == scan_id)
        return sa.exists().where(*cond)

    def _record_baseline(self, audience: str, scan_id: str | None) -> int:
        """Record the members seen in the scan as what Braze holds (silently); their count."""
        s, m = seen.c, membership.c
        sel = sa.select(s.audience, s.user_id, sa.true()).distinct().where(s.audience == audience)
        if scan_id is not None:
            sel = sel.where(s.scan_id == scan_id)
        # Counted separately: rowcount of INSERT ... SELECT is unreliable across drivers.
        count = self._count(sel)
        self._audience_has_members[audience] = True
        ins = self._insert(membership).from_select(["audience", "user_id", "present"], sel)
        self.conn.execute(
            ins.on_conflict_do_update(
                index_elements=[m.audience, m.user_id],
                set_={"present": True, "updated_at": sa.func.current_timestamp()},
            )
        )
        if not self.is_sqlite and count >= 1000:
            # Rows of this still-open transaction: autovacuum cannot see them yet, and the
            # removal queries below would be planned for an empty audience.
            # SKIP_LOCKED: ANALYZE holds its lock to the end of the transaction, so a
            # concurrent run analyzing too would wait for this whole run (and vice versa).
            self.conn.exec_driver_sql("ANALYZE (SKIP_LOCKED) braze_membership")
        return count

    def _removal_queries(self, audience: str, scan_id: str | None) -> tuple[t.Any, t.Any]:
        """Build the snapshot's WHERE of stored members not seen, and SELECT of removes."""
        m, u, k = membership.c, member_uid.c, kept.c
        not_seen = sa.and_(
            m.audience == audience,
            m.present.is_(True),
            ~self._seen_in(scan_id, m.audience, m.user_id),
        )
        # A stored member is still in when its uid was seen: without an id (kept marks)
        # or under another id (a merged profile's other value, a changed id).
        u2 = member_uid.alias("u2")
        uid_seen = sa.or_(
            sa.exists().where(
                k.audience == audience,
                k.lytics_uid == u.lytics_uid,
                *([k.scan_id == scan_id] if scan_id is not None else []),
            ),
            sa.exists().where(
                u2.c.audience == audience,
                u2.c.lytics_uid == u.lytics_uid,
                u2.c.user_id != u.user_id,
                self._seen_in(scan_id, u2.c.audience, u2.c.user_id),
            ),
        )
        still_in = sa.exists().where(u.audience == m.audience, u.user_id == m.user_id, uid_seen)
        gone = sa.select(
            m.user_id, m.audience, sa.literal(REMOVE), sa.literal(PENDING), sa.false()
        ).where(not_seen, ~still_in)
        return not_seen, gone

    def _count(self, query: t.Any) -> int:
        """Rows of a SELECT, or of braze_membership matching a WHERE clause."""
        if isinstance(query, sa.Select):
            q = sa.select(sa.func.count()).select_from(query.subquery())
        else:
            q = sa.select(sa.func.count()).select_from(membership).where(query)
        return int(self.conn.execute(q).scalar() or 0)

    def _queue_removes(
        self, audience: str, scan_id: str | None, max_removal_fraction: float, out: SnapshotOutcome
    ) -> None:
        """Queue `remove` for the stored members the snapshot lacks, unless held back."""
        m, p = membership.c, pending.c
        self._index_seen()
        not_seen, gone = self._removal_queries(audience, scan_id)
        missing = self._count(not_seen)
        out.removes = self._count(gone) if missing else 0
        out.kept = missing - out.removes
        if not out.removes:
            return
        out.stored = self._count(sa.and_(m.audience == audience, m.present.is_(True)))
        if (
            out.stored >= MIN_MEMBERS_FOR_REMOVAL_GUARD
            and out.removes > max_removal_fraction * out.stored
        ):
            out.held, out.removes = out.removes, 0
            return
        self._may_have_removes = True
        ins = self._insert(pending).from_select(
            ["user_id", "audience", "op", "status", "attempted"], gone
        )
        self.conn.execute(
            ins.on_conflict_do_update(
                index_elements=[p.user_id, p.audience],
                set_={
                    "op": REMOVE,
                    "status": PENDING,
                    "reason": None,
                    "updated_at": sa.func.current_timestamp(),
                },
            )
        )

    def _drop_stale_adds(self, audience: str, scan_id: str | None) -> int:
        """Drop (or undo) pending adds of users not in the snapshot; how many were dropped.

        Every add queued from this run's marks of this scan is seen by definition, so the
        scan of braze_pending is only needed when adds can come from elsewhere: earlier
        runs, explicit deltas, or marks of another scan of the audience.
        """
        other_scans = scan_id is not None and bool(
            self._seen_scans.get(audience, set()) - {scan_id}
        )
        if audience not in self._stale_add_audiences and not other_scans:
            return 0
        p = pending.c
        self._index_seen()
        stale = [
            p.audience == audience,
            p.op == ADD,
            ~self._seen_in(scan_id, p.audience, p.user_id),
        ]
        res = self.conn.execute(
            pending.delete().where(*stale, sa.or_(p.status == REJECTED, p.attempted.is_(False)))
        )
        # An add that may have reached Braze (attempted, outcome unknown) is undone.
        undone = self.conn.execute(
            pending.update()
            .where(*stale, p.attempted.is_(True), p.status != REJECTED)
            .values(op=REMOVE, status=PENDING, reason=None)
        )
        # UPDATE rowcounts are reliable on both drivers (unlike INSERT ... SELECT): only
        # a real remove makes every later chunk pay for the remove-cancelling statements.
        if undone.rowcount is None or undone.rowcount != 0:
            self._may_have_removes = True
        return max(res.rowcount or 0, 0)

    def _mark_initialized(
        self, audience: str, scan_id: str | None, member_count: int | None
    ) -> None:
        ins_a = self._insert(audience_tbl).values(
            audience=audience,
            initialized=True,
            last_scan_id=scan_id,
            last_member_count=member_count,
        )
        self.conn.execute(
            ins_a.on_conflict_do_update(
                index_elements=[audience_tbl.c.audience],
                set_={
                    "initialized": True,
                    "last_scan_id": scan_id,
                    "last_member_count": member_count,
                    "last_complete_at": sa.func.current_timestamp(),
                },
            )
        )

    def _remember_uids(self, audience: str, scan_id: str | None) -> None:
        """Store the Lytics uid of every member seen with an id in this scan (changes only)."""
        s, u = seen.c, member_uid.c
        self._index_seen()
        cond = [s.audience == audience, s.lytics_uid.is_not(None)]
        if scan_id is not None:
            cond.append(s.scan_id == scan_id)
        changed = (
            sa.select(s.audience, s.user_id, sa.func.max(s.lytics_uid))
            .select_from(
                seen.outerjoin(
                    member_uid, sa.and_(u.audience == s.audience, u.user_id == s.user_id)
                )
            )
            .where(*cond, sa.or_(u.lytics_uid.is_(None), u.lytics_uid != s.lytics_uid))
            .group_by(s.audience, s.user_id)
        )
        ins = self._insert(member_uid).from_select(["audience", "user_id", "lytics_uid"], changed)
        self.conn.execute(
            ins.on_conflict_do_update(
                index_elements=[u.audience, u.user_id],
                set_={"lytics_uid": ins.excluded.lytics_uid},
            )
        )

    # -- delivery --------------------------------------------------------------------

    def mark_attempted(self) -> None:
        """Flag every deliverable delta as possibly reaching Braze (before sending)."""
        self.conn.execute(
            pending.update()
            .where(pending.c.attempted.is_(False), *self._scope(pending.c.audience))
            .values(attempted=True)
        )

    def iter_pending_users(self, page_size: int = 20000) -> Iterator[PendingUser]:
        """Yield each user with a pending or rejected delta, with its (audience, op) pairs.

        Ordered by user; read in keyset pages so memory stays flat and rows deleted
        behind the cursor (confirmed deltas) do not disturb it. Only audiences this run
        holds (see :meth:`claim`).
        """
        cur_user: str | None = None
        cur: list[AudienceOp] = []
        with contextlib.closing(self._pending_pages(page_size)) as pages:
            for rows in pages:
                for user, aud, op in rows:
                    if user != cur_user:
                        if cur_user is not None:
                            yield PendingUser(cur_user, cur)
                        cur_user, cur = user, []
                    cur.append(AudienceOp(aud, op))
        if cur_user is not None:
            yield PendingUser(cur_user, cur)

    def _pending_pages(self, page_size: int) -> Generator[Sequence[t.Any], None, None]:
        """Pages of (user_id, audience, op) of held audiences' deltas, keyset-paginated."""
        ph = self._ph
        held: tuple[t.Any, ...] = ()
        mine = ""
        if self._held is not None:  # PostgreSQL only: one array parameter, not one per name
            held, mine = (sorted(self._held),), f"audience = ANY({ph}) "
        first = (
            "SELECT user_id, audience, op FROM braze_pending "  # noqa: S608 (placeholders only)
            f"{'WHERE ' + mine if mine else ''}ORDER BY user_id, audience LIMIT "
            f"{int(page_size)}"
        )
        after = (
            "SELECT user_id, audience, op FROM braze_pending "  # noqa: S608 (placeholders only)
            f"WHERE {mine + 'AND ' if mine else ''}(user_id, audience) > ({ph}, {ph}) "
            f"ORDER BY user_id, audience LIMIT {int(page_size)}"
        )
        # Raw DB-API cursor: plain tuples; SQLAlchemy Row objects cost more than the query.
        cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            if held:
                cursor.execute(first, held)
            else:
                cursor.execute(first)
            while True:
                rows = cursor.fetchall()
                yield rows
                if len(rows) < page_size:
                    return
                cursor.execute(after, (*held, rows[-1][0], rows[-1][1]))
        finally:
            cursor.close()

    def member_audiences(self) -> list[str]:
        """Every audience with a stored membership (for :meth:`present_audiences`).

        Read as one index seek per audience (there are few) rather than a DISTINCT over
        every membership row.
        """
        names: list[str] = []
        m = membership.c
        last: str | None = ""
        while True:
            last = self.conn.execute(
                sa.select(sa.func.min(m.audience)).where(m.audience > last)
            ).scalar()
            if last is None:
                return names
            names.append(last)

    def present_audiences(
        self, users: Sequence[str], audiences: Sequence[str]
    ) -> dict[str, list[str]]:
        """Map each user to the audiences Braze holds for it (per the store), sorted.

        One query for a request's users. Both keys are given so that the lookup is a set
        of (audience, user_id) primary-key probes: braze_membership has no index by user.
        """
        if not users or not audiences:
            return {}
        m = membership.c
        q = (
            sa.select(m.user_id, m.audience)
            .where(m.audience.in_(list(audiences)), m.user_id.in_(list(users)))
            .where(m.present.is_(True))
            .order_by(m.user_id, m.audience)
        )
        out: dict[str, list[str]] = {}
        for user, aud in self.conn.execute(q):
            out.setdefault(user, []).append(aud)
        return out

    #: Rows per multi-row VALUES statement on the result path (3 columns: 900 parameters,
    #: under SQLite's oldest limit of 999 per statement).
    VALUES_ROWS = 300

    def _values(self, rows: Sequence[tuple[t.Any, ...]]) -> Iterator[tuple[str, list[t.Any]]]:
        """Split rows into (``VALUES (..), (..)`` text, flat parameters) of VALUES_ROWS each."""
        if not rows:
            return
        one = "(" + ", ".join([self._ph] * len(rows[0])) + ")"
        for i in range(0, len(rows), self.VALUES_ROWS):
            part = rows[i : i + self.VALUES_ROWS]
            yield "VALUES " + ", ".join([one] * len(part)), [v for r in part for v in r]

    def _delete_pairs(self, table: str, pairs: Sequence[tuple[str, str]]) -> None:
        """Delete the rows of `table` keyed (user_id, audience) by `pairs`.

        One statement per VALUES_ROWS pairs (SQLite uses the primary key for
        ``IN (SELECT ... FROM (VALUES ...))``, not for ``IN (VALUES ...)``).
        """
        for values, params in self._values(pairs):
            self.conn.exec_driver_sql(
                f"DELETE FROM {table} WHERE (user_id, audience) IN "  # noqa: S608 (ours)
                f"(SELECT column1, column2 FROM ({values}) AS v)",
                tuple(params),
            )

    def record_results(self, accepted: Sequence[Delta], rejected: Sequence[Rejection]) -> None:
        """Apply Braze's answer: the deltas it accepted, and those it rejected (with why).

        Set-based: one upsert, one delete and one update per VALUES_ROWS deltas (one
        statement per delta cost a round trip each on PostgreSQL). A delta named twice
        takes its last answer, as row-by-row statements in order would.
        """
        if accepted:
            self._record_accepted(accepted)
        if rejected:
            self._record_rejected(rejected)

    def _record_accepted(self, accepted: Sequence[Delta]) -> None:
        """Store what Braze now holds and forget the accepted deltas."""
        present = {(a, u): o == ADD for u, a, o in accepted}
        for aud, _u in present:
            self._audience_has_members[aud] = True
        for values, params in self._values([(a, u, pr) for (a, u), pr in present.items()]):
            self.conn.exec_driver_sql(
                "INSERT INTO braze_membership (audience, user_id, present) "
                f"{values} ON CONFLICT (audience, user_id) DO UPDATE SET "
                "present = excluded.present, updated_at = CURRENT_TIMESTAMP",
                tuple(params),
            )
        self._delete_pairs("braze_pending", [(u, a) for a, u in present])

    def _record_rejected(self, rejected: Sequence[Rejection]) -> None:
        """Mark the rejected deltas with Braze's reason (kept for a later run)."""
        reasons = {(u, a): r for u, a, r in rejected}
        rows = [(u, a, r) for (u, a), r in reasons.items()]
        for values, params in self._values(rows):
            self.conn.exec_driver_sql(
                f"UPDATE braze_pending SET status = '{REJECTED}', "  # noqa: S608 (constant)
                "reason = v.column3, updated_at = CURRENT_TIMESTAMP "
                f"FROM ({values}) AS v "
                "WHERE braze_pending.user_id = v.column1 AND braze_pending.audience = v.column2",
                tuple(params),
            )

    # -- update-only adds ----------------------------------------------------------------

    def record_update_only(
        self,
        pairs: Sequence[Membership],
        *,
        max_reoffers: int,
        now: dt.datetime,
    ) -> int:
        """Remember adds (user, audience) Braze accepted as update-only, to re-offer them.

        Braze silently skips update-only objects of users it does not know, so an accepted
        add is no proof. Each is re-offered `max_reoffers` times at most (see
        :meth:`queue_reoffers`). Returns how many reached that bound (forgotten now).
        """
        if not pairs:
            return 0
        u = update_only.c
        keys = sa.tuple_(u.user_id, u.audience).in_([tuple(p) for p in pairs])
        known = {
            (user, aud): int(n)
            for user, aud, n in self.conn.execute(
                sa.select(u.user_id, u.audience, u.offers).where(keys)
            )
        }
        # The value SQLAlchemy would bind (SQLite stores DateTime as its own string form,
        # which queue_reoffers compares with).
        bind = u.last_offer_at.type.bind_processor(self.conn.dialect)
        stamp = bind(now) if bind is not None else now
        upserts: list[tuple[str, str, int, t.Any]] = []
        done: list[tuple[str, str]] = []
        for user, aud in dict.fromkeys(pairs):
            offers = known.get((user, aud), 0) + 1
            if offers > max_reoffers:
                done.append((user, aud))
                continue
            upserts.append((user, aud, offers, stamp))
        for values, params in self._values(upserts):
            # One statement per VALUES_ROWS adds (was one per add).
            self.conn.exec_driver_sql(
                "INSERT INTO braze_update_only (user_id, audience, offers, last_offer_at) "
                f"{values} ON CONFLICT (user_id, audience) DO UPDATE SET "
                "offers = excluded.offers, last_offer_at = excluded.last_offer_at",
                tuple(params),
            )
        self._delete_pairs("braze_update_only", done)
        return len(done)

    def queue_reoffers(
        self,
        now: dt.datetime,
        *,
        enabled: bool,
        max_reoffers: int,
        first_delay: dt.timedelta,
    ) -> dict[str, int]:
        """Queue due update-only re-offers as `reoffer` deltas; returns them per audience.

        An add sent `offers` times is due `first_delay * 2 ** (offers - 1)` after it was
        last sent (1x, 2x, 4x, ... the delay), while `offers <= max_reoffers`.

        Only memberships Braze is still meant to hold and that have no delta pending are
        re-offered; rows of memberships since removed are forgotten. With `enabled` false
        (update_existing_only turned off) every row is forgotten: later adds create users.
        """
        u, m, p = update_only.c, membership.c, pending.c
        mine = self._scope(u.audience)  # audiences of other runs are theirs to re-offer
        if self.conn.execute(sa.select(u.user_id).where(*mine).limit(1)).first() is None:
            return {}
        if not enabled:
            self.conn.execute(update_only.delete().where(*mine))
            return {}
        held = sa.exists().where(
            m.audience == u.audience, m.user_id == u.user_id, m.present.is_(True)
        )
        self.conn.execute(update_only.delete().where(*mine, ~held | (u.offers > max_reoffers)))
        has_delta = sa.exists().where(p.user_id == u.user_id, p.audience == u.audience)
        waits = sa.or_(
            sa.false(),
            *(
                sa.and_(u.offers == k, u.last_offer_at <= now - first_delay * 2 ** (k - 1))
                for k in range(1, max_reoffers + 1)
            ),
        )
        due = [*mine, waits, ~has_delta]
        counts = {
            aud: int(n)
            for aud, n in self.conn.execute(
                sa.select(u.audience, sa.func.count()).where(*due).group_by(u.audience)
            )
        }
        if counts:
            sel = sa.select(
                u.user_id, u.audience, sa.literal(REOFFER), sa.literal(PENDING), sa.false()
            ).where(*due)
            self.conn.execute(
                pending.insert().from_select(
                    ["user_id", "audience", "op", "status", "attempted"], sel
                )
            )
        return counts

    def users_over_array_length(self, limit: int, sample: int = 5) -> OverLimit:
        """Users whose attribute would hold more than `limit` values once deltas apply.

        Counts what this store told Braze (present memberships) plus pending adds minus
        pending removes; values other writers put in the attribute are not known here.
        """
        m, p = membership.c, pending.c
        # Nobody can hold more values than there are audiences: with few audiences (the
        # usual case) skip the GROUP BY over every membership (~3 s per million rows).
        names: set[str] = set(self.conn.execute(sa.select(p.audience).distinct()).scalars())
        last: str | None = ""
        while len(names) <= limit:
            last = self.conn.execute(
                sa.select(sa.func.min(m.audience)).where(m.audience > last)
            ).scalar()
            if last is None:
                return OverLimit(0, [])
            names.add(last)
        weights = sa.union_all(
            sa.select(m.user_id, sa.literal(1).label("w")).where(m.present.is_(True)),
            sa.select(p.user_id, sa.case((p.op == REMOVE, -1), else_=1).label("w")).where(
                p.op.in_([ADD, REMOVE])
            ),
        ).subquery()
        over = (
            sa.select(weights.c.user_id)
            .group_by(weights.c.user_id)
            .having(sa.func.sum(weights.c.w) > limit)
            .subquery()
        )
        count = int(self.conn.execute(sa.select(sa.func.count()).select_from(over)).scalar() or 0)
        users: list[str] = []
        if count:
            users = list(
                self.conn.execute(
                    sa.select(over.c.user_id).order_by(over.c.user_id).limit(sample)
                ).scalars()
            )
        return OverLimit(count, users)


def _explicit_op(op: str, present: bool | None, p_op: str | None, p_att: bool) -> str | None:
    """Decide the delta an explicit `op` needs (None: Braze already has what it asks).

    `present` is what Braze holds per the store (None: unknown), `p_op`/`p_att` the delta
    pending for the membership and whether it may have reached Braze.
    """
    if op == ADD:
        maybe_gone = present is not True or (p_op == REMOVE and p_att)
        return ADD if maybe_gone else None
    maybe_held = present is not False or (p_op == ADD and p_att)
    return REMOVE if maybe_held else None
