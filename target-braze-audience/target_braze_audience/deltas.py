"""The delta pipeline: records in input order -> store -> grouped Braze requests.

Every record of every stream goes through one :class:`DeltaEngine` in the order it was
read, so an `audience_snapshots` record is always handled after the membership records
that preceded it on stdin (the SDK's per-stream sinks would drain independently).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import typing as t
from collections import defaultdict, deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from target_braze_audience.client import BrazeClient, BrazeSettingError, TrackResult
from target_braze_audience.store import (
    ADD,
    REMOVE,
    AudienceBusyError,
    AudienceOp,
    Delta,
    DeltaKind,
    KeptMark,
    Membership,
    MembershipStore,
    Rejection,
    SeenMark,
)

CHUNK_ROWS = 10_000
PROGRESS_EVERY = 100_000
MAX_NAMED_REJECTIONS = 100
MAX_REFUSED_IN_A_ROW = 20
"""Single-object refusals without detail, with nothing accepted in between, that stop a run:
Braze is then refusing everything (a systemic cause), and splitting every request down to
single objects would cost two requests per user."""

Ops = list[AudienceOp]
Batch = list[tuple[str, Ops, list[str] | None]]
"""Objects of one request: (user, [(audience, op), ...], complete array or None).

With a complete array (`array_write_mode: set_when_cheaper`) the object assigns the whole
attribute (one data point); otherwise it carries the ops as add/remove (one per value).
The ops are what the store's bookkeeping records either way."""

ARRAY_WRITE_MODES = ("delta", "set_when_cheaper")

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


def _utcnow() -> dt.datetime:
    """Naive UTC now (the store's DateTime columns are naive)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@dataclass
class _SplitGroup:
    """Two halves of a request Braze refused without naming an object."""

    size: int
    left: int = 2
    all_accepted: bool = True


@dataclass
class _Sent:
    """One request's objects, and the split it is half of (if any)."""

    batch: Batch
    group: _SplitGroup | None = None


class BatchSizer:
    """Objects per request: `batch_size`, lowered to what the workspace accepts.

    Braze documents 75 objects per request, and 50 on some "Monthly Active Users"
    contracts; what it answers past such a limit is not documented (a 400 or 413 without
    per-object detail is assumed). A request refused without detail is split in two
    (:meth:`DeltaEngine._refused`); when both halves are accepted, the refusal was for
    its size, not for an object in it, and requests that big are not sent again this
    run. The size then settles by bisection between the largest accepted size and the
    smallest refused one; each probe costs at most one refused request.
    """

    def __init__(self, configured: int, logger: logging.Logger) -> None:
        """Start at the configured `batch_size`."""
        self.configured = configured
        self.largest_ok = 0
        self.too_big: int | None = None
        self.logger = logger
        self._settled = False
        self._open_groups = 0

    def careful(self) -> bool:
        """Whether to send one request at a time: a refusal's cause is being worked out.

        Requests formed ahead at a size being probed would all be refused alike.
        """
        return self._open_groups > 0 or (self.too_big is not None and not self._settled)

    def working_size(self) -> int:
        """Return the largest size known to work (`batch_size` until a refusal for size)."""
        return self.configured if self.too_big is None else max(self.largest_ok, 1)

    def size(self) -> int:
        """Objects to put in the next request."""
        if self.too_big is None:
            return self.configured
        lo = max(self.largest_ok, 1)
        return lo if self.too_big - lo <= 1 else (lo + self.too_big) // 2

    def split(self, sent: _Sent) -> _SplitGroup | None:
        """Start tracking whether a split request was refused for its size."""
        n = len(sent.batch)
        if n <= self.largest_ok:
            return None
        self._open_groups += 1
        return _SplitGroup(n)

    def refused(self, sent: _Sent) -> None:
        """Note a refused half: its parent's refusal is then explained by its content."""
        group = sent.group
        if group is not None:
            group.all_accepted = False
            group.left -= 1
            if group.left == 0:
                self._open_groups -= 1

    def accepted(self, sent: _Sent) -> None:
        """Braze accepted a request of len(sent.batch) objects."""
        n = len(sent.batch)
        if n > self.largest_ok and (self.too_big is None or n < self.too_big):
            self.largest_ok = n
        group = sent.group
        if group is not None:
            group.left -= 1
            if group.left == 0:
                self._open_groups -= 1
            smaller = self.too_big is None or group.size < self.too_big
            size_was_cause = group.left == 0 and group.all_accepted
            if size_was_cause and smaller and group.size > self.largest_ok:
                self.too_big = group.size
                self._settled = False
                self.logger.warning(
                    "Braze refused a request of %d objects whose halves it accepted: "
                    "this workspace takes fewer objects per request than batch_size=%d",
                    group.size,
                    self.configured,
                )
        if self.too_big is not None and not self._settled and self.size() == self.largest_ok:
            self._settled = True
            self.logger.warning(
                "batch_size settles at %d objects per request for this run (Braze refused "
                "%d). Set batch_size to %d to skip this probing on later runs.",
                self.largest_ok,
                self.too_big,
                self.largest_ok,
            )


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


