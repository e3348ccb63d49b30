# generated from common/input_lines.py by scripts/sync_common.py: edit the original
"""One rule for what an input line holds, in every reader of both targets.

Singer messages on standard input and the lines of JSONL BATCH files are decoded the same way:

- a line holding only whitespace is skipped (nothing is lost: it carries nothing);
- anything the SDK's own parser accepts is accepted, with the SDK's values: orjson decodes
  first (about 5x faster than the SDK's `json.loads(parse_float=Decimal)`), and a line orjson
  refuses (`NaN`, `Infinity`, `-Infinity`) goes to the SDK's parser, which turns those numbers
  into `Decimal` as a target built on the SDK would. Known gap: orjson (3.13) does not refuse
  an integer beyond 64 bits, it reads it as a rounded float where the SDK keeps the exact
  `int`; finding such integers in the raw line costs several times the decoding itself (a
  regular expression: ~3 us against orjson's ~0.7 us per record line), so it is not done
  (a strict xfail in tests/test_fast_reader_writer.py shows it);
- anything else is not JSON, bytes that are not UTF-8 included (also when standard input was
  decoded with `surrogateescape`, as Python does under a C/POSIX locale): `ValueError`. The
  reader stops there with exit 1 and no STATE past the line; the error names the line (file
  and line number for BATCH files), never its content (records carry personal data).

Every plugin installs on its own, so each target carries a copy of this module
(scripts/sync_common.py).
"""

from __future__ import annotations

import typing as t

import orjson
from singer_sdk.singerlib.exceptions import InvalidInputLine
from singer_sdk.singerlib.json import deserialize_json as sdk_deserialize_json


class InputLineError(InvalidInputLine):
    """A line of standard input that is not JSON (the SDK's exception, naming the line)."""


def not_json(number: int, exc: ValueError) -> InputLineError:
    """Build the error for input line `number` (1-based) from the decoder's reason."""
    return InputLineError(
        f"Input line {number} is not JSON ({exc}); stopping: no STATE is emitted past it"
    )


def is_blank(line: bytes | str) -> bool:
    """Whether the line holds only whitespace (skipped by every reader)."""
    return not line.strip()


def decode_line(line: bytes | str) -> t.Any:
    """Decode one input line under the rule above.

    Raises:
        ValueError: the line is not JSON (blank lines included: test `is_blank` first).

    """
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        if isinstance(line, bytes):
            text = line.decode("utf-8")  # UnicodeDecodeError is a ValueError
        else:
            line.encode("utf-8")  # lone surrogates (surrogateescape'd bytes): UnicodeEncodeError
            text = line
        return sdk_deserialize_json(text)  # json.JSONDecodeError is a ValueError
