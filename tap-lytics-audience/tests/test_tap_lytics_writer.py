"""The orjson writer: same JSON as the SDK writer, flushed on every non-RECORD message."""

from __future__ import annotations

import datetime
import decimal
import io
import json

from singer_sdk.io_base import SingerWriter
from singer_sdk.singerlib.messages import RecordMessage, SchemaMessage, StateMessage
from tap_lytics_audience.common.orjson_writer import OrjsonWriter


class CountingStdout(io.StringIO):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_same_json_as_the_sdk_writer():
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.timezone.utc)
    msg = RecordMessage(
        stream="s",
        record={"a": "x", "n": None, "d": decimal.Decimal("1.5"), "i": decimal.Decimal(3)},
        time_extracted=when,
    )
    ours = json.loads(OrjsonWriter().format_message(msg))
    sdk = json.loads(SingerWriter().format_message(msg))
    assert ours == sdk


def test_records_are_buffered_and_other_messages_flush(monkeypatch):
    out = CountingStdout()
    monkeypatch.setattr("sys.stdout", out)
    writer = OrjsonWriter()
    writer.write_message(SchemaMessage(stream="s", schema={"type": "object"}, key_properties=[]))
    assert out.flushes == 1
    for i in range(3):
        writer.write_message(RecordMessage(stream="s", record={"i": i}))
    assert out.flushes == 1
    writer.write_message(StateMessage(value={"bookmarks": {}}))
    assert out.flushes == 2
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [m["type"] for m in lines] == ["SCHEMA", "RECORD", "RECORD", "RECORD", "STATE"]


def test_an_exit_requested_during_a_write_runs_after_the_line_is_written(monkeypatch):
    writer = OrjsonWriter()
    calls: list[str] = []

    class InterruptedStdout(io.StringIO):
        def write(self, text: str) -> int:
            assert writer.writing
            # what the tap's signal handler does when a signal lands mid-write
            writer.deferred = lambda: calls.append(self.getvalue())
            return super().write(text)

    out = InterruptedStdout()
    monkeypatch.setattr("sys.stdout", out)
    writer.write_message(RecordMessage(stream="s", record={"i": 1}))
    assert calls == [out.getvalue()]  # ran once, after the whole line was written
    assert json.loads(calls[0])["record"] == {"i": 1}
    assert writer.deferred is None
    assert not writer.writing
