"""Shared by the tap's test modules (imported by module name): an in-process tap run and small
hand-made Braze exports."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

from tap_braze_csv.tap import TapBrazeCsv

# Quirks of real exports: BOM, CRLF, quoted commas and newlines, injection-guard quotes, a blank line.
HAND_MADE = (
    "\ufeffAppboy ID,user_id,email,first_name,phone_number,Favorite Color,notes,session_count,"
    "created_at,timezone\r\n"
    'b1,u1,a@x.com,"Smith, Jr",\'+15551234567,\'=SUM(A1),"multi\r\nline",5,'
    "2020-10-19 10:50:41 UTC,Europe/Paris\r\n"
    'b2,u2,,"O\'Brien",,\'-10,"say ""hi""",,,\r\n'
    "\r\n"
    "'-b3,u3,c@x.com,Zoë,'@home,,,0,2021-01-02T03:04:05.678Z,\r\n"
)

# Bad rows on lines 3 (too few fields), 4 (too many) and 5 (not an integer) between good rows.
BAD = (
    "user_id,email,session_count\n"
    "u1,a@x.com,1\n"
    "u2,b@x.com\n"  # line 3: wrong field count
    "u3,c@x.com,3,extra\n"  # line 4: wrong field count
    "u4,d@x.com,four\n"  # line 5: not an integer
    "u5,e@x.com,5\n"
)


def write(path: Path, text: str) -> Path:
    """Write `text` as UTF-8 bytes (no newline translation) and return `path`."""
    path.write_bytes(text.encode("utf-8"))
    return path


class TapRun:
    """Messages and final in-memory state of one in-process tap run."""

    def __init__(self, messages: list[dict], state: dict, error: BaseException | None) -> None:
        self.messages = messages
        self.state = state
        self.error = error

    @property
    def records(self) -> list[dict]:
        return [m["record"] for m in self.messages if m["type"] == "RECORD"]

    @property
    def states(self) -> list[dict]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def schema(self) -> dict:
        return next(m["schema"] for m in self.messages if m["type"] == "SCHEMA")

    def bookmark(self, stream: str = "braze_users") -> dict:
        return self.states[-1]["bookmarks"][stream]


def run_tap(
    config: dict,
    state: dict | None = None,
    catalog: dict | None = None,
    *,
    expect_error: bool = False,
) -> TapRun:
    """Run TapBrazeCsv.sync_all in-process, capturing stdout as the SDK test runner does."""
    tap = TapBrazeCsv(config=config, state=state, catalog=catalog, setup_mapper=True)
    buf = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    error: BaseException | None = None
    with redirect_stdout(buf):
        try:
            tap.sync_all()
        except Exception as exc:
            if not expect_error:
                raise
            error = exc
    if expect_error and error is None:
        raise AssertionError("the tap run was expected to fail")
    buf.flush()
    buf.seek(0)
    messages = [json.loads(line) for line in buf.read().splitlines() if line.strip()]
    return TapRun(messages, tap.state, error)
