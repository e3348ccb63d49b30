"""The shared fast reader and writer (common/orjson_reader.py, common/orjson_writer.py) keep
the SDK's contract: the same messages and counts as the SDK's reader, the same JSON as the
SDK's writer, plus the hooks the plugins use (line numbers, deferred signal actions, the
unsupported-message hook). The copies are identical (tests/test_common_copies.py), so one
copy of each is driven here; the targets' processes are driven in tests/test_input_lines.py."""

from __future__ import annotations

import datetime
import decimal
import io
import json
import random
import typing as t
import uuid

import orjson
import pytest
from singer_sdk.io_base import SingerReader, SingerWriter
from singer_sdk.singerlib.messages import RecordMessage, SchemaMessage, StateMessage
from tap_lytics_audience.common.orjson_writer import OrjsonWriter
from target_lytics_users.common.input_lines import InputLineError, decode_line, long_integer
from target_lytics_users.common.orjson_reader import OrjsonReader

LINES = [
    b'{"type":"SCHEMA","stream":"s","schema":{"type":"object"},"key_properties":[]}',
    b'{"type":"RECORD","stream":"s","record":{"id":"a","n":1.5,"v":NaN}}',
    b"   ",
    b'{"type":"RECORD","stream":"s","record":{"id":"b","n":2,"f":0.5,"s":"\xc3\xa9"}}',
    b'{"type":"STATE","value":{"bookmarks":{"s":1}}}',
]


def _stdin(lines: list[bytes]) -> io.BytesIO:
    return io.BytesIO(b"".join(line + b"\n" for line in lines))


def _collect(reader: t.Any, lines: list[bytes]) -> tuple[list[dict], t.Counter[str]]:
    seen: list[dict] = []
    callbacks = {kind: seen.append for kind in ("SCHEMA", "RECORD", "STATE")}
    stats = reader.process_lines(_stdin(lines), callbacks)
    return seen, stats


def test_same_messages_and_counts_as_the_sdk_reader() -> None:
    ours, our_stats = _collect(OrjsonReader(), LINES)
    sdk_lines = [line for line in LINES if line.strip()]  # the SDK's reader refuses blank lines
    sdk_input = io.StringIO(b"".join(line + b"\n" for line in sdk_lines).decode())
    sdk: list[dict] = []
    sdk_stats = SingerReader().process_lines(
        sdk_input, dict.fromkeys(("SCHEMA", "RECORD", "STATE"), sdk.append)
    )
    nan = [m["record"].pop("v") for m in (ours[1], sdk[1])]
    assert all(v != v for v in nan)  # NaN, refused by orjson: the SDK's parser reads it
    assert ours == sdk
    assert type(ours[2]["record"]["n"]) is int
    assert type(ours[2]["record"]["f"]) is float  # the SDK's reader gives Decimal("0.5")
    assert our_stats == sdk_stats == {"SCHEMA": 1, "RECORD": 2, "STATE": 1}


BIG = [
    123456789012345678901234,
    2**64,  # the smallest positive integer orjson (3.13) reads as a rounded float
    -(2**63) - 1,  # the largest negative one: 19 digits
    -123456789012345678901234,
]


