"""Per-file, per-line progress of the ``braze_users`` stream (its STATE).

State (under ``bookmarks.<stream>``)::

    {"files": [{"path": uri, "size": n, "mtime_ns": t, "etag": e, "members": ["a.csv", ...],
                "complete": true, "rows": n}, ...],
     "current": {"path": uri, "size": n, "mtime_ns": t, "member": "a.csv", "line": 1234}}

The state holds integers, strings and booleans only, never a float: a stock SDK target
(singer-sdk 0.54.9, e.g. meltanolabs-target-postgres) reads floats in STATE as ``Decimal`` and
then fails to write that state back with plain ``json.dumps`` (``TypeError: Object of type
Decimal is not JSON serializable``), so the state would never be saved. Modification times are
therefore integer nanoseconds (``mtime_ns``); a state written by earlier versions, whose entries
hold a float ``mtime`` in seconds, is converted when it is read (same files, still skipped).

``etag`` (a string) is present for objects (``s3://``, ``gs://``, ``az://``) only.
``files`` lists what was fully read: a file whose path, size, mtime and etag match a ``complete``
entry is skipped without being opened, a zip member listed in ``members`` is skipped. After a
successful listing, entries (and ``current``) for files no longer matched are dropped, so the
state stays as large as the set of files ``paths`` matches. A file
with another size, mtime or etag is a new file and is read again from its start. ``current`` is
the member being read and the last physical line whose record has been *written to stdout*;
it is only advanced after the output buffer is flushed, so any STATE message (periodic, at the
end, or the one the SDK writes on SIGTERM) never claims a row the target has not been sent.
A run that stops mid-file resumes after that line; rows are never half-skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tap_braze_csv.sources import FileRef


def mtime_ns(mtime: Any) -> int:
    """Epoch seconds (float, ``Decimal``, int or numeric string) -> integer nanoseconds.

    Deterministic: the same listed mtime always gives the same integer, and an old state's
    float ``mtime`` (written by ``repr``, read back as float or ``Decimal``) gives the integer
    its file gets today.
    """
    return round(float(mtime) * 1_000_000_000)


def _file_key(ref: FileRef) -> tuple[str, int, int, str]:
    return (ref.uri, int(ref.size), mtime_ns(ref.mtime), ref.etag)


def _entry_key(item: Mapping[str, Any]) -> tuple[Any, int, int, str]:
    return (
        item.get("path"),
        int(item.get("size", -1)),
        int(item.get("mtime_ns", -1)),
        str(item.get("etag", "")),
    )


def _file_entry(ref: FileRef) -> dict[str, Any]:
    """Return a file's identity in the state: path, size, mtime and (objects) etag."""
    item: dict[str, Any] = {"path": ref.uri, "size": int(ref.size), "mtime_ns": mtime_ns(ref.mtime)}
    if ref.etag:
        item["etag"] = ref.etag
    return item


def _upgrade_entry(item: Any) -> None:
    """Replace an old state entry's float ``mtime`` (seconds) by ``mtime_ns`` (see module doc)."""
    if isinstance(item, dict) and "mtime" in item:
        old = item.pop("mtime")
        if "mtime_ns" not in item:
            try:
                item["mtime_ns"] = mtime_ns(old)
            except (TypeError, ValueError):
                item["mtime_ns"] = -1  # unreadable: the file is read again


def upgrade_stream_state(state: Any) -> None:
    """Convert a stream state written by earlier versions in place (float ``mtime`` entries)."""
    if not isinstance(state, dict):
        return
    files = state.get("files")
    for item in files if isinstance(files, list) else []:
        _upgrade_entry(item)
    _upgrade_entry(state.get("current"))


class Progress:
    """Per-run bookkeeping of the stream state (see module doc)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        upgrade_stream_state(state)
        files = state.get("files")
        self.files: list[dict[str, Any]] = files if isinstance(files, list) else []
        state["files"] = self.files

    def prune(self, refs: Sequence[FileRef]) -> list[str]:
        """Forget files that no longer match `paths`; return their paths.

        Call only with a complete listing (`find` succeeded): the state then holds at most one
        entry per file currently matched, instead of growing with every file ever read.
        """
        listed = {ref.uri for ref in refs}
        gone = [str(f.get("path")) for f in self.files if f.get("path") not in listed]
        if gone:
            self.files[:] = [f for f in self.files if f.get("path") in listed]
        cur = self.state.get("current")
        if isinstance(cur, dict) and cur.get("path") not in listed:
            self.state.pop("current", None)
        return gone

    def entry(self, ref: FileRef, *, create: bool = False) -> dict[str, Any] | None:
        """Return the ``files`` entry of this very file (same path, size, mtime, etag), if any."""
        key = _file_key(ref)
        for item in self.files:
            if _entry_key(item) == key:
                return item
        if not create:
            return None
        # A changed file (same path, other size/mtime/etag) replaces its old entry.
        self.files[:] = [f for f in self.files if f.get("path") != ref.uri]
        item = _file_entry(ref)
        item.update({"members": [], "complete": False, "rows": 0})
        self.files.append(item)
        return item

    def resume_line(self, ref: FileRef, member: str) -> int:
        """Return the line of ``member`` after which to resume (0: from its start)."""
        cur = self.state.get("current")
        if not isinstance(cur, dict):
            cur = {}
        if cur and _entry_key(cur) == _file_key(ref) and cur.get("member", "") == member:
            return int(cur.get("line", 0))
        entry = self.entry(ref)
        broken = entry.get("broken") if entry else None
        if isinstance(broken, dict) and broken.get("member", "") == member:
            return int(broken.get("line", 0))
        return 0

    def start_member(self, ref: FileRef, member: str, line: int) -> dict[str, Any]:
        """Make ``member`` the ``current`` one, read up to ``line``; return that entry."""
        cur = _file_entry(ref)
        cur.update({"member": member, "line": line})
        self.state["current"] = cur
        return cur

    def finish_member(self, ref: FileRef, member: str, rows: int) -> None:
        """Mark ``member`` read (its rows counted) and clear ``current``."""
        item = self.entry(ref, create=True)
        assert item is not None
        if member not in item["members"]:
            item["members"].append(member)
        item["rows"] = int(item.get("rows", 0)) + rows
        self.state.pop("current", None)

    def hold_broken(self, ref: FileRef, member: str, line: int) -> None:
        """Keep where a file's structure broke (its last good line), while other files are read."""
        item = self.entry(ref, create=True)
        assert item is not None
        item["broken"] = {"member": member, "line": int(line)}

    def finish_file(self, ref: FileRef) -> None:
        """Mark the file read: later runs skip it."""
        item = self.entry(ref, create=True)
        assert item is not None
        item["complete"] = True
        item.pop("broken", None)
