"""The delta pipeline: records in input order -> store -> planned, delivered requests.

Every record of every stream goes through one :class:`DeltaEngine` in the order it was
read, so an `audience_snapshots` record is always handled after the membership records
that preceded it on stdin (the SDK's per-stream sinks would drain independently). The
engine turns records into deltas in the store and judges snapshots; at the end of input
it hands over to :mod:`planning` (what to send), :mod:`delivery` (sending it) and
:mod:`summary` (what the run did).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import typing as t
from collections import defaultdict

from target_braze_audience.delivery import Delivery, utcnow
from target_braze_audience.planning import RequestPlanner
from target_braze_audience.settings import ARRAY_WRITE_MODES, EngineSettings
from target_braze_audience.store import (
    ADD,
    REMOVE,
    AudienceBusyError,
    Delta,
    DeltaKind,
    KeptMark,
    MembershipStore,
    SeenMark,
)
from target_braze_audience.summary import RunSummary, log_summary, refused_message

if t.TYPE_CHECKING:
    from target_braze_audience.client import BrazeClient
    from target_braze_audience.store import SnapshotOutcome

__all__ = [
    "ARRAY_WRITE_MODES",
    "DeliveryIncompleteError",
    "DeltaEngine",
    "EngineSettings",
    "RemovalsHeldError",
    "RunSummary",
    "TargetTerminatedError",
    "id_problem",
]

CHUNK_ROWS = 10_000
PROGRESS_EVERY = 100_000

# Braze's SDKs refuse user ids longer than 997 bytes (UTF-8); its REST docs state no limit,
# so the same bound is applied to every identifier rather than sending ids no SDK could log
# in as. Ids up to MAX_ID_BYTES // 4 characters cannot exceed it: only longer ones are encoded.
MAX_ID_BYTES = 997


def id_problem(user: str) -> str | None:
    """Why Braze cannot take `user` as an identifier, or None when it can."""
    if user.isspace():
        return "identifier is only whitespace"
    if len(user) > MAX_ID_BYTES // 4:
        size = len(user.encode())
        if size > MAX_ID_BYTES:
            return (
                f"identifier is {size} bytes long, more than the {MAX_ID_BYTES} Braze "
                f"takes (starts {user[:32]!r})"
            )
    return None


class DeliveryIncompleteError(Exception):
    """Some deltas could not be delivered; they stay pending for the next run."""


class RemovalsHeldError(Exception):
    """Removals held back by `max_removal_fraction`; everything else was delivered."""


class TargetTerminatedError(BaseException):
    """SIGTERM/SIGINT: stop without removing anyone; undelivered deltas stay pending."""

    def __init__(self, signum: int) -> None:
        """Remember the signal number (exit code 128 + signum)."""
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


_DATA, _SNAPSHOT, _IGNORE = 0, 1, 2


def _ignore(record: dict[str, t.Any]) -> None:
    """Drop a record of `ignore_streams`."""


class DeltaEngine:
    """Turns records into deltas in the store; at the end of input, delivers them to Braze."""

    def __init__(
        self,
        settings: EngineSettings,
        store: MembershipStore,
        client: BrazeClient | None,
        logger: logging.Logger,
        stop: threading.Event,
    ) -> None:
        """Wire the pipeline; `client` may be None in dry run."""
        self.s = settings
        self.store = store
        self.logger = logger
        self.stop = stop
        self.summary = RunSummary(
            dry_run=settings.dry_run,
            batch_size=settings.batch_size,
            array_write_mode=settings.array_write_mode,
        )
        self.planner = RequestPlanner(settings, store)
        self.delivery = Delivery(settings, store, client, self.planner, self.summary, logger, stop)
        self._initialized = store.initialized_audiences()
        self._kinds: dict[str, int] = {}
        self._handlers: dict[str, t.Callable[[dict[str, t.Any]], None]] = {}
        self._dry_breakdown: dict[DeltaKind, int] | None = None
        self._members: list[SeenMark] = []
        self._kept: list[KeptMark] = []
        self._snapshotted: set[str] = set()
        self.held: list[str] = []
        self._explicit: list[Delta] = []
        self._received_scan: dict[tuple[str, str], int] = defaultdict(int)
        self._records = 0
        self._id_field = settings.external_id_field
        self._aud_field = settings.audience_field
        self._invalid_by_stream: dict[str, int] = defaultdict(int)
        self._started = time.monotonic()
        self._next_progress = PROGRESS_EVERY
        # Audiences this run holds (store.claim), and those another run holds: their
        # records, explicit deltas and snapshots are skipped (counted per audience).
        self._claimed: set[str] = set()
        self.refused: dict[str, str] = {}
        self._refused_records: dict[str, int] = defaultdict(int)

    @property
    def delivering(self) -> bool:
        """Whether requests are being sent (a signal then lets them finish first)."""
        return self.delivery.delivering

    # -- input -----------------------------------------------------------------------

    def _classify(self, stream: str) -> int:
        if stream == self.s.snapshot_stream:
            kind = _SNAPSHOT
        elif stream in self.s.ignore_streams:
            kind = _IGNORE
            self.logger.info("Ignoring stream '%s' (ignore_streams)", stream)
        else:
            kind = _DATA
        self._kinds[stream] = kind
        return kind

    def handler_for(self, stream: str) -> t.Callable[[dict[str, t.Any]], None]:
        """Return the function taking `stream`'s records, in input order.

        The engine's one entry point for records: the target's validated fast path and
        the sink (records that went through stream maps) both call what it returns.

        Built once per stream with everything that does not change per record (kind,
        field names, the default audience) bound as locals: the per-record path is the
        hot loop of the target.
        """
        handler = self._handlers.get(stream)
        if handler is not None:
            return handler
        kind = self._kinds.get(stream)
        if kind is None:
            kind = self._classify(stream)
        if kind == _IGNORE:
            handler = _ignore
        elif kind == _SNAPSHOT:

            def handler(record: dict[str, t.Any]) -> None:
                self.flush()
                self._snapshot(record)

        else:
            handler = self._data_handler(stream)
        self._handlers[stream] = handler
        return handler

    def _data_handler(self, stream: str) -> t.Callable[[dict[str, t.Any]], None]:
        id_field, aud_field = self._id_field, self._aud_field
        received, claimed = self._received_scan, self._claimed
        explicit, accept = self._handle_explicit, self._accept_audience
        add_member = self._member_adder(stream)

        def handle_data(record: dict[str, t.Any]) -> None:
            self._records += 1
            if "add" in record or "remove" in record:
                explicit(stream, record, record.get(id_field))
                return
            get = record.get
            # The stream name stands for the audience only when records carry no audience
            # field at all; a present but empty one is an audience without a slug.
            aud = get(aud_field, stream)
            if (aud.__class__ is not str or aud not in claimed) and not accept(stream, aud):
                return
            scan = get("scan_id") or ""
            received[(aud, scan)] += 1
            add_member(aud, scan, get(id_field), get("lytics_uid"))

        return handle_data

    def _member_adder(self, stream: str) -> t.Callable[[str, str, t.Any, t.Any], None]:
        """Return the function buffering one member of an audience this run holds."""
        flush, usable_id = self.flush, self._usable_id
        short = MAX_ID_BYTES // 4
        # tuple.__new__ builds the typed row without NamedTuple's Python-level __new__
        # (about 1 us per record on this hot path; the row is the same SeenMark).
        row = tuple.__new__

        def add_member(aud: str, scan: str, user: t.Any, uid: t.Any) -> None:
            # Ids up to `short` characters need no closer look (see MAX_ID_BYTES).
            if user.__class__ is not str or not 0 < len(user) <= short or user.isspace():
                user = usable_id(stream, aud, scan, user, uid)
                if user is None:
                    return
            if self._explicit:
                flush()
            members = self._members
            members.append(row(SeenMark, (aud, user, scan, uid if uid is None else str(uid))))
            if len(members) >= CHUNK_ROWS:
                flush()

        return add_member

    def _accept_audience(self, stream: str, aud: t.Any) -> bool:
        """Tell whether records of `aud` go to the store.

        Not when it is empty or not text (counted invalid), nor when another run holds it
        (counted, skipped).
        """
        if not aud or aud.__class__ is not str:
            self._invalid(
                stream,
                f"empty '{self._aud_field}' (an audience without a slug is never written to Braze)",
            )
            return False
        if self._mine(aud):
            return True
        self._refused_records[aud] += 1  # another run holds the audience
        return False

    def _usable_id(self, stream: str, aud: str, scan: str, user: t.Any, uid: t.Any) -> str | None:
        """Return the id of a member whose id the fast check doubted, or None (not sent).

        A member without an id, or with one Braze cannot take (counted invalid), keeps what
        Braze has for this person when it has a Lytics uid.
        """
        if user is not None and user.__class__ is not str:
            user = str(user)
        if user:
            why = id_problem(user) if len(user) > MAX_ID_BYTES // 4 or user.isspace() else None
            if not why:
                return user
            self._invalid(stream, why)  # never sent to Braze
        elif not uid:
            self._invalid(
                stream, f"no '{self._id_field}' (and no 'lytics_uid' to keep its memberships by)"
            )
            return None
        if uid:  # still a member, without a usable id: keep what Braze has for this person
            self._kept.append(KeptMark(aud, scan, str(uid)))
            if len(self._kept) >= CHUNK_ROWS:
                self.flush()
        return None

    def _handle_explicit(self, stream: str, record: dict[str, t.Any], user: t.Any) -> None:
        if user is not None and user.__class__ is not str:
            user = str(user)
        why = id_problem(user) if user else f"no '{self._id_field}'"
        if why:
            self._invalid(stream, why)
            return
        if self._members:
            self.flush()
        for op in (ADD, REMOVE):
            values = record.get(op)
            if values is not None and not self._explicit_op(stream, user, op, values):
                return
        if len(self._explicit) >= CHUNK_ROWS:
            self.flush()

    def _explicit_op(self, stream: str, user: str, op: str, values: t.Any) -> bool:
        """Queue one `add`/`remove` of an explicit record.

        False (counted invalid) when it is not a list of audience slugs (nor one slug).
        """
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list):
            self._invalid(stream, f"'{op}' is not a list of audience slugs")
            return False
        self._queue_explicit(user, op, values)
        return True

    def _queue_explicit(self, user: str, op: str, audiences: list[t.Any]) -> None:
        """Queue `op` of `user` for each audience this run holds (others are counted)."""
        for v in audiences:
            if not v:
                continue
            if self._mine(str(v)):
                self._explicit.append(Delta(user, str(v), op))
            else:
                self._refused_records[str(v)] += 1

    def _mine(self, audience: str) -> bool:
        """Hold `audience` for this run (first touch, before anything of it is written).

        False when another run holds it (shared PostgreSQL store): logged once, and the
        run then skips it entirely and fails at the end naming it.
        """
        if audience in self._claimed:
            return True
        holder = self.store.claim(audience)
        if holder is None:
            self._claimed.add(audience)
            if self.store.shares_store and self.store.is_initialized(audience):
                # Initialized by another run since this one started: no silent baseline.
                self._initialized.add(audience)
            return True
        if audience not in self.refused:
            self.refused[audience] = holder
            self.summary.audiences[audience].snapshot = (
                f"REFUSED: another run holds this audience ({holder}); its records and "
                "snapshot were skipped, nothing of it written, delivered or removed"
            )
            self.logger.error(
                "Audience '%s' is held by another run: %s. This run skips the audience "
                "(records, deltas and snapshot: nobody added or removed), delivers its other "
                "audiences and exits 1.",
                audience,
                holder,
            )
        return False

    def _received_for(self, audience: str, scan: str | None) -> int:
        if scan:
            return self._received_scan.get((audience, scan), 0)
        return sum(n for (a, _s), n in self._received_scan.items() if a == audience)

    def _invalid(self, stream: str, why: str) -> None:
        self.summary.invalid_records += 1
        n = self._invalid_by_stream[stream] = self._invalid_by_stream[stream] + 1
        if n <= 5:
            self.logger.warning(
                "Stream '%s' record #%d skipped: %s (identifier field setting: external_id_field)",
                stream,
                self._records,
                why,
            )

    def flush(self) -> None:
        """Move buffered records into the store (in input order); log progress."""
        if self._records >= self._next_progress:
            # Checked here (every chunk) rather than per record: the hot path stays lean.
            while self._next_progress <= self._records:
                self._next_progress += PROGRESS_EVERY
            rate = self._records / max(time.monotonic() - self._started, 1e-6)
            self.logger.info("Read %d records (%.0f records/s)", self._records, rate)
        if self._kept:
            self.store.add_kept(self._kept)
            self._kept.clear()
        if self._members:
            rows, self._members = self._members, []
            silent: set[str] = set()
            if not self.s.backfill_existing_users:
                silent = {r[0] for r in rows} - self._initialized
            unchanged = self.store.add_seen(rows, silent)
            for aud, n in unchanged.items():
                self.summary.audiences[aud].unchanged += n
        if self._explicit:
            rows_x, self._explicit = self._explicit, []
            self.store.apply_explicit(rows_x)

    def _snapshot(self, record: dict[str, t.Any]) -> None:
        """Judge a snapshot record; a complete one lets the store compute removals."""
        judged = self._complete_snapshot(record)
        if judged is None:
            return
        aud, scan, count = judged
        if aud in self._snapshotted:
            # A second snapshot of the audience in one run (another scan, another tap): it
            # may contradict the first, so only members seen in none of this run's scans
            # are removed.
            self.logger.warning(
                "Audience '%s': a second complete snapshot in this run (scan %s): removing "
                "only members seen in none of this run's scans",
                aud,
                scan or "(no scan_id)",
            )
            scan = None
        self._snapshotted.add(aud)
        baseline = not self.s.backfill_existing_users and aud not in self._initialized
        out = self.store.complete_snapshot(
            aud,
            scan,
            baseline=baseline,
            member_count=count,
            max_removal_fraction=self.s.max_removal_fraction,
        )
        self._initialized.add(aud)
        self._snapshot_outcome(aud, count, record, out, baseline=baseline)

    def _complete_snapshot(self, record: dict[str, t.Any]) -> tuple[str, str | None, int] | None:
        """Return (audience, scan, member_count) when the snapshot is complete, else None.

        Every other case (no audience, another run's audience, no integer member_count,
        fewer or more members arrived than counted) is logged and removes nobody.
        """
        aud = record.get(self.s.audience_field) or record.get("audience_slug")
        scan = record.get("scan_id") or None
        count = record.get("member_count")
        if not aud:
            self.logger.warning(
                "Snapshot record without '%s': ignored, nobody removed", self.s.audience_field
            )
            return None
        if not self._mine(aud):
            return None  # another run holds the audience: its snapshot is ignored entirely
        stats = self.summary.audiences[aud]
        if not isinstance(count, int) or isinstance(count, bool):
            stats.snapshot = "snapshot without an integer member_count: nobody removed"
            self.logger.warning("Audience '%s': %s", aud, stats.snapshot)
            return None
        got = self._received_for(aud, scan)
        if got != count:
            stats.snapshot = (
                f"incomplete: snapshot {scan or '(no scan_id)'} counts {count} members but "
                f"{got} arrived: nobody removed"
            )
            self.logger.warning("Audience '%s': %s", aud, stats.snapshot)
            return None
        return aud, scan, count

    def _snapshot_outcome(
        self,
        aud: str,
        count: int,
        record: dict[str, t.Any],
        out: SnapshotOutcome,
        *,
        baseline: bool,
    ) -> None:
        """Count and log what a complete snapshot did (held removals fail the run later)."""
        stats = self.summary.audiences[aud]
        stats.baseline += out.baseline
        stats.kept += out.kept
        stats.held += out.held
        without_id = record.get("members_without_id")
        kept = (
            f", kept: {without_id} members without an id"
            if isinstance(without_id, int) and without_id
            else ""
        )
        if out.kept:
            kept += f", {out.kept} stored memberships kept by lytics_uid"
        if out.held:
            pct = 100.0 * out.held / max(out.stored, 1)
            message = (
                f"Audience '{aud}': this snapshot ({count} members) would remove {out.held} of "
                f"the {out.stored} members Braze has for it ({pct:.0f}%), more than "
                f"max_removal_fraction={self.s.max_removal_fraction:g}. These removals are held: "
                "nothing is removed and the next run decides again. If the audience really "
                "shrank, run once with max_removal_fraction=1."
            )
            self.held.append(message)
            stats.snapshot = f"complete ({count} members{kept}), {out.held} removals HELD"
            self.logger.error("%s", message)
        else:
            stats.snapshot = f"complete ({count} members, {out.removes} to remove{kept})" + (
                ", silent baseline" if baseline else ""
            )
        self.logger.info("Audience '%s': snapshot %s", aud, stats.snapshot)

    # -- delivery -----------------------------------------------------------------------

    def _queue_reoffers(self) -> None:
        """Queue update-only adds due to be offered again (see store.record_update_only)."""
        counts = self.store.queue_reoffers(
            utcnow(),
            enabled=self.s.update_existing_only,
            max_reoffers=self.s.update_only_reoffers,
            first_delay=dt.timedelta(hours=self.s.update_only_reoffer_hours),
        )
        for aud, n in counts.items():
            self.summary.audiences[aud].reoffered += n
            self.summary.reoffered += n
        if counts:
            self.logger.info(
                "Re-offering %d update-only adds Braze may have skipped (user unknown to it "
                "then); bounded by update_only_reoffers=%d per membership",
                sum(counts.values()),
                self.s.update_only_reoffers,
            )

    def deliver(self) -> None:
        """Send every pending/rejected delta (dry run: count what would be sent)."""
        # Deltas left in the store for audiences not in this run's input (earlier failures,
        # rejections, re-offers): delivered when no other run holds the audience.
        for aud, holder in self.store.claim_leftovers().items():
            if aud not in self.refused:
                self.logger.info(
                    "Audience '%s': deltas left from earlier runs are not delivered by this "
                    "run: %s holds the audience and delivers them",
                    aud,
                    holder,
                )
        self._queue_reoffers()
        if self.s.dry_run:
            self._dry_breakdown = self.planner.count_dry_run(self.summary)
            return
        self.delivery.run()

    # -- end of run ----------------------------------------------------------------------

    def finish(self) -> RunSummary:
        """End of input: flush, deliver, log the summary. Raises when incomplete."""
        self.flush()
        self._count_records()
        if self.stop.is_set():
            # Terminated while reading: nothing computed this run is kept (rolled back).
            self.log_summary()
            raise TargetTerminatedError(15)
        try:
            self.deliver()
            self._check_array_length()
        finally:
            self.store.commit()
            self.delivery.log_unnamed_rejections()
            self.summary.batch_size = self.delivery.sizer.working_size()
            self._count_pending()
            self.log_summary()
        self._raise_if_incomplete()
        return self.summary

    def _count_records(self) -> None:
        """Count records read per audience; audiences without a complete snapshot say so."""
        self.summary.records = self._records
        received: dict[str, int] = defaultdict(int)
        for (aud, _scan), n in self._received_scan.items():
            received[aud] += n
        for aud, n in self._refused_records.items():
            self.summary.audiences[aud].records = n
        for aud, n in received.items():
            st = self.summary.audiences[aud]
            st.records = n
            if st.snapshot == "no snapshot":
                st.snapshot = "no complete snapshot this run: nobody removed"
                self.logger.info("Audience '%s': %s", aud, st.snapshot)

    def _count_pending(self) -> None:
        """Deltas left pending (or rejected) per audience after delivery."""
        if self._dry_breakdown is not None:  # nothing changed since it was counted
            for (aud, _op, _status), n in self._dry_breakdown.items():
                self.summary.audiences[aud].pending += n
            return
        for aud, counts in self.store.pending_counts().items():
            self.summary.audiences[aud].pending = counts.get("pending", 0) + counts.get(
                "rejected", 0
            )

    def _raise_if_incomplete(self) -> None:
        """Raise when stopped, a request failed, or another run holds an audience."""
        if self.stop.is_set():
            raise TargetTerminatedError(15)
        if self.summary.failed_requests:
            msg = (
                f"{self.summary.failed_requests} request(s) to Braze failed after retries "
                f"({self.delivery.last_failure}); their deltas stay pending in the store for "
                "the next run"
            )
            if self.held:
                msg += "; " + " ".join(self.held)
            if self.refused:
                msg += "; " + refused_message(self.refused)
            raise DeliveryIncompleteError(msg)
        if self.refused:
            raise AudienceBusyError(" ".join([refused_message(self.refused), *self.held]))

    def log_summary(self) -> None:
        """Log the run summary (see :func:`summary.log_summary`)."""
        log_summary(
            self.summary,
            self.logger,
            update_existing_only=self.s.update_existing_only,
            update_only_reoffers=self.s.update_only_reoffers,
        )

    def _check_array_length(self) -> None:
        """Warn about users whose attribute would hold more values than Braze keeps.

        Braze caps array attributes (25 values by default, up to 100; 500 on newer
        workspaces) and drops the oldest values beyond the cap. Only counted when this
        run added values: nobody else can have crossed the line.
        """
        s = self.summary
        if not any(st.added or st.reoffered for st in s.audiences.values()):
            return
        limit = self.s.max_array_length
        count, sample = self.store.users_over_array_length(limit)
        s.over_array_length = count
        if count:
            self.logger.warning(
                "%d user(s) would hold more than max_array_length=%d values in '%s' "
                "(e.g. %s): beyond its array cap Braze keeps the newest values and drops "
                "the oldest. Raise the attribute's cap in Braze (25 by default, up to 100; "
                "500 on newer workspaces) and set max_array_length to match.",
                count,
                limit,
                self.s.attribute_name,
                ", ".join(repr(u) for u in sample),
            )
