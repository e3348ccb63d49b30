"""Scan bookkeeping: the page prefetcher and the ledger of completed scans."""

from __future__ import annotations

import queue
import threading
import typing as t
from dataclasses import dataclass

_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class CompletedScan:
    """One audience scan pass that reached the last page."""

    audience_id: str
    audience_slug: str
    scan_id: str
    member_count: int
    skipped_without_id: int
    started_at: str
    completed_at: str


class ScanLedger:
    """Completed scans of this run, handed from `audience_members` to `audience_snapshots`.

    The members stream records a scan only after its last page; the snapshot stream takes
    (pops) it, so a snapshot exists only for a finished scan and at most once per run.
    """

    def __init__(self) -> None:
        self._done: dict[str, CompletedScan] = {}
        self.audiences_scanned = 0
        self.members = 0
        self.skipped = 0
        self.restarts = 0

    def complete(self, scan: CompletedScan) -> None:
        """Record a finished scan pass."""
        self._done[scan.audience_id] = scan
        self.audiences_scanned += 1
        self.members += scan.member_count
        self.skipped += scan.skipped_without_id

    def take(self, audience_id: str) -> CompletedScan | None:
        """Remove and return the finished scan of an audience, if any."""
        return self._done.pop(audience_id, None)


class _Stop(Exception):
    """Internal: the consumer went away."""


class PagePrefetcher:
    """Run a page generator in a daemon thread, at most `depth` pages ahead of the consumer.

    The SDK's `request_records` fetches page N+1 only after page N's records were emitted;
    the Lytics cursor makes pages sequential, so overlapping the next request with the
    emission of the current page is the available pipelining. Memory is bounded by `depth`
    pages. Exceptions raised in the thread are re-raised in the consumer, in order.
    """

    def __init__(self, pages: t.Callable[[], t.Iterator[list[dict]]], depth: int) -> None:
        self._pages = pages
        self._queue: queue.Queue[tuple[str, t.Any]] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lytics-scan-prefetch", daemon=True)

    def _put(self, item: tuple[str, t.Any]) -> None:
        while True:
            if self._stop.is_set():
                raise _Stop
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            for page in self._pages():
                self._put(("page", page))
            self._put(("end", None))
        except _Stop:
            return
        except BaseException as exc:  # re-raised in the consumer thread
            try:
                self._put(("error", exc))
            except _Stop:
                return

    def __iter__(self) -> t.Iterator[list[dict]]:
        """Yield pages in order; stops the thread when the consumer stops early."""
        self._thread.start()
        try:
            while True:
                try:
                    kind, value = self._queue.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    if not self._thread.is_alive() and self._queue.empty():
                        msg = "Lytics scan prefetch thread ended without a result"
                        raise RuntimeError(msg) from None
                    continue
                if kind == "page":
                    yield value
                elif kind == "end":
                    return
                else:
                    raise value
        finally:
            self._stop.set()