@pytest.mark.parametrize("as_text", [False, True], ids=["bytes", "text"])
def test_an_integer_beyond_64_bits_keeps_its_exact_value(as_text: bool) -> None:
    """orjson reads these as rounded floats; the line goes to the SDK's parser: exact `int`."""
    nested = b'{"a":[1,{"b":[%d]}]}' % BIG[0]
    lines = [
        LINES[0],
        *(b'{"type":"RECORD","stream":"s","record":{"n":%d,"f":0.5}}' % n for n in BIG),
        b'{"type":"RECORD","stream":"s","record":{"n": -9223372036854775808 ,"m":%d}}'
        % (2**64 - 1),
        b'{"type":"RECORD","stream":"s","record":{"nested":%s}}' % nested,
        b'{"type":"RECORD","stream":"s","record":{"id":"1234567890123456789","f":0.5}}',
        b'{"type":"STATE","value":{"bookmarks":{"s":%d,"f":[0.5]}}}' % BIG[0],
    ]
    if as_text:  # `--input FILE` and in-process `listen(io.StringIO(...))` give str lines
        stdin: t.Any = io.StringIO(b"".join(line + b"\n" for line in lines).decode())
        ours: list[dict] = []
        OrjsonReader().process_lines(
            stdin, dict.fromkeys(("SCHEMA", "RECORD", "STATE"), ours.append)
        )
    else:
        ours, _stats = _collect(OrjsonReader(), lines)
    assert len(ours) == len(lines)
    records = [m["record"] for m in ours[1:-1]]
    for record, n in zip(records, BIG, strict=False):
        assert type(record["n"]) is int
        assert record["n"] == n
        assert record["f"] == decimal.Decimal("0.5")  # the SDK parser's value on such a line
    # orjson's own range stays orjson's: exact ints, the same values
    assert records[4] == {"n": -(2**63), "m": 2**64 - 1}
    assert records[5] == {"nested": {"a": [1, {"b": [BIG[0]]}]}}
    assert type(records[5]["nested"]["a"][1]["b"][0]) is int
    # a 19-digit id is a string, its line decoded by orjson (a float stays a float)
    assert records[6] == {"id": "1234567890123456789", "f": 0.5}
    assert type(records[6]["f"]) is float
    # a STATE keeps floats (singer-sdk 0.54.9 cannot write a Decimal STATE back)
    assert ours[-1]["value"] == {"bookmarks": {"s": BIG[0], "f": [0.5]}}
    assert type(ours[-1]["value"]["bookmarks"]["f"][0]) is float


def test_only_a_number_of_19_digits_or_more_takes_the_exact_parser() -> None:
    """`long_integer` finds every such number (any spacing, any place); not a 19-digit id."""
    numbers = [
        b'{"n":1234567890123456789}',
        b'{"n" : -1234567890123456789012}',
        b'{"l":[ 1,\t12345678901234567890]}',
        b'{"l":[\r\n-12345678901234567890]}',
        b"12345678901234567890",
        b'{"n":12345678901234567890.5}',
    ]
    strings = [
        b'{"id":"1234567890123456789012"}',
        b'{"id":"5f0000000000000000000000"}',
        b'{"t":"x-1234567890123456789"}',
        b'{"f":0.12345678901234567890}',
        b'{"n":123456789012345678}',  # 18 digits: orjson keeps every such integer exact
    ]
    look_alike = b'{"t":"at: 12345678901234567890"}'  # the exact parser: the same string
    for line in [*numbers, look_alike]:
        assert long_integer(line), line
        assert long_integer(line.decode()), line
        assert decode_line(line) == json.loads(line, parse_float=decimal.Decimal)
    for line in strings:
        assert not long_integer(line), line
        assert decode_line(line) == json.loads(line)


def test_random_documents_keep_every_integer_the_sdk_parser_keeps() -> None:
    """Integers of 1 to 30 digits, both signs, nested, beside digit strings, any spacing."""
    rng = random.Random(15)

    def value(depth: int) -> t.Any:
        pick = rng.random()
        if depth < 3 and pick < 0.3:
            return {f"k{i}": value(depth + 1) for i in range(rng.randint(0, 3))}
        if depth < 3 and pick < 0.5:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        digits = rng.choice([1, 18, 19, 20, 30])
        n = rng.randrange(10 ** (digits - 1), 10**digits) * rng.choice([1, -1])
        return str(n) if pick > 0.9 else n

    def exact(v: t.Any) -> t.Any:  # every number with its type: 1 == 1.0 must not pass
        if isinstance(v, dict):
            return {k: exact(x) for k, x in v.items()}
        if isinstance(v, list):
            return [exact(x) for x in v]
        return (type(v), v)

    for _ in range(500):
        separators = rng.choice([(",", ":"), (", ", ": "), (" ,\t", " : ")])
        text = json.dumps({"type": "RECORD", "v": value(0)}, separators=separators)
        expected = exact(json.loads(text))
        assert exact(decode_line(text.encode())) == expected, text
        assert exact(decode_line(text)) == expected, text


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (b'{"type":"RECORD","record":{"email":"x@example.com"', "is not JSON"),
        (b'["x@example.com"]', "is not a Singer message"),
        (b'{"record":{"email":"x@example.com"}}', "is not a Singer message"),
    ],
    ids=["broken", "not-an-object", "no-type"],
)
def test_a_line_that_is_not_a_message_stops_naming_its_number_not_its_content(
    bad: bytes, words: str
) -> None:
    reader = OrjsonReader()
    with pytest.raises(InputLineError) as caught:
        _collect(reader, [LINES[0], b"", bad, LINES[4]])
    assert str(caught.value).startswith(f"Input line 3 {words}")
    assert "example.com" not in str(caught.value)
    assert reader.line_number == 3


