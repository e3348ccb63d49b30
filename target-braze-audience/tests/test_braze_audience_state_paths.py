"""STATE only after Braze confirmed everything before it, on every path.

Each test is a long run (input arriving over time through a pipe) that crosses the SDK's
max-record-age drain: that drain calls the target's STATE writer while this target has
delivered nothing yet (deltas wait in the store's open transaction until end of input).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from target_braze_audience.target import TargetBrazeAudience

AGE_SECONDS = 0.5


class _Lines(io.StringIO):
    """stdout replacement that timestamps each STATE line with what Braze held then."""

    def __init__(self, braze: Any, h: Any) -> None:
        super().__init__()
        self.braze, self.h = braze, h
        self.seen: list[tuple[dict[str, Any], dict[str, list[str]]]] = []

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                self.seen.append((orjson.loads(line), self.h.segments(self.braze)))
        return len(text)


@pytest.mark.parametrize("path", ["fast", "stream_maps", "batch", "batch_stream_maps"])
def test_no_state_before_braze_confirmed_across_the_drain_age(
    braze_sandbox: Any, tmp_path: Path, h: Any, path: str
) -> None:
    b = braze_sandbox
    extra: dict[str, Any] = {}
    if path.endswith("stream_maps"):
        extra["stream_maps"] = {"audience_members": {"lytics_uid": "__NULL__"}}
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"), **extra)
    target = TargetBrazeAudience(config=cfg)
    target._MAX_RECORD_AGE_IN_MINUTES = AGE_SECONDS / 60  # the SDK's 5 minutes, shortened
    read_fd, write_fd = os.pipe()
    out = _Lines(b, h)
    errors: list[BaseException] = []

    def run() -> None:
        with open(read_fd, encoding="utf-8") as stdin:
            try:
                target.listen(stdin)
            except BaseException as exc:
                errors.append(exc)

    def members(users: range, name: str) -> list[dict[str, Any]]:
        msgs = [h.member("a", f"u{i}") for i in users]
        if path.startswith("batch"):
            return [h.batch_msg(tmp_path, "audience_members", [m["record"] for m in msgs], name)]
        return msgs

    with contextlib.redirect_stdout(out), open(write_fd, "w", encoding="utf-8") as stdin:
        reader = threading.Thread(target=run)
        reader.start()
        stdin.write(h.to_lines([*h.schema_msgs(), *members(range(5), "b1"), h.state(1)]))
        stdin.flush()
        for step in range(2, 4):  # two more drain ages crossed while reading
            time.sleep(AGE_SECONDS * 1.5)
            stdin.write(h.to_lines([*members(range(5 * step, 5 * step + 5), f"b{step}")]))
            stdin.write(h.to_lines([h.state(step)]))
            stdin.flush()
        time.sleep(AGE_SECONDS * 1.5)
        stdin.write(h.to_lines([h.member("a", "u99")]))  # a last record after the age
        stdin.flush()
        time.sleep(0.5)
        assert out.seen == []  # no STATE while nothing is delivered
        assert h.track_requests(b) == []
        stdin.write(h.to_lines([h.snapshot("a", 16)]))
        stdin.close()
        reader.join(timeout=60)
    assert not errors, errors
    users = [f"u{i}" for i in [*range(5), *range(10, 20), 99]]
    assert [s for s, _ in out.seen] == [{"bookmarks": {"audience_members": {"run": 3}}}]
    # At the moment the STATE line was written, Braze already held everything before it.
    assert out.seen[0][1] == {u: ["a"] for u in users}


def test_state_only_after_confirmation(braze_sandbox: Any, tmp_path: Path, h: Any) -> None:
    b = braze_sandbox
    cfg = h.braze_config(b, str(tmp_path / "s.sqlite"))
    seen_at_state: list[int] = []

    class Spy(io.StringIO):
        def write(self, s: str) -> int:
            if s.strip():
                seen_at_state.append(len(b.users()))
            return super().write(s)

    msgs = [*h.schema_msgs(), h.member("a", "u1"), h.state(1), h.member("a", "u2"), h.state(2)]
    spy = Spy()
    with contextlib.redirect_stdout(spy):
        TargetBrazeAudience(config=cfg).listen(io.StringIO(h.to_lines(msgs)))
    assert spy.getvalue().strip() == '{"bookmarks": {"audience_members": {"run": 2}}}'
    assert seen_at_state == [2]
