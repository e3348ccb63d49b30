"""Scan bookkeeping: concurrent audience scans with bounded buffers, and the completed-scan ledger."""

from __future__ import annotations

import queue
import threading
import typing as t
from dataclasses import dataclass

import requests

_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class CompletedScan:
    """One audience scan pass that reached the last page."""

    audience_id: str
    audience_slug: str
    scan_id: str
    member_count: int
    members_without_id: int
    #: profiles with neither an id nor a `_uid`: served by Lytics, not emitted
    members_unusable: int
    started_at: str
    completed_at: str


class ScanLedger:
    """Completed scans of this run, handed from `audience_members` to `audience_snapshots`.

    The members stream records a scan only after the last record of its last page was
    emitted; the snapshot stream takes (pops) them, so a snapshot exists only for a finished
    scan and at most once per audience per run.
    """

    def __init__(self) -> None:
        self._done: dict[str, CompletedScan] = {}
        self.audiences_scanned = 0
        self.members = 0
        self.without_id = 0
        self.unusable = 0
        self.restarts = 0
        self.failures: list[str] = []

    def complete(self, scan: CompletedScan) -> None:
        """Record a finished scan pass."""
        self._done[scan.audience_id] = scan
        self.audiences_scanned += 1
        self.members += scan.member_count
        self.without_id += scan.members_without_id
        self.unusable += scan.members_unusable

    def fail(self, message: str) -> None:
        """Record an audience whose scan cannot be trusted: no snapshot, the run fails at the end."""
        self.failures.append(message)

    def take_all(self) -> list[CompletedScan]:
        """Remove and return every finished scan, in completion order."""
        done = list(self._done.values())
        self._done.clear()
        return done


class PassCheck:
    """Consistency of one scan pass: Lytics' `total` on every page, distinct profiles served.

    Profiles are told apart by `_uid` (else by their id value): a profile served twice in one
    pass (membership shifting under the cursor) is dropped from the page and counted in
    `duplicates`. The keys are kept as 64-bit hashes, one int per profile of the pass (about
    60 bytes each, freed when the pass ends). A hash collision can only drop a genuine member,
    which then makes the distinct count disagree with `total`, so no snapshot is emitted: it
    never causes a removal.
    """

    __slots__ = ("_keys", "distinct", "duplicates", "pages", "started_at", "totals")

    def __init__(self, started_at: str) -> None:
        self.started_at = started_at
        self._keys: set[int] = set()
        self.totals: list[int] = []
        self.distinct = 0
        self.duplicates = 0
        self.pages = 0

    def page(self, profiles: list[dict], total: int | None, id_field: str) -> list[dict]:
        """Record one page; return its profiles not served before in this pass."""
        self.pages += 1
        self._note_total(total)
        keys = self._keys
        out = []
        for profile in profiles:
            uid = profile.get("_uid")
            raw = uid if uid is not None else profile.get(id_field)
            if raw is not None and raw != "" and raw != []:
                key = hash(("u", str(uid)) if uid is not None else ("i", repr(raw)))
                if key in keys:
                    self.duplicates += 1
                    continue
                keys.add(key)
            self.distinct += 1
            out.append(profile)
        return out

    def _note_total(self, total: int | None) -> None:
        """Keep Lytics' `total` of this page when it differs from the previous one."""
        if total is not None and (not self.totals or self.totals[-1] != total):
            self.totals.append(total)

    def problem(self) -> str | None:
        """Why this pass is not a verifiable snapshot, or None.

        Lytics documents `total` without defining it; the tap reads it as the audience size
        and requires it to stay the same on every page and to equal the distinct profiles
        served. Without any `total` there is nothing to check (None).
        """
        if len(self.totals) > 1:
            return (
                f"Lytics' `total` changed during the scan ({' -> '.join(map(str, self.totals))}): "
                "the membership changed while it was read"
            )
        if self.totals and self.totals[0] != self.distinct:
            dup = f" ({self.duplicates} served twice)" if self.duplicates else ""
            return (
                f"the scan served {self.distinct} distinct profiles{dup} but Lytics' `total` "
                f"says {self.totals[0]}"
            )
        return None

    @property
    def total(self) -> int | None:
        """The total Lytics reported (None when it sent none)."""
        return self.totals[-1] if self.totals else None