@dataclass
class AudienceStats:
    """Per-audience outcome of a run."""

    records: int = 0
    added: int = 0
    removed: int = 0
    unchanged: int = 0
    rejected: int = 0
    baseline: int = 0
    pending: int = 0
    update_only: int = 0
    reoffered: int = 0
    kept: int = 0
    held: int = 0
    snapshot: str = "no snapshot"


@dataclass
class RunSummary:
    """What a run did (also logged)."""

    dry_run: bool = False
    audiences: dict[str, AudienceStats] = field(default_factory=lambda: defaultdict(AudienceStats))
    records: int = 0
    invalid_records: int = 0
    requests: int = 0
    http_attempts: int = 0
    rate_limited: int = 0
    objects_sent: int = 0
    values_sent: int = 0
    failed_requests: int = 0
    stopped_requests: int = 0  # not sent, or not retried, because the run was stopping
    rejected_objects: int = 0
    queued_requests: int = 0
    refused_requests: int = 0
    split_requests: int = 0
    batch_size: int = 0
    reoffered: int = 0
    update_only_gave_up: int = 0
    over_array_length: int = 0
    array_write_mode: str = "delta"
    data_points: int = 0  # what Braze bills for the accepted objects (values, or 1 per set)
    data_points_saved: int = 0  # vs delta mode: values of set objects minus one per set
    set_objects: int = 0  # accepted objects assigning the whole array
    delta_objects: int = 0  # accepted objects carrying add/remove

    def as_dict(self) -> dict[str, t.Any]:
        """Return a JSON-friendly copy."""
        out = {k: v for k, v in self.__dict__.items() if k != "audiences"}
        out["audiences"] = {a: dict(s.__dict__) for a, s in sorted(self.audiences.items())}
        return out


@dataclass
class EngineSettings:
    """The settings the pipeline needs (read once from the target config)."""

    attribute_name: str = "lytics_segments"
    identifier_field: str = "external_id"
    alias_label: str | None = None
    external_id_field: str = "external_id"
    audience_field: str = "audience_slug"
    snapshot_stream: str = "audience_snapshots"
    ignore_streams: frozenset[str] = frozenset({"audiences"})
    backfill_existing_users: bool = True
    update_existing_only: bool = False
    batch_size: int = 75
    max_concurrency: int = 4
    dry_run: bool = False
    max_array_length: int = 25
    update_only_reoffers: int = 5
    update_only_reoffer_hours: float = 24.0
    max_removal_fraction: float = 0.5
    array_write_mode: str = "delta"

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> EngineSettings:
        """Build from the validated target config."""
        return cls(
            attribute_name=config.get("attribute_name") or "lytics_segments",
            identifier_field=config.get("identifier_field") or "external_id",
            alias_label=config.get("alias_label"),
            external_id_field=config.get("external_id_field") or "external_id",
            audience_field=config.get("audience_field") or "audience_slug",
            snapshot_stream=config.get("snapshot_stream") or "audience_snapshots",
            ignore_streams=frozenset(config.get("ignore_streams", ["audiences"]) or ()),
            backfill_existing_users=bool(config.get("backfill_existing_users", True)),
            update_existing_only=bool(config.get("update_existing_only", False)),
            batch_size=max(1, min(int(config.get("batch_size") or 75), 75)),
            max_concurrency=max(1, int(config.get("max_concurrency") or 4)),
            dry_run=bool(config.get("dry_run", False)),
            max_array_length=int(config.get("max_array_length") or 25),
            update_only_reoffers=int(config.get("update_only_reoffers", 5)),
            update_only_reoffer_hours=float(config.get("update_only_reoffer_hours", 24.0)),
            max_removal_fraction=min(1.0, max(0.0, float(config.get("max_removal_fraction", 0.5)))),
            array_write_mode=config.get("array_write_mode") or "delta",
        )