def test_a_text_source_is_read_by_the_same_rule() -> None:
    """`--input FILE` and `io.StringIO` give text: encoded back, a lone surrogate is not UTF-8."""
    text = b"".join(line + b"\n" for line in LINES).decode()
    seen: list[dict] = []
    kinds = ("SCHEMA", "RECORD", "STATE")
    stats = OrjsonReader().process_lines(io.StringIO(text), dict.fromkeys(kinds, seen.append))
    ours, our_stats = _collect(OrjsonReader(), LINES)
    assert stats == our_stats
    assert [m.get("record", {}).get("id") for m in seen] == [None, "a", "b", None]
    assert seen[2] == ours[2]
    assert seen[2]["record"]["s"] == "é"
    reader = OrjsonReader()
    with pytest.raises(InputLineError, match=r"^Input line 2 is not JSON \("):
        reader.process_lines(
            io.StringIO(text.splitlines()[0] + '\n{"type":"STATE","value":"\udcff"}\n'),
            dict.fromkeys(kinds, seen.append),
        )


def test_an_unknown_type_goes_to_the_public_hook() -> None:
    with pytest.raises(ValueError, match="Unknown message type 'UPSERT'"):  # the SDK's words
        _collect(OrjsonReader(), [LINES[0], b'{"type":"UPSERT","stream":"s"}'])

    class Named(OrjsonReader):
        def unknown_message(self, message: dict) -> None:
            raise LookupError(f"line {self.line_number}: {message['type']}")

    with pytest.raises(LookupError, match=r"^line 2: UPSERT$"):
        _collect(Named(), [LINES[0], b'{"type":"UPSERT","stream":"s"}', LINES[4]])


def test_a_deferred_action_runs_once_after_the_message_being_handled() -> None:
    reader = OrjsonReader()
    events: list[tuple[str, int, bool]] = []

    def on_record(message: dict) -> None:
        events.append(("record", reader.line_number, reader.in_message))
        if message["record"]["id"] == "a":  # what a signal handler does mid-message
            reader.deferred = lambda: events.append(
                ("deferred", reader.line_number, reader.in_message)
            )

    reader.process_lines(
        _stdin(LINES), {"SCHEMA": lambda m: None, "RECORD": on_record, "STATE": lambda m: None}
    )
    assert events == [("record", 2, True), ("deferred", 2, False), ("record", 4, True)]
    assert reader.deferred is None


def test_the_writer_writes_the_sdk_writers_json() -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.timezone.utc)
    record = {
        "s": "é",
        "none": None,
        "exact": decimal.Decimal("1.50"),
        "whole": decimal.Decimal(3),
        "exp": decimal.Decimal("1E+2"),
        "nan": decimal.Decimal("NaN"),
        "float": 1.25,
        "uuid": uuid.UUID(int=5),
        "when": when,
        "day": when.date(),
        "nested": {"list": [1, "x", {"ok": True}]},
    }
    messages = [
        SchemaMessage(stream="s", schema={"type": "object"}, key_properties=["s"]),
        RecordMessage(stream="s", record=record, time_extracted=when),
        StateMessage(value={"bookmarks": {"s": {"at": when}}}),
    ]
    for message in messages:
        ours = OrjsonWriter().format_message(message)
        sdk = SingerWriter().format_message(message)
        assert json.loads(ours) == json.loads(sdk)
        assert "\n" not in ours
    line = OrjsonWriter().format_message(messages[1])
    # Decimal keeps its digits, as the SDK writes it; a non-finite one is null
    assert '"exact":1.50,' in line
    assert '"exp":1E+2,' in line
    assert '"nan":null,' in line


