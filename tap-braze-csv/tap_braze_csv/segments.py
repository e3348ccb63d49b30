"""Read a Braze segment name from an export's file name.

Accepted names (extensions ``.csv``, ``.zip``, ``.gz``, ``.pgp``, ``.gpg``, ``.asc`` removed first,
in any combination):

- ``<segment><sep><date>[<sep or T><time>]`` where ``<sep>`` is ``-``, ``_``, space or ``.``,
  ``<date>`` is ``YYYY-MM-DD``, ``YYYY_MM_DD`` or ``YYYYMMDD`` and ``<time>`` is ``HH[-:]MM[[-:]SS]``
  or ``HHMMSS``: ``VIP Users-2024-05-01.zip`` -> ``VIP Users``;
- ``<segment>`` alone: ``lapsed_buyers.csv`` -> ``lapsed_buyers``;
- Braze's random S3 names ``users-<random>`` (``segment-export/<id>/<date>/users-<random>.zip``)
  and bare dates carry no name: the segment name is null.  For a zip member the member's name
  is tried when the zip's own name gives nothing.

The ``segment_name_regex`` setting replaces these rules: a Python regex searched in the base
name (extensions removed); its ``segment`` group (or group 1, or the whole match) is the name.
"""

from __future__ import annotations

import re

_EXTENSIONS = (".csv", ".zip", ".gz", ".gzip", ".pgp", ".gpg", ".asc", ".txt")
_DATED = re.compile(
    r"^(?P<segment>.*?)[-_ .]+\d{4}[-_]?\d{2}[-_]?\d{2}"
    r"(?:[-_ T.]?\d{2}[-:_]?\d{2}(?:[-:_]?\d{2})?(?:\.\d+)?Z?)?$"
)
_NO_NAME = re.compile(
    r"^(?:users?(?:[-_][0-9A-Za-z-]+)?|\d{4}[-_]?\d{2}[-_]?\d{2}.*|export)$", re.I
)


def base_name(path: str) -> str:
    """Return the file name without directories and without known extensions."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    changed = True
    while changed:
        changed = False
        for ext in _EXTENSIONS:
            if name.lower().endswith(ext) and len(name) > len(ext):
                name = name[: -len(ext)]
                changed = True
    return name


def segment_from_name(path: str, regex: str | None = None) -> str | None:
    """Return the segment name found in ``path``'s file name, or None (rules in the module doc)."""
    name = base_name(path)
    if regex:
        match = re.search(regex, name)
        if not match:
            return None
        if "segment" in match.re.groupindex:
            found = match.group("segment")
        elif match.re.groups:
            found = match.group(1)
        else:
            found = match.group(0)
        return found.strip() or None
    dated = _DATED.match(name)
    if dated:
        name = dated.group("segment")
    name = name.strip(" -_.")
    if not name or _NO_NAME.match(name):
        return None
    return name


def segment_for(uri: str, member: str, regex: str | None = None) -> str | None:
    """Segment name of a file, or of a zip member when the file's own name has none."""
    return segment_from_name(uri, regex) or (segment_from_name(member, regex) if member else None)