_DATA, _SNAPSHOT, _IGNORE = 0, 1, 2


def _ignore(record: dict[str, t.Any]) -> None:
    """Drop a record of `ignore_streams`."""


class DeltaEngine:
    """Turns records into deltas in the store and delivers them to Braze."""

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
        self.client = client
        self.logger = logger
        self.stop = stop
        self.delivering = False
        self.summary = RunSummary(
            dry_run=settings.dry_run,
            batch_size=settings.batch_size,
            array_write_mode=settings.array_write_mode,
        )
        self._set_mode = settings.array_write_mode == "set_when_cheaper"
        self._known_audiences: list[str] | None = None
        self.sizer = BatchSizer(settings.batch_size, logger)
        self._resend: deque[_Sent] = deque()
        self._named = 0
        self._refused_in_a_row = 0
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
        self._last_failure: str | None = None
        self._next_progress = PROGRESS_EVERY
        # Audiences this run holds (store.claim), and those another run holds: their
        # records, explicit deltas and snapshots are skipped (counted per audience).
        self._claimed: set[str] = set()
        self.refused: dict[str, str] = {}
        self._refused_records: dict[str, int] = defaultdict(int)

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

    def handle(self, stream: str, record: dict[str, t.Any]) -> None:
        """Take one record, in input order."""
        handler = self._handlers.get(stream)
        if handler is None:
            handler = self.handler_for(stream)
        handler(record)

    def handler_for(self, stream: str) -> t.Callable[[dict[str, t.Any]], None]:
        """Return the function taking `stream`'s records, in input order.

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
        received = self._received_scan
        flush, explicit = self.flush, self._handle_explicit
        invalid = self._invalid
        no_id = f"no '{id_field}' (and no 'lytics_uid' to keep its memberships by)"
        no_aud = f"empty '{aud_field}' (an audience without a slug is never written to Braze)"
        kept_rows = self._kept
        short = MAX_ID_BYTES // 4
        # tuple.__new__ builds the typed row without NamedTuple's Python-level __new__
        # (about 1 us per record on this hot path; the row is the same SeenMark).
        row = tuple.__new__
        claimed, mine, skipped = self._claimed, self._mine, self._refused_records

        def handle_data(record: dict[str, t.Any]) -> None:
            self._records += 1
            get = record.get
            user = get(id_field)
            if user is not None and user.__class__ is not str:
                user = str(user)
            if "add" in record or "remove" in record:
                explicit(stream, record, user)
                return
            # The stream name stands for the audience only when records carry no audience
            # field at all; a present but empty one is an audience without a slug.
            aud = get(aud_field, stream)
            if not aud or aud.__class__ is not str:
                invalid(stream, no_aud)
                return
            if aud not in claimed and not mine(aud):
                skipped[aud] += 1  # another run holds the audience
                return
            scan = get("scan_id") or ""
            received[(aud, scan)] += 1
            uid = get("lytics_uid")
            if not user:
                if uid:
                    # Still a member, without an id: keep what Braze has for this person.
                    kept_rows.append(KeptMark(aud, scan, str(uid)))
                    if len(kept_rows) >= CHUNK_ROWS:
                        flush()
                    return
                invalid(stream, no_id)
                return
            if (len(user) > short or user.isspace()) and (why := id_problem(user)):
                invalid(stream, why)  # never sent to Braze
                if uid:  # like a member without an id: keep what Braze has for this person
                    kept_rows.append(KeptMark(aud, scan, str(uid)))
                    if len(kept_rows) >= CHUNK_ROWS:
                        flush()
                return
            if self._explicit:
                flush()
            members = self._members
            members.append(row(SeenMark, (aud, user, scan, uid if uid is None else str(uid))))
            if len(members) >= CHUNK_ROWS:
                flush()

        return handle_data

    def _handle_explicit(self, stream: str, record: dict[str, t.Any], user: str | None) -> None:
        if not user:
            self._invalid(stream, f"no '{self._id_field}'")
            return
        why = id_problem(user)
        if why:
            self._invalid(stream, why)
            return
        if self._members:
            self.flush()
        for op in (ADD, REMOVE):
            values = record.get(op)
            if values is None:
                continue
            if isinstance(values, str):
                values = [values]
            if not isinstance(values, list):
                self._invalid(stream, f"'{op}' is not a list of audience slugs")
                return
            for v in values:
                if not v:
                    continue
                if self._mine(str(v)):
                    self._explicit.append(Delta(user, str(v), op))
                else:
                    self._refused_records[str(v)] += 1
        if len(self._explicit) >= CHUNK_ROWS:
            self.flush()

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
        aud = record.get(self.s.audience_field) or record.get("audience_slug")
        scan = record.get("scan_id") or None
        count = record.get("member_count")
        if not aud:
            self.logger.warning(
                "Snapshot record without '%s': ignored, nobody removed", self.s.audience_field
            )
            return
        if not self._mine(aud):
            return  # another run holds the audience: its snapshot is ignored entirely
        stats = self.summary.audiences[aud]
        if not isinstance(count, int) or isinstance(count, bool):
            stats.snapshot = "snapshot without an integer member_count: nobody removed"
            self.logger.warning("Audience '%s': %s", aud, stats.snapshot)
            return
        got = self._received_for(aud, scan)
        if got != count:
            stats.snapshot = (
                f"incomplete: snapshot {scan or '(no scan_id)'} counts {count} members but "
                f"{got} arrived: nobody removed"
            )
            self.logger.warning("Audience '%s': %s", aud, stats.snapshot)
            return
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

    def _batches(self) -> Iterator[Batch]:
        """Pending users in requests of the current size (see :class:`BatchSizer`)."""
        batch: Batch = []
        size = self.sizer.size()
        plan = self._plan if self._set_mode else None
        for user, ops in self.store.iter_pending_users():
            batch.append((user, ops, None))
            if len(batch) >= size:
                yield plan(batch) if plan else batch
                batch = []
                size = self.sizer.size()
        if batch:
            yield plan(batch) if plan else batch

    def _plan(self, batch: Batch) -> Batch:
        """`set_when_cheaper`: complete arrays for users whose deltas cost more than 1.

        The complete array is what Braze must hold once this object applies: the
        memberships the store says Braze holds (so removals held by max_removal_fraction,
        and removals not sent this run, stay), minus the removes sent, plus the adds
        sent. One store query per request, not per user.

        A user leaving every audience keeps its remove deltas rather than an empty
        array: ``[]`` would also wipe values the store does not know about (written by
        someone else, or by an earlier request whose outcome was never confirmed), and
        Braze does not document whether an empty array clears the attribute; the saving
        (users leaving two or more audiences at once) is small.
        """
        wanted = [user for user, ops, _full in batch if len(ops) > 1]
        if not wanted:
            return batch
        if self._known_audiences is None:
            # Read once: a user's stored memberships change only when its own (single)
            # object is accepted, so those of users still to send are in audiences that
            # had members before delivery began. None (a first backfill): no queries.
            self._known_audiences = self.store.member_audiences()
        held = self.store.present_audiences(wanted, self._known_audiences)
        out: Batch = []
        for user, ops, _full in batch:
            full = None
            if len(ops) > 1:
                removes = {aud for aud, op in ops if op == REMOVE}
                adds = [aud for aud, op in ops if op != REMOVE]
                sent = removes.union(adds)
                full = [aud for aud in held.get(user, ()) if aud not in sent] + adds
                if not full:
                    full = None  # everything removed: remove deltas (see above)
            out.append((user, ops, full))
        return out

    def _object(self, user: str, ops: Ops, full: list[str] | None = None) -> dict[str, t.Any]:
        if self.s.identifier_field == "user_alias":
            obj: dict[str, t.Any] = {
                "user_alias": {"alias_name": user, "alias_label": self.s.alias_label}
            }
            obj["_update_existing_only"] = self.s.update_existing_only
        else:
            obj = {self.s.identifier_field: user}
            if self.s.update_existing_only:
                obj["_update_existing_only"] = True
        if full is not None:
            obj[self.s.attribute_name] = full
            return obj
        change: dict[str, list[str]] = {}
        adds = [a for a, op in ops if op != REMOVE]
        removes = [a for a, op in ops if op == REMOVE]
        if adds:
            change["add"] = adds
        if removes:
            change["remove"] = removes
        obj[self.s.attribute_name] = change
        return obj

    def _queue_reoffers(self) -> None:
        """Queue update-only adds due to be offered again (see store.record_update_only)."""
        counts = self.store.queue_reoffers(
            _utcnow(),
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
        """Send every pending/rejected delta, grouped per user, and record the answers."""
        summary = self.summary
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
            # What delivery would send, counted in SQL rather than by reading every delta
            # back: requests carry batch_size consecutive users, one object per user and
            # one attribute value per delta.
            users, breakdown = self.store.pending_breakdown()
            self._dry_breakdown = breakdown
            summary.requests += -(-users // self.s.batch_size)
            summary.objects_sent += users
            for (aud, op, _status), n in breakdown.items():
                summary.values_sent += n
                st = summary.audiences[aud]
                if op == ADD:
                    st.added += n
                elif op == REMOVE:
                    st.removed += n
                if op != REMOVE and self.s.update_existing_only:
                    st.update_only += n
            summary.data_points = summary.values_sent
            if self._set_mode:
                # Which users would get their complete array needs their memberships: this
                # reads every pending delta back (delta mode's dry run needs two counts).
                for planned in self._batches():
                    for _user, ops, full in planned:
                        if full is not None:
                            summary.set_objects += 1
                            summary.data_points_saved += len(ops) - 1
                summary.data_points -= summary.data_points_saved
            summary.delta_objects = summary.objects_sent - summary.set_objects
            return
        assert self.client is not None
        self.delivering = True
        self.store.mark_attempted()
        self.store.commit()
        fatal: BaseException | None = None
        last_log = time.monotonic()
        workers = self.s.max_concurrency
        inflight: dict[Future[TrackResult], _Sent] = {}
        batches = self._batches()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="braze") as pool:
            try:
                while not (self.stop.is_set() or fatal or summary.failed_requests):
                    if self._resend:
                        sent = self._resend.popleft()
                    else:
                        batch = next(batches, None)
                        if batch is None:
                            if not inflight:
                                break
                            fatal = self._collect(inflight) or fatal
                            continue
                        sent = _Sent(batch)
                    payload = {"attributes": [self._object(*entry) for entry in sent.batch]}
                    inflight[pool.submit(self.client.track, payload)] = sent
                    while len(inflight) >= (1 if self.sizer.careful() else workers * 2):
                        fatal = self._collect(inflight) or fatal
                    if time.monotonic() - last_log > 10:
                        last_log = time.monotonic()
                        self.logger.info(
                            "Delivered %d requests (%d objects, %d values) so far",
                            summary.requests,
                            summary.objects_sent,
                            summary.values_sent,
                        )
            finally:
                while inflight:
                    fatal = self._collect(inflight) or fatal
                self.delivering = False
        if fatal is not None:
            raise fatal

    def _collect(self, inflight: dict[Future[TrackResult], _Sent]) -> BaseException | None:
        """Wait for at least one request and apply every finished one to the store."""
        done, _ = wait(list(inflight), timeout=0.5, return_when=FIRST_COMPLETED)
        fatal: BaseException | None = None
        summary = self.summary
        for fut in done:
            sent = inflight.pop(fut)
            batch = sent.batch
            try:
                res = fut.result()
            except BrazeSettingError as exc:
                self.stop.set()
                fatal = exc
                continue
            summary.http_attempts += res.attempts
            summary.rate_limited += res.rate_limited
            if res.refused is not None:
                self._refused(sent, res)
                continue
            if not res.ok and res.stopped:
                summary.stopped_requests += 1  # SIGTERM: not a failure; deltas stay pending
                continue
            if not res.ok:
                summary.failed_requests += 1
                self._last_failure = res.error
                self.logger.error(
                    "Request of %d objects not delivered (%s); they stay pending",
                    len(batch),
                    res.error,
                )
                continue
            summary.requests += 1
            summary.queued_requests += res.queued
            self._refused_in_a_row = 0
            self.sizer.accepted(sent)
            self._record(batch, res.rejected)
        if done:
            self.store.commit()
        return fatal

    def _refused(self, sent: _Sent, res: TrackResult) -> None:
        """Braze refused a whole request: reject what it named, resend or split the rest."""
        summary = self.summary
        summary.refused_requests += 1
        self.sizer.refused(sent)
        batch = sent.batch
        named = {i: r for i, r in res.rejected.items() if i < len(batch)}
        if named:
            # Objects named in the refusal's `errors` are rejections like those of a 201;
            # Braze applied nothing else, so the others go again in a request of their own.
            picked = sorted(named)
            self._record([batch[i] for i in picked], {j: named[i] for j, i in enumerate(picked)})
            rest = [b for i, b in enumerate(batch) if i not in named]
            if rest:
                self._resend.append(_Sent(rest))
            return
        reason = f"Braze refused the request ({res.refused})"
        if len(batch) == 1:
            # Isolated: this object alone is refused. A rejection naming the user.
            self._record(batch, {0: reason})
            self._refused_in_a_row += 1
            if self._refused_in_a_row >= MAX_REFUSED_IN_A_ROW:
                summary.failed_requests += 1
                self.logger.error(
                    "Braze refused %d single-object requests in a row without naming a cause "
                    "(last: %s) and accepted nothing in between: it is refusing every request, "
                    "so delivery stops here; undelivered deltas stay pending",
                    self._refused_in_a_row,
                    res.refused,
                )
            return
        # No per-object detail: split and retry the halves until the cause is isolated.
        summary.split_requests += 1
        self.logger.info(
            "Braze refused a request of %d objects without naming any (%s): "
            "retrying it as two halves",
            len(batch),
            res.refused,
        )
        half = (len(batch) + 1) // 2
        group = self.sizer.split(sent)
        self._resend.appendleft(_Sent(batch[half:], group))
        self._resend.appendleft(_Sent(batch[:half], group))

    def _record(self, batch: Batch, rejected: t.Mapping[int, str]) -> None:
        """Record Braze's answer to the objects of one request in the store and summary."""
        summary = self.summary
        accepted: list[Delta] = []
        rejects: list[Rejection] = []
        update_only: list[Membership] = []
        uo = self.s.update_existing_only
        for idx, (user, ops, full) in enumerate(batch):
            reason = rejected.get(idx)
            if reason is None:
                summary.objects_sent += 1
                summary.values_sent += len(ops)
                if full is None:
                    summary.delta_objects += 1
                    summary.data_points += len(ops)
                else:
                    summary.set_objects += 1
                    summary.data_points += 1
                    summary.data_points_saved += len(ops) - 1
                for aud, op in ops:
                    st = summary.audiences[aud]
                    if op == REMOVE:
                        st.removed += 1
                        accepted.append(Delta(user, aud, REMOVE))
                        continue
                    accepted.append(Delta(user, aud, ADD))
                    if op == ADD:
                        st.added += 1
                    if uo:
                        st.update_only += 1
                        update_only.append(Membership(user, aud))
            else:
                summary.rejected_objects += 1
                for aud, _op in ops:
                    rejects.append(Rejection(user, aud, reason))
                    summary.audiences[aud].rejected += 1
                self._name_rejection(user, ops, reason)
        self.store.record_results(accepted, rejects)
        if update_only:
            summary.update_only_gave_up += self.store.record_update_only(
                update_only,
                max_reoffers=self.s.update_only_reoffers,
                now=_utcnow(),
            )

    def _name_rejection(self, user: str, ops: Ops, reason: str) -> None:
        """Log a rejected user with Braze's reason (the first MAX_NAMED of a run)."""
        self._named += 1
        if self._named > MAX_NAMED_REJECTIONS:
            return
        change = ", ".join(f"{'remove' if op == REMOVE else 'add'} {aud}" for aud, op in ops)
        self.logger.warning(
            "Braze rejected user '%s' (%s): %s. Kept; retried on every later run.",
            user,
            change,
            reason,
        )

    # -- end of run ----------------------------------------------------------------------

    def finish(self) -> RunSummary:
        """End of input: flush, deliver, log the summary. Raises when incomplete."""
        self.flush()
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
        if self.stop.is_set():
            # Terminated while reading: nothing computed this run is kept (rolled back).
            self.log_summary()
            raise TargetTerminatedError(15)
        try:
            self.deliver()
            self._check_array_length()
        finally:
            self.store.commit()
            if self._named > MAX_NAMED_REJECTIONS:
                self.logger.warning(
                    "... and %d more rejected users (not listed; the first %d are above)",
                    self._named - MAX_NAMED_REJECTIONS,
                    MAX_NAMED_REJECTIONS,
                )
            self.summary.batch_size = self.sizer.working_size()
            if self._dry_breakdown is not None:  # nothing changed since it was counted
                for (aud, _op, _status), n in self._dry_breakdown.items():
                    self.summary.audiences[aud].pending += n
            else:
                for aud, counts in self.store.pending_counts().items():
                    self.summary.audiences[aud].pending = counts.get("pending", 0) + counts.get(
                        "rejected", 0
                    )
            self.log_summary()
        if self.stop.is_set():
            raise TargetTerminatedError(15)
        if self.summary.failed_requests:
            msg = (
                f"{self.summary.failed_requests} request(s) to Braze failed after retries "
                f"({self._last_failure}); their deltas stay pending in the store for the next run"
            )
            if self.held:
                msg += "; " + " ".join(self.held)
            if self.refused:
                msg += "; " + self._refused_message()
            raise DeliveryIncompleteError(msg)
        if self.refused:
            raise AudienceBusyError(" ".join([self._refused_message(), *self.held]))
        return self.summary

    def _refused_message(self) -> str:
        names = ", ".join(f"'{a}' (held by {h})" for a, h in sorted(self.refused.items()))
        return (
            f"Audience(s) held by another run were not loaded by this run: {names}. Their "
            "records and snapshots were skipped: nothing of them was written, delivered or "
            "removed; everything else was delivered. No STATE was emitted, so the tap sends "
            "them again next run. Give each concurrent job its own audiences (README: "
            "Scaling out)."
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

    def log_summary(self) -> None:
        """One line per audience plus totals."""
        s = self.summary
        verb = "would be" if s.dry_run else ""
        for aud, st in sorted(s.audiences.items()):
            self.logger.info(
                "Summary%s audience '%s': added=%d removed=%d unchanged=%d rejected=%d "
                "baseline=%d pending=%d kept=%d held=%d records=%d update_only=%d reoffered=%d; %s",
                " (dry run)" if s.dry_run else "",
                aud,
                st.added,
                st.removed,
                st.unchanged,
                st.rejected,
                st.baseline,
                st.pending,
                st.kept,
                st.held,
                st.records,
                st.update_only,
                st.reoffered,
                st.snapshot,
            )
        self.logger.info(
            "Summary%s: records=%d invalid=%d requests%s=%d objects=%d attribute values=%d "
            "data points=%d (array_write_mode=%s: saved=%d, set objects=%d, delta objects=%d) "
            "rejected objects=%d failed requests=%d not sent (stopping)=%d "
            "http attempts=%d "
            "rate limited=%d queued (202)=%d refused requests=%d split=%d batch_size=%d "
            "users over max_array_length=%d",
            " (dry run)" if s.dry_run else "",
            s.records,
            s.invalid_records,
            f" {verb}".rstrip(),
            s.requests,
            s.objects_sent,
            s.values_sent,
            s.data_points,
            s.array_write_mode,
            s.data_points_saved,
            s.set_objects,
            s.delta_objects,
            s.rejected_objects,
            s.failed_requests,
            s.stopped_requests,
            s.http_attempts,
            s.rate_limited,
            s.queued_requests,
            s.refused_requests,
            s.split_requests,
            s.batch_size,
            s.over_array_length,
        )
        if self.s.update_existing_only:
            self.logger.info(
                "Summary%s: update_existing_only: %d adds %s sent update-only (Braze skips "
                "users it does not know, silently); %d of them re-offers of earlier "
                "update-only adds (each may cost a data point), %d no longer re-offered "
                "after update_only_reoffers=%d",
                " (dry run)" if s.dry_run else "",
                sum(st.update_only for st in s.audiences.values()),
                "would be" if s.dry_run else "were",
                s.reoffered,
                s.update_only_gave_up,
                self.s.update_only_reoffers,
            )
