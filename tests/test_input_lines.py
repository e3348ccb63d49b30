"""One input-line rule in both targets (common/input_lines.py), on standard input and in JSONL
BATCH files alike: real target processes, real emulators.

Accepted: whatever the SDK's own reader accepts (`NaN`, `Infinity`, `-Infinity` included, as
`json.loads` takes them); lines holding only whitespace are skipped. Refused, naming the
problem, exit 1 and no STATE: anything else (broken JSON, bytes that are not UTF-8).
"""

from __future__ import annotations

import gzip
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from e2e_helpers import BIN

NUMBERS = ["NaN", "Infinity", "-Infinity"]  # refused by orjson, accepted by the SDK's reader
BLANK = ["", "   ", "\t \r"]
REFUSED = [b"{not json", b'{"type": "RECORD", "stream": "s", "record": {"v": "\xff"}}']


@dataclass
class Target:
    """How to drive one target: its stream, records (one odd number each), what landed."""

    name: str
    stream: str
    schema: dict[str, Any]
    record: Callable[[int], dict[str, Any]]  # record i, with "v" to be replaced by NUMBERS[i]
    config: Callable[[Any, Path], dict[str, Any]]
    landed: Callable[[Any], list[str]]  # sorted ids of what reached the emulator


def _braze_landed(braze: Any) -> list[str]:
    return sorted(u for u, a in braze.users().items() if a.get("lytics_segments") == ["a"])


TARGETS = {
    "target-braze-audience": Target(
        name="target-braze-audience",
        stream="audience_members",
        schema={
            "type": "object",
            "properties": {
                "audience_id": {"type": ["string", "null"]},
                "audience_slug": {"type": "string"},
                "external_id": {"type": ["string", "null"]},
                "lytics_uid": {"type": ["string", "null"]},
                "scan_id": {"type": ["string", "null"]},
                "v": {"type": ["number", "null"]},
            },
        },
        record=lambda i: {
            "audience_id": "id-a",
            "audience_slug": "a",
            "external_id": f"u{i}",
            "lytics_uid": f"l{i}",
            "scan_id": "scan1",
            "v": "__V__",
        },
        config=lambda braze, tmp: {
            "api_key": braze.api_key,
            "rest_endpoint": braze.url,
            "store_url": str(tmp / "store.sqlite"),
            "retry_backoff_base": 0.01,
        },
        landed=_braze_landed,
    ),
    "target-lytics-users": Target(
        name="target-lytics-users",
        stream="braze_users",
        schema={
            "type": "object",
            "properties": {"id": {"type": "string"}, "v": {"type": ["number", "null"]}},
        },
        record=lambda i: {"id": f"u{i}", "v": "__V__"},
        config=lambda lytics, tmp: {"api_token": lytics.api_token, "api_url": lytics.url},
        landed=lambda lytics: sorted(r["id"] for r in lytics.collected("braze_users")),
    ),
}
EXPECTED = [f"u{i}" for i in range(len(NUMBERS))]
STATE = {"type": "STATE", "value": {"bookmarks": {"run": 1}}}


def _record_line(target: Target, i: int, *, message: bool) -> bytes:
    record = target.record(i)
    body = {"type": "RECORD", "stream": target.stream, "record": record} if message else record
    return orjson.dumps(body).replace(b'"__V__"', NUMBERS[i].encode())


def _schema_line(target: Target) -> bytes:
    keys = ["id"] if target.stream == "braze_users" else []
    return orjson.dumps(
        {"type": "SCHEMA", "stream": target.stream, "schema": target.schema, "key_properties": keys}
    )


def _batch_line(target: Target, path: Path, lines: list[bytes]) -> bytes:
    with gzip.open(path, "wb") as fh:
        fh.writelines(line + b"\n" for line in lines)
    return orjson.dumps(
        {
            "type": "BATCH",
            "stream": target.stream,
            "encoding": {"format": "jsonl", "compression": "gzip"},
            "manifest": [path.as_uri()],
        }
    )


def _odd_lines(target: Target, *, message: bool) -> list[bytes]:
    """The records, each with one odd number, with blank lines between them."""
    out: list[bytes] = []
    for i in range(len(NUMBERS)):
        out += [_record_line(target, i, message=message), BLANK[i].encode()]
    return out


def _run(target: Target, cfg: dict[str, Any], tmp: Path, lines: list[bytes]):
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    return subprocess.run(
        [str(BIN / target.name), "--config", str(path)],
        input=b"".join(line + b"\n" for line in lines),
        capture_output=True,
        timeout=120,
    )


def _states(stdout: bytes) -> list[Any]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture(params=list(TARGETS))
def case(request, braze_sandbox, lytics_sandbox, tmp_path: Path):
    target = TARGETS[request.param]
    emulator = braze_sandbox if target.stream == "audience_members" else lytics_sandbox
    return target, emulator, target.config(emulator, tmp_path)


