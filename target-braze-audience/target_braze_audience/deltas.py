"""The delta pipeline: records in input order -> store -> grouped Braze requests.

Every record of every stream goes through one :class:`DeltaEngine` in the order it was
read, so an `audience_snapshots` record is always handled after the membership records
that preceded it on stdin (the SDK's per-stream sinks would drain independently).
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from target_braze_audience.client import BrazeClient, BrazeSettingError, TrackResult
from target_braze_audience.store import ADD, REMOVE, MembershipStore

CHUNK_ROWS = 10_000
PROGRESS_EVERY = 100_000

Batch = list[tuple[str, list[tuple[str, str]]]]


class DeliveryIncompleteError(Exception):
    """Some deltas could not be delivered; they stay pending for the next run."""


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
    rejected_objects: int = 0

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
        self.summary = RunSummary(dry_run=settings.dry_run)
        self._initialized = store.initialized_audiences()
        self._kinds: dict[str, int] = {}
        self._handlers: dict[str, t.Callable[[dict[str, t.Any]], None]] = {}
        self._dry_breakdown: dict[tuple[str, str, str], int] | None = None
        self._members: list[tuple[str, str, str]] = []
        self._explicit: list[tuple[str, str, str]] = []
        self._received_scan: dict[tuple[str, str], int] = defaultdict(int)
        self._records = 0
        self._id_field = settings.external_id_field
        self._aud_field = settings.audience_field
        self._invalid_by_stream: dict[str, int] = defaultdict(int)
        self._started = time.monotonic()
        self._next_progress = PROGRESS_EVERY

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
        no_id = f"no '{id_field}'"

        def handle_data(record: dict[str, t.Any]) -> None:
            self._records += 1
            get = record.get
            user = get(id_field)
            if user is not None and user.__class__ is not str:
                user = str(user)
            if "add" in record or "remove" in record:
                explicit(stream, record, user)
                return
            aud = get(aud_field) or stream
            scan = get("scan_id") or ""
            received[(aud, scan)] += 1
            if not user:
                invalid(stream, no_id)
                return
            if self._explicit:
                flush()
            members = self._members
            members.append((aud, user, scan))
            if len(members) >= CHUNK_ROWS:
                flush()

        return handle_data

    def _handle_explicit(self, stream: str, record: dict[str, t.Any], user: str | None) -> None:
        if not user:
            self._invalid(stream, f"no '{self._id_field}'")
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
            self._explicit.extend((user, str(v), op) for v in values if v)
        if len(self._explicit) >= CHUNK_ROWS:
            self.flush()

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
        baseline = not self.s.backfill_existing_users and aud not in self._initialized
        out = self.store.complete_snapshot(aud, scan, baseline=baseline, member_count=count)
        self._initialized.add(aud)
        stats.baseline += out.baseline
        stats.snapshot = f"complete ({count} members, {out.removes} to remove)" + (
            ", silent baseline" if baseline else ""
        )
        self.logger.info("Audience '%s': snapshot %s", aud, stats.snapshot)

    # -- delivery -----------------------------------------------------------------------

    def _batches(self) -> Iterator[Batch]:
        batch: Batch = []
        for user, ops in self.store.iter_pending_users():
            batch.append((user, ops))
            if len(batch) >= self.s.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _object(self, user: str, ops: list[tuple[str, str]]) -> dict[str, t.Any]:
        if self.s.identifier_field == "user_alias":
            obj: dict[str, t.Any] = {
                "user_alias": {"alias_name": user, "alias_label": self.s.alias_label}
            }
            obj["_update_existing_only"] = self.s.update_existing_only
        else:
            obj = {self.s.identifier_field: user}
            if self.s.update_existing_only:
                obj["_update_existing_only"] = True
        change: dict[str, list[str]] = {}
        adds = [a for a, op in ops if op == ADD]
        removes = [a for a, op in ops if op == REMOVE]
        if adds:
            change["add"] = adds
        if removes:
            change["remove"] = removes
        obj[self.s.attribute_name] = change
        return obj

    def deliver(self) -> None:
        """Send every pending/rejected delta, grouped per user, and record the answers."""
        summary = self.summary
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
                else:
                    st.removed += n
            return
        assert self.client is not None
        self.delivering = True
        self.store.mark_attempted()
        self.store.commit()
        fatal: BaseException | None = None
        last_log = time.monotonic()
        workers = self.s.max_concurrency
        inflight: dict[Future[TrackResult], Batch] = {}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="braze") as pool:
            try:
                for batch in self._batches():
                    if self.stop.is_set() or fatal or summary.failed_requests:
                        break
                    payload = {"attributes": [self._object(u, ops) for u, ops in batch]}
                    inflight[pool.submit(self.client.track, payload)] = batch
                    while len(inflight) >= workers * 2:
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

    def _collect(self, inflight: dict[Future[TrackResult], Batch]) -> BaseException | None:
        """Wait for at least one request and apply every finished one to the store."""
        done, _ = wait(list(inflight), timeout=0.5, return_when=FIRST_COMPLETED)
        fatal: BaseException | None = None
        summary = self.summary
        for fut in done:
            batch = inflight.pop(fut)
            try:
                res = fut.result()
            except BrazeSettingError as exc:
                self.stop.set()
                fatal = exc
                continue
            summary.http_attempts += res.attempts
            summary.rate_limited += res.rate_limited
            if not res.ok:
                summary.failed_requests += 1
                self.logger.error(
                    "Request of %d objects not delivered (%s); they stay pending",
                    len(batch),
                    res.error,
                )
                continue
            summary.requests += 1
            accepted: list[tuple[str, str, str]] = []
            rejected: list[tuple[str, str, str]] = []
            for idx, (user, ops) in enumerate(batch):
                reason = res.rejected.get(idx)
                if reason is None:
                    summary.objects_sent += 1
                    summary.values_sent += len(ops)
                    for aud, op in ops:
                        accepted.append((user, aud, op))
                        st = summary.audiences[aud]
                        if op == ADD:
                            st.added += 1
                        else:
                            st.removed += 1
                else:
                    summary.rejected_objects += 1
                    for aud, _op in ops:
                        rejected.append((user, aud, reason))
                        summary.audiences[aud].rejected += 1
            self.store.record_results(accepted, rejected)
        if done:
            self.store.commit()
        return fatal

    # -- end of run ----------------------------------------------------------------------

    def finish(self) -> RunSummary:
        """End of input: flush, deliver, log the summary. Raises when incomplete."""
        self.flush()
        self.summary.records = self._records
        received: dict[str, int] = defaultdict(int)
        for (aud, _scan), n in self._received_scan.items():
            received[aud] += n
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
        finally:
            self.store.commit()
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
                f"{self.summary.failed_requests} request(s) to Braze failed after retries; "
                "their deltas stay pending in the store for the next run"
            )
            raise DeliveryIncompleteError(msg)
        return self.summary

    def log_summary(self) -> None:
        """One line per audience plus totals."""
        s = self.summary
        verb = "would be" if s.dry_run else ""
        for aud, st in sorted(s.audiences.items()):
            self.logger.info(
                "Summary%s audience '%s': added=%d removed=%d unchanged=%d rejected=%d "
                "baseline=%d pending=%d records=%d; %s",
                " (dry run)" if s.dry_run else "",
                aud,
                st.added,
                st.removed,
                st.unchanged,
                st.rejected,
                st.baseline,
                st.pending,
                st.records,
                st.snapshot,
            )
        self.logger.info(
            "Summary%s: records=%d invalid=%d requests%s=%d objects=%d attribute values "
            "(data points)=%d rejected objects=%d failed requests=%d http attempts=%d "
            "rate limited=%d",
            " (dry run)" if s.dry_run else "",
            s.records,
            s.invalid_records,
            f" {verb}".rstrip(),
            s.requests,
            s.objects_sent,
            s.values_sent,
            s.rejected_objects,
            s.failed_requests,
            s.http_attempts,
            s.rate_limited,
        )
