# generated from common/input_lines.py by scripts/sync_common.py: edit the original
"""One rule for what an input line holds, in every reader of both targets.

Singer messages on standard input and the lines of JSONL BATCH files are decoded the same way:

- a line holding only whitespace is skipped (nothing is lost: it carries nothing);
- anything the SDK's own parser accepts is accepted, with the SDK's values. orjson decodes
  first (about 5x faster than the SDK's `json.loads(parse_float=Decimal)`); the SDK's parser
  decodes a line orjson refuses (`NaN`, `Infinity`, `-Infinity`: `Decimal`, as a target built
  on the SDK would) and a line holding an integer orjson would round: orjson (3.13) keeps an
  integer from -2**63 to 2**64 - 1 exact but silently reads one outside as a rounded float,
  where the SDK keeps the exact `int`. Such an integer has 19 digits or more (2**63 has 19);
  `long_integer` finds every number that long at C speed (~0.5 us per record line, orjson's
  decoding ~2 us); a 19-digit string such as an id does not count. Floats are `Decimal` on a
  line the SDK's parser decodes, `float` on the others;
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

# Every integer orjson rounds (below -2**63, above 2**64 - 1) has 19 digits or more, and a JSON
# number follows `:`, `,`, `[` (whitespace aside) or starts the line. Whitespace deleted, `-` and
# digits as "9", `:,[` as ":" and every other byte as "x", such a number shows as LONG_NUMBER:
# one `bytes.translate` and one `in` (a regular expression costs ~10x more).
NUMBER_MASK = bytes(
    0x39 if 0x30 <= i <= 0x39 or i == 0x2D else 0x3A if i in b":,[" else 0x78 for i in range(256)
)
WHITESPACE = b" \t\r\n"
LONG_NUMBER = b":" + b"9" * 19


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


def long_integer(line: bytes | str) -> bool:
    """Whether the line may hold a JSON number whose integer part has 19 digits or more.

    Every such number is found. A string counts only when it looks like one, a `:`, `,` or `[`
    then 19 digits or a `-` and 18 (`"a:1234…"`; an id alone does not): that line merely
    takes the slower, exact parser.
    """
    data = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line
    masked = data.translate(NUMBER_MASK, WHITESPACE)
    return LONG_NUMBER in masked or masked.startswith(LONG_NUMBER[1:])  # or a bare number


def decode_line(line: bytes | str) -> t.Any:
    """Decode one input line under the rule above.

    Raises:
        ValueError: the line is not JSON (blank lines included: test `is_blank` first).

    """
    if long_integer(line):
        return _sdk_decode(line)
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return _sdk_decode(line)


def _sdk_decode(line: bytes | str) -> t.Any:
    """Decode with the SDK's parser; text that is not UTF-8 is a `ValueError` (see the module)."""
    if isinstance(line, bytes):
        text = line.decode("utf-8")  # UnicodeDecodeError is a ValueError
    else:
        line.encode("utf-8")  # lone surrogates (surrogateescape'd bytes): UnicodeEncodeError
        text = line
    return sdk_deserialize_json(text)  # json.JSONDecodeError is a ValueError
