"""The `on_bad_row` policy for rows of a CSV member: fail, skip, or keep unparsable cells raw.

A row with the wrong number of fields, or a cell that does not convert (`on_bad_row: skip`),
is skipped and counted (the first MAX_BAD_ROW_LOGS logged); with `on_bad_row: fail` it stops
the run with an error naming the file and line, after what was read before it is written.
Broken CSV structure (a quote never closed, a cell over the field limit) ends the member:
:class:`StructureBroken`, or the same error under `fail`.
"""

from __future__ import annotations

import contextlib
import csv
import logging
from collections.abc import Sequence
from typing import Any

from tap_braze_csv.columns import Column
from tap_braze_csv.convert import find_bad_cell
from tap_braze_csv.errors import BrazeCsvError
from tap_braze_csv.output import Writer

#: Bad rows logged one by one before only counting.
MAX_BAD_ROW_LOGS = 10


class StructureBroken(Exception):
    """A member's CSV structure broke (quote never closed, cell over the field limit).

    Nothing after the break can be read as rows: the parser would resume inside a cell.
    """

    def __init__(self, label: str, start: int, end: int, lines_lost: int, reason: str) -> None:
        super().__init__(
            f"{label}: line {start}: {reason}; the file's structure breaks here, "
            f"{lines_lost} line(s) from line {start} on were not read"
        )
        self.label = label
        self.lines_lost = lines_lost


class BadRowPolicy:
    """What to do with one member's bad rows (`on_bad_row`), and how many were skipped."""

    def __init__(self, mode: str, label: str, writer: Writer, logger: logging.Logger) -> None:
        self.skip_bad = mode != "fail"
        self.keep_raw = mode == "keep"
        self.label = label
        self.writer = writer
        self.logger = logger
        self.skipped = 0

    def bad_row(self, line: int, reason: str) -> None:
        """Skip and count the row starting at ``line``; under `fail` raise, naming it."""
        msg = f"{self.label}: line {line}: {reason}"
        if not self.skip_bad:
            self.writer.flush()
            raise BrazeCsvError(msg + " (on_bad_row: fail)")
        self.skipped += 1
        if self.skipped <= MAX_BAD_ROW_LOGS:
            self.logger.warning("Skipping bad row: %s", msg)

    def wrong_width(self, row: list[str], line: int, width: int) -> None:
        """Treat a row whose field count is not the header's as bad (a blank line is no row)."""
        if row and row != [""]:
            self.bad_row(line, f"{len(row)} fields, the header has {width}")

    def unconvertible(self, kept: Sequence[Column], row: list[str], line: int) -> None:
        """Treat a row with a cell that does not convert as bad, naming the column and value."""
        found = find_bad_cell(kept, row)
        if found is None:  # pragma: no cover - defensive
            self.bad_row(line, "a cell could not be converted")
            return
        col, value, why = found
        shown = value if len(value) <= 40 else value[:37] + "..."
        self.bad_row(
            line,
            f"column {col.header!r} ({col.name}, {col.type}): "
            f"{shown!r} is not a valid {col.type} ({why})",
        )

    def structure_broken(self, exc: csv.Error, text: Any, start: int, line: int) -> BaseException:
        """Return the error ending this member (parser error ``exc`` on lines ``start``-``line``).

        Structural damage: the parser cannot tell where the next row starts (after a cell over
        the field limit it would go on *inside* that cell and turn its text into phantom rows).
        The member stops here and is never resumed past the break.
        """
        reason = str(exc)
        if "field limit" in reason:
            reason = f"a quoted cell over {csv.field_size_limit()} characters: {reason}"
        elif "end of data" in reason or line > start:
            reason = f"unterminated quoted field (from line {start} to line {line}): {reason}"
        else:
            reason = f"malformed CSV (broken quote?): {reason}"
        self.writer.flush()
        if not self.skip_bad:
            return BrazeCsvError(f"{self.label}: line {start}: {reason} (on_bad_row: fail)")
        rest = _count_lines(text)
        return StructureBroken(self.label, start, line, line - start + 1 + rest, reason)


def _count_lines(text: Any) -> int:
    """Count the lines left in a text stream (after a structural break), reading to its end."""
    count = 0
    with contextlib.suppress(BrazeCsvError):
        for _ in text:
            count += 1
    return count
