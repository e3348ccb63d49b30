"""Cell conversion: Braze's CSV-injection guard, typed values, and a compiled row converter.

The converter for one file header is generated Python source (one function, one dict literal,
each cell bound to a local variable) so that a row costs one call instead of a loop over
columns with per-column dispatch; this is the tap's hot path (see streams.py).
"""

from __future__ import annotations

import datetime as dt
import keyword
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tap_braze_csv.columns import Column

_UTC = dt.timezone.utc
_fromisoformat = dt.datetime.fromisoformat
_GUARDED = frozenset("-=+@")
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


def unguard(value: str) -> str:
    """Undo Braze's CSV-injection guard: ``'-1943`` -> ``-1943`` (also ``'=``, ``'+``, ``'@``).

    Braze prefixes an apostrophe to any value starting with ``-``, ``=``, ``+`` or ``@``; a value
    that merely starts with an apostrophe followed by anything else is left alone.
    """
    if len(value) > 1 and value[0] == "'" and value[1] in _GUARDED:
        return value[1:]
    return value


def unguard_row(row: list[str]) -> list[str]:
    """Unguard the cells of ``row`` in place and return it.

    Finds cells starting with an apostrophe through one C-speed join and ``find`` so a row
    with a single guarded phone number costs about a microsecond, not a loop over all cells.
    """
    joined = "\x00".join(row)
    if joined[:1] == "'":
        row[0] = unguard(row[0])
    pos = joined.find("\x00'")
    while pos >= 0:
        index = joined.count("\x00", 0, pos + 1)
        row[index] = unguard(row[index])
        pos = joined.find("\x00'", pos + 2)
    return row


def to_integer(value: str) -> int:
    """``"12"`` -> 12; ``"12.0"`` -> 12; anything else raises ValueError."""
    try:
        return int(value)
    except ValueError:
        number = float(value)
        if number.is_integer():
            return int(number)
        raise


def to_number(value: str) -> float:
    """``"12.5"`` -> 12.5; NaN/infinity raise ValueError (JSON has no such numbers)."""
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        msg = f"{value!r} is not a finite number"
        raise ValueError(msg)
    return number


def to_boolean(value: str) -> bool:
    """``true/false``, ``yes/no``, ``t/f``, ``y/n``, ``1/0`` (any case)."""
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    msg = f"{value!r} is not a boolean"
    raise ValueError(msg)


def _parse_datetime(value: str) -> dt.datetime:
    text = value.strip()
    if text.endswith((" UTC", " utc")):
        text = text[:-4]
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        # Braze exports timestamps in UTC; a naive value is read as UTC.
        parsed = parsed.replace(tzinfo=_UTC)
    return parsed


def to_datetime(value: str) -> str:
    """Return an RFC 3339 timestamp with offset.

    Accepts ISO forms (``T`` or space, optional fraction, ``Z``/offset/`` UTC``) and epoch
    seconds or milliseconds; naive times are UTC. A value that already is an RFC 3339
    timestamp (``2020-10-19T10:50:41.374Z``) is returned unchanged: parsing validates it, and
    skipping the re-formatting makes the common case ~6x cheaper.
    """
    try:
        parsed = _fromisoformat(value)
    except ValueError:
        parsed = None
    if (
        parsed is not None
        and parsed.tzinfo is not None
        and value[10:11] == "T"
        and value[16:17] == ":"
        and value[13:14] == ":"
    ):
        return value
    try:
        return _parse_datetime(value).isoformat()
    except ValueError:
        text = value.strip()
        if text.isdigit():
            seconds = int(text) / (1000 if len(text) > 11 else 1)
            return dt.datetime.fromtimestamp(seconds, tz=_UTC).isoformat()
        raise


def to_date(value: str) -> str:
    """Return an ISO 8601 date (``1980-01-31``); a timestamp keeps its date part."""
    text = value.strip()
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        return _parse_datetime(text).date().isoformat()


CONVERTERS: dict[str, Callable[[str], Any] | None] = {
    "string": None,
    "integer": to_integer,
    "number": to_number,
    "boolean": to_boolean,
    "date": to_date,
    "date-time": to_datetime,
}

RowConverter = Callable[[Sequence[str], int], dict[str, Any]]


#: Strict fast variants used by the first-try converter (a failure falls back to CONVERTERS).
FAST_CONVERTERS: dict[str, Callable[[str], Any] | None] = {**CONVERTERS, "integer": int}


def compile_row_converter(
    columns: Sequence[Column],
    constants: Mapping[str, Any],
    *,
    fast: bool = False,
) -> RowConverter:
    """Build ``convert(row, lineno) -> record`` for one header.

    Args:
        columns: Output columns (only those to emit); their ``type`` picks the conversion.
        constants: Fields added to every record (``_sdc_source_file``, ``segment_name``...).
            ``_sdc_source_lineno`` is the ``lineno`` argument.
        fast: Use the strict converters (see below).

    The row must already have the header's length and be unguarded. Empty cells become
    None; a conversion failure raises ValueError (the caller names the column). ``fast``
    uses the strict converters (``int`` instead of :func:`to_integer`); callers retry a failed
    row with the tolerant converter.

    """
    table = FAST_CONVERTERS if fast else CONVERTERS
    namespace: dict[str, Any] = {}
    items: list[str] = []
    for col in columns:
        cell = f"row[{col.index}]"
        func = table[col.type]
        if func is None:
            expr = f"{cell} or None"
        else:
            fname = f"_conv_{col.type.replace('-', '_')}"
            namespace[fname] = func
            expr = f"({fname}({cell}) if {cell} else None)"
        items.append(f"{col.name!r}: {expr}")
    for i, key in enumerate(constants):
        cname = f"_const_{i}"
        namespace[cname] = constants[key]
        items.append(f"{key!r}: {cname}")
    items.append("'_sdc_source_lineno': lineno")
    body = ",\n        ".join(items)
    source = f"def convert(row, lineno):\n    return {{\n        {body},\n    }}\n"
    assert all(not keyword.iskeyword(k) for k in namespace)
    exec(compile(source, "<tap_braze_csv row converter>", "exec"), namespace)  # noqa: S102
    return namespace["convert"]  # type: ignore[no-any-return]


def find_bad_cell(columns: Sequence[Column], row: Sequence[str]) -> tuple[Column, str, str] | None:
    """After a converter failed: the first column whose cell does not convert, and why."""
    for col in columns:
        func = CONVERTERS[col.type]
        value = row[col.index]
        if func is None or not value:
            continue
        try:
            func(value)
        except (ValueError, TypeError, OverflowError) as exc:
            return col, value, str(exc)
    return None


def null_unparsable(
    columns: Sequence[Column], row: Sequence[str]
) -> tuple[list[str], dict[str, str]]:
    """Blank every cell that does not convert; return the row and ``{field name: raw text}``.

    Used by ``on_bad_row: keep``: the record is emitted with those fields null and the raw
    text kept in ``_sdc_unparsed``.
    """
    cells = list(row)
    unparsed: dict[str, str] = {}
    for col in columns:
        func = CONVERTERS[col.type]
        value = cells[col.index]
        if func is None or not value:
            continue
        try:
            func(value)
        except (ValueError, TypeError, OverflowError):
            unparsed[col.name] = value
            cells[col.index] = ""
    return cells, unparsed
