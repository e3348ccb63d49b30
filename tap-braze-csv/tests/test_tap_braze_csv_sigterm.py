"""SIGTERM in the middle of a big buffered write: output stays valid, state never over-claims."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tap_braze_csv.sample import generate_export

EXE = Path(sys.executable).parent / "tap-braze-csv"


def test_sigterm_mid_file_then_resume(tap_runner, tmp_path: Path) -> None:
    assert EXE.exists(), f"{EXE} missing: run `uv sync` at the workspace root"
    export = generate_export(tmp_path / "S-2024-01-01.csv", 12_000)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"paths": [str(export)]}))
    proc = subprocess.Popen(
        [str(EXE), "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    lines: list[bytes] = []
    records = 0
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(b'{"type":"RECORD"'):
            records += 1
            if records == 2500:
                proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    # One rule for every plugin of the project: interrupted = 128 + signal number.
    assert proc.returncode == 128 + signal.SIGTERM
    messages = [json.loads(line) for line in lines]  # every line is whole JSON
    recs = [m["record"] for m in messages if m["type"] == "RECORD"]
    assert 2500 <= len(recs) < 12_000, "the run was meant to stop mid-file"
    last_state = next(m["value"] for m in reversed(messages) if m["type"] == "STATE")
    current = last_state["bookmarks"]["braze_users"]["current"]
    # every STATE claims at most the rows written before it
    seen = 0
    for m in messages:
        if m["type"] == "RECORD":
            seen = m["record"]["_sdc_source_lineno"]
        elif m["type"] == "STATE" and "current" in m["value"]["bookmarks"]["braze_users"]:
            assert m["value"]["bookmarks"]["braze_users"]["current"]["line"] <= seen + 2
    rest = tap_runner({"paths": [str(export)]}, state=last_state).records
    assert rest[0]["_sdc_source_lineno"] > current["line"]
    ids = [r["braze_id"] for r in recs if r["_sdc_source_lineno"] <= current["line"]]
    ids += [r["braze_id"] for r in rest]
    assert len(ids) == 12_000
    assert len(set(ids)) == 12_000