@pytest.mark.parametrize(
    ("stream", "version", "when"),
    [
        ("s", None, None),
        (
            'odd "record":{} é',
            1700000000000,
            datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc),
        ),
        (
            "braze_users",
            None,
            datetime.datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=datetime.timezone.utc),
        ),
    ],
)
def test_record_line_parts_give_the_line_write_message_writes(
    stream: str, version: int | None, when: datetime.datetime | None
) -> None:
    writer = OrjsonWriter()
    head, tail = writer.record_line_parts(stream, version, when)
    for record in ({}, {"id": "a", "n": 1.5, "x": None, "l": [1, {"k": "é"}]}):
        message = RecordMessage(stream=stream, record=record, version=version, time_extracted=when)
        assert (
            head + orjson.dumps(record) + tail == (writer.format_message(message) + "\n").encode()
        )


@pytest.mark.parametrize("kind", ["file", "bytes buffer", "text only"])
def test_written_lines_follow_what_was_written_before(kind: str, monkeypatch, tmp_path) -> None:
    path = tmp_path / "out"
    if kind == "file":  # has a file descriptor, as a pipe does: written with os.write
        out: t.Any = open(path, "w", encoding="utf-8")  # noqa: SIM115
    elif kind == "bytes buffer":
        out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    else:
        out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    writer = OrjsonWriter()
    writer.write_message(SchemaMessage(stream="s", schema={"type": "object"}, key_properties=[]))
    writer.write_message(RecordMessage(stream="s", record={"i": 0}))  # buffered, not flushed
    head, tail = writer.record_line_parts("s")
    writer.write_lines(b"".join(head + json.dumps({"i": i}).encode() + tail for i in (1, 2)))
    writer.write_message(StateMessage(value={"bookmarks": {}}))
    if kind == "file":
        out.close()
        text = path.read_text()
    elif kind == "bytes buffer":
        text = out.buffer.getvalue().decode()  # type: ignore[attr-defined]
    else:
        text = out.getvalue()
    messages = [json.loads(line) for line in text.splitlines()]
    assert [(m["type"], m.get("record")) for m in messages] == [
        ("SCHEMA", None),
        ("RECORD", {"i": 0}),
        ("RECORD", {"i": 1}),
        ("RECORD", {"i": 2}),
        ("STATE", None),
    ]


def test_a_deferred_action_waits_for_the_end_of_a_held_block(monkeypatch) -> None:
    """What the fast path does: write lines, move its resume point, then a signal's exit."""
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    writer = OrjsonWriter()
    cursor = {"line": 0}
    events: list[tuple[str, int, str]] = []
    with writer.hold():
        # the signal lands during the first write; the writes inside keep it waiting
        writer.write_message(RecordMessage(stream="s", record={"i": 1}))
        writer.deferred = lambda: events.append(("exit", cursor["line"], out.getvalue()))
        writer.write_lines(b'{"type":"RECORD","stream":"s","record":{"i":2}}\n')
        writer.write_message(StateMessage(value={"bookmarks": {}}))
        assert writer.writing
        assert events == []
        cursor["line"] = 2
    assert events == [("exit", 2, out.getvalue())]  # once, after the block's bookkeeping
    assert writer.deferred is None
    assert not writer.writing

    # a block that raises still runs the action (a signal is never lost)
    def failing_write() -> None:
        with writer.hold():
            writer.deferred = lambda: events.append(("exit", 3, ""))
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        failing_write()
    assert events[-1] == ("exit", 3, "")
    assert not writer.writing
