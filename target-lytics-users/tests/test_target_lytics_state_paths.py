"""STATE only after Lytics accepted everything before it: drain age, BATCH, SIGTERM.

Real target processes fed through a pipe over time; each STATE line is paired with what the
(deliberately slow) Lytics sandbox held at the moment the line was read.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import signal
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

from target_lytics_testkit import TOKEN, braze_user, singer_lines
from target_lytics_users.target import TargetLyticsUsers

from sandbox import LyticsSandbox

EXE = Path(sys.executable).parent / "target-lytics-users"


class SlowLyticsSandbox(LyticsSandbox):
    """Lytics emulator taking `delay` seconds per collect request (stores after the wait)."""

    delay = 0.3

    def _collect(self, req: t.Any, stream: str) -> t.Any:
        time.sleep(self.delay)
        return super()._collect(req, stream)


class Run:
    """A target process; its STATE lines with the sandbox's record count when each was read."""

    def __init__(self, lytics: LyticsSandbox, tmp_path: Path, **settings: t.Any) -> None:
        cfg = {"api_token": TOKEN, "api_url": lytics.url, "retry_backoff_base": 0.01, **settings}
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        self.lytics = lytics
        self.stderr = tmp_path / "stderr"
        self.proc = subprocess.Popen(
            [str(EXE), "--config", str(tmp_path / "config.json")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr.open("wb"),
            text=True,
        )
        self.states: list[tuple[dict, int]] = []
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.states.append((json.loads(line), len(self.lytics.collected("braze_users"))))

    def send(self, lines: list[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(line + "\n" for line in lines))
        self.proc.stdin.flush()

    def wait_for(self, cond: t.Callable[[], bool], timeout: float = 20) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            time.sleep(0.02)
        return False

    def finish(self, timeout: float = 60) -> int:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        rc = self.proc.wait(timeout=timeout)
        self._watcher.join(timeout=5)
        return rc


def _records(start: int, stop: int) -> list[str]:
    return [
        json.dumps({"type": "RECORD", "stream": "braze_users", "record": braze_user(i)})
        for i in range(start, stop)
    ]


def _state(n: int) -> str:
    return json.dumps({"type": "STATE", "value": {"n": n}})


def _sessions(lytics: LyticsSandbox) -> list[int]:
    return sorted(r["sessions"] for r in lytics.collected("braze_users"))


def test_long_run_crossing_the_drain_age(tmp_path: Path) -> None:
    age = 1.0
    with SlowLyticsSandbox() as lytics:
        run = Run(lytics, tmp_path, max_record_age_seconds=age, max_batch_records=4)
        run.send([singer_lines([], final_state=False)[0], *_records(0, 10), _state(10)])
        assert run.wait_for(lambda: len(lytics.collected("braze_users")) >= 8)  # running
        time.sleep(age * 1.3)
        assert run.states == []  # no record arrived after the age yet: no drain
        run.send(_records(10, 11))  # the age check runs on the next record: drain + STATE
        assert run.wait_for(lambda: len(run.states) == 1)
        # BATCH input crosses the age too.
        batch = tmp_path / "b.json.gz"
        with gzip.open(batch, "wt") as fh:
            fh.writelines(json.dumps(braze_user(i)) + "\n" for i in range(11, 21))
        manifest = {"format": "jsonl", "compression": "gzip"}
        message = {"type": "BATCH", "stream": "braze_users", "encoding": manifest}
        run.send([json.dumps({**message, "manifest": [batch.as_uri()]}), _state(21)])
        time.sleep(age * 1.3)
        run.send(_records(21, 22))
        assert run.wait_for(lambda: len(run.states) == 2)
        run.send([_state(22)])
        assert run.finish() == 0, run.stderr.read_text()[-3000:]
    assert [s for s, _ in run.states] == [{"n": 10}, {"n": 21}, {"n": 22}]
    # When each STATE line appeared, Lytics held at least every record before it.
    for state, held in run.states:
        assert held >= state["n"], (state, held)
    assert _sessions(lytics) == list(range(22))  # each record once


def test_sigterm_while_waiting_for_input_delivers_then_writes_state(tmp_path: Path) -> None:
    with SlowLyticsSandbox() as lytics:
        run = Run(lytics, tmp_path, max_batch_records=4)
        run.send([singer_lines([], final_state=False)[0], *_records(0, 7), _state(7)])
        run.send(_records(7, 9))  # read after the last STATE: sent, but no STATE covers them
        assert run.wait_for(lambda: len(lytics.collected("braze_users")) >= 4)  # first body
        time.sleep(0.3)  # the remaining lines are read; the target now waits for input
        run.proc.send_signal(signal.SIGTERM)
        rc = run.finish()
    err = run.stderr.read_text()
    assert rc == 128 + signal.SIGTERM, err[-3000:]
    assert [s for s, _ in run.states] == [{"n": 7}]
    assert run.states[0][1] == 9  # every record read was accepted before the STATE line
    assert _sessions(lytics) == list(range(9))


def test_sigterm_during_a_message_waits_for_it(tmp_path: Path) -> None:
    # One record per body and at most 2 bodies pending: reading waits for the slow sandbox,
    # so the signal arrives while a record message is being handled.
    with SlowLyticsSandbox() as lytics:
        lytics.delay = 0.5
        run = Run(lytics, tmp_path, max_batch_records=1, max_concurrency=1)
        run.send([singer_lines([], final_state=False)[0], *_records(0, 3), _state(3)])
        run.send(_records(3, 8))
        # Once 2 bodies are accepted the STATE was read; reading waits on the 3rd or 4th body.
        assert run.wait_for(lambda: len(lytics.collected("braze_users")) >= 2)
        run.proc.send_signal(signal.SIGTERM)
        rc = run.finish()
    err = run.stderr.read_text()
    assert rc == 128 + signal.SIGTERM, err[-3000:]
    assert "stopping after the current message" in err
    assert [s for s, _ in run.states] == [{"n": 3}]
    held = run.states[0][1]
    got = _sessions(lytics)
    assert held == len(got) >= 3
    assert got == list(range(len(got)))  # no gap, no duplicate


def test_state_is_held_while_a_sink_holds_unconfirmed_records(lytics_sandbox, caplog) -> None:
    # The last check before a STATE line: records a sink still holds block it.
    cfg = {"api_token": TOKEN, "api_url": lytics_sandbox.url, "max_batch_records": 100}
    target = TargetLyticsUsers(config=cfg)
    schema, *records = singer_lines([braze_user(i) for i in range(3)], final_state=False)
    target._process_schema_message(json.loads(schema))
    for line in records:
        target._process_record_message(json.loads(line))
    target._process_state_message({"type": "STATE", "value": {"n": 3}})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        target._write_state_message({"n": 3})
        assert out.getvalue() == ""
        assert "STATE not emitted: 3 records not yet accepted by Lytics" in caplog.text
        target.process_endofpipe()  # drains: Lytics accepts the body, then STATE
    assert json.loads(out.getvalue()) == {"n": 3}
    assert _sessions(lytics_sandbox) == [0, 1, 2]