@pytest.mark.parametrize("where", ["stdin", "batch"])
def test_sdk_numbers_and_blank_lines_are_accepted(case, where: str, tmp_path: Path) -> None:
    target, emulator, cfg = case
    if where == "stdin":
        body = _odd_lines(target, message=True)
    else:
        body = [_batch_line(target, tmp_path / "b.json.gz", _odd_lines(target, message=False))]
    proc = _run(target, cfg, tmp_path, [_schema_line(target), *body, json.dumps(STATE).encode()])
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert target.landed(emulator) == EXPECTED
    assert _states(proc.stdout) == [STATE["value"]]


@pytest.mark.parametrize("bad", REFUSED, ids=["broken", "not-utf8"])
@pytest.mark.parametrize("where", ["stdin", "batch"])
def test_anything_else_is_refused_naming_it(case, where: str, bad: bytes, tmp_path: Path) -> None:
    target, _emulator, cfg = case
    good = _record_line(target, 0, message=where == "stdin")
    if where == "stdin":
        body = [good, bad]
    else:
        body = [_batch_line(target, tmp_path / "bad.json.gz", [good, b"", bad])]
    proc = _run(target, cfg, tmp_path, [_schema_line(target), *body, json.dumps(STATE).encode()])
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, err[-3000:]
    assert proc.stdout == b"", "no STATE past a line that is not JSON"
    if where == "stdin":
        # The same words from both targets: the line number (schema, record, then this one).
        assert "Input line 3 is not JSON (" in err, err[-3000:]
        assert "stopping: no STATE is emitted past it" in err, err[-3000:]
    else:
        assert "bad.json.gz (stream" in err, err[-3000:]
        assert "line 3 is not JSON" in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]


BIG = [123456789012345678901234, 2**64, -(2**63) - 1]  # orjson alone: rounded floats


def test_integers_beyond_64_bits_reach_lytics_exactly(lytics_sandbox, tmp_path: Path) -> None:
    """On standard input, in a BATCH file and in STATE: every digit, a JSON number."""
    target = TARGETS["target-lytics-users"]
    rec = b'{"id":"u%d","v":%d,"nested":{"l":[%d]}}'
    lines = [
        _schema_line(target),
        b'{"type":"RECORD","stream":"braze_users","record":%s}' % (rec % (0, BIG[0], BIG[2])),
        _batch_line(target, tmp_path / "b.json.gz", [rec % (1, BIG[1], -BIG[0])]),
        b'{"type":"STATE","value":{"bookmarks":{"n":%d,"f":0.5}}}' % BIG[0],
    ]
    proc = _run(target, target.config(lytics_sandbox, tmp_path), tmp_path, lines)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    bodies = [r.body for r in lytics_sandbox.requests if r.path.startswith("/collect/json/")]
    sent = [record for body in bodies for record in json.loads(body)]
    assert sorted(sent, key=lambda r: r["id"]) == [
        {"id": "u0", "v": BIG[0], "nested": {"l": [BIG[2]]}},
        {"id": "u1", "v": BIG[1], "nested": {"l": [-BIG[0]]}},
    ]
    assert all(type(r["v"]) is int for r in sent)  # json.loads: a float or a string would differ
    # the SDK (0.54.9) cannot write a STATE holding a Decimal: the float stays a float
    assert _states(proc.stdout) == [{"bookmarks": {"n": BIG[0], "f": 0.5}}]


def test_an_integer_id_beyond_64_bits_is_the_braze_user_with_those_digits(
    braze_sandbox, tmp_path: Path
) -> None:
    """`external_id` may be an integer (its decimal string is the id): each digit counts."""
    target = TARGETS["target-braze-audience"]
    schema = {**target.schema, "properties": {**target.schema["properties"]}}
    schema["properties"]["external_id"] = {"type": ["string", "integer", "null"]}
    rec = b'{"audience_slug":"a","external_id":%s,"lytics_uid":"l%d","scan_id":"scan1"}'
    schema_line = orjson.dumps(
        {"type": "SCHEMA", "stream": target.stream, "schema": schema, "key_properties": []}
    )
    lines = [
        schema_line,
        *(
            b'{"type":"RECORD","stream":"audience_members","record":%s}' % (rec % (v, i))
            for i, v in enumerate([b"%d" % BIG[0], b'"1234567890123456789012"'])
        ),
        _batch_line(target, tmp_path / "b.json.gz", [rec % (b"%d" % BIG[1], 2)]),
    ]
    proc = _run(target, target.config(braze_sandbox, tmp_path), tmp_path, lines)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert _braze_landed(braze_sandbox) == sorted(
        [str(BIG[0]), "1234567890123456789012", str(BIG[1])]
    )