@dataclass(frozen=True)
class ScanPage:
    """One page of a scan pass: its profiles not served before in the pass."""

    #: {"audience_id", "audience_slug"}
    audience: dict
    scan_id: str
    profiles: list[dict]


@dataclass(frozen=True)
class ScanRestart:
    """The pass `scan_id` is abandoned (`reason`); a new pass starts with a new scan_id."""

    audience: dict
    scan_id: str
    reason: str


@dataclass(frozen=True)
class ScanFailed:
    """The audience's scan cannot be trusted (`message`): no snapshot for it."""

    audience: dict
    scan_id: str
    message: str


@dataclass(frozen=True)
class ScanDone:
    """The pass `scan_id` reached its last page and agrees with Lytics (`check`)."""

    audience: dict
    scan_id: str
    check: PassCheck


#: What a scan reports to the emitting thread, in order per audience: pages, then restarts
#: (each followed by the pages of the new pass), then one `ScanDone` or `ScanFailed`.
ScanEvent = ScanPage | ScanRestart | ScanFailed | ScanDone
ScanSource = t.Callable[[requests.Session], t.Iterator[ScanEvent]]


class _Stop(Exception):
    """Internal: the consumer went away."""


def sequential_scans(sources: list[ScanSource], session: requests.Session) -> t.Iterator[ScanEvent]:
    """Run the scans one after another in the calling thread (the plain SDK pattern)."""
    for source in sources:
        yield from source(session)


class ConcurrentScans:
    """Run up to `concurrency` audience scans in daemon threads, `depth` pages ahead.

    A Lytics scan is a cursor chain, so one audience's pages are sequential: the only
    overlap is the next request with the emission of the current page. Several audiences
    are independent, so their chains run side by side; their pages reach the consumer
    interleaved (each audience's own events stay in order). Memory is bounded by the
    shared queue (`depth` pages per running scan) plus one page per worker. An exception
    in any worker stops every worker and is re-raised in the consumer.
    """

    def __init__(self, sources: list[ScanSource], concurrency: int, depth: int) -> None:
        self._sources: queue.SimpleQueue[ScanSource] = queue.SimpleQueue()
        for source in sources:
            self._sources.put(source)
        self._workers = max(1, min(concurrency, len(sources)))
        self._queue: queue.Queue[tuple[str, t.Any]] = queue.Queue(
            maxsize=max(1, depth) * self._workers
        )
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"lytics-scan-{i}", daemon=True)
            for i in range(self._workers)
        ]

    def _put(self, item: tuple[str, t.Any]) -> None:
        while True:
            if self._stop.is_set():
                raise _Stop
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def _work(self) -> None:
        try:
            with requests.Session() as session:
                while not self._stop.is_set():
                    try:
                        source = self._sources.get_nowait()
                    except queue.Empty:
                        break
                    for event in source(session):
                        self._put(("event", event))
            self._put(("exit", None))
        except _Stop:
            return
        except BaseException as exc:  # re-raised in the consumer thread
            try:
                self._put(("error", exc))
            except _Stop:
                return

    def __iter__(self) -> t.Iterator[ScanEvent]:
        """Yield scan events as they arrive; stops the workers when the consumer stops."""
        for thread in self._threads:
            thread.start()
        running = self._workers
        try:
            while running:
                try:
                    kind, value = self._queue.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    if not any(th.is_alive() for th in self._threads) and self._queue.empty():
                        msg = "Lytics scan workers ended without a result"
                        raise RuntimeError(msg) from None
                    continue
                if kind == "event":
                    yield value
                elif kind == "exit":
                    running -= 1
                else:
                    raise value
        finally:
            self._stop.set()
