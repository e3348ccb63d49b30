"""Errors raised by tap-braze-csv."""

from __future__ import annotations


class BrazeCsvError(Exception):
    """A problem with an input file, named in the message."""
