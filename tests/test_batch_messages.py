"""Our taps emitting SDK BATCH messages (`batch_config` set), piped into our targets.

Both targets used to read BATCH messages, drop their records and still emit the STATE after
them. Every record of a batch file must now reach Braze/Lytics before that STATE is written.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

from e2e_helpers import BIN, pipe
from tap_braze_csv.sample import generate_export


def _batch_config(root: Path) -> dict:
    return {
        "encoding": {"format": "jsonl", "compression": "gzip"},
        "storage": {"root": root.as_uri()},
    }


def _write(path: Path, cfg: dict) -> str:
    path.write_text(json.dumps(cfg))
    return str(path)


def _member(i: int) -> dict:
    return {"_uid": f"lu{i}", "braze_id": f"u{i}"}


def _segments(braze) -> dict[str, list[str]]:
    return {
        uid: sorted(attrs["lytics_segments"])
        for uid, attrs in braze.users().items()
        if attrs.get("lytics_segments")
    }


def test_tap_lytics_audience_batches_into_target_braze_audience(
    lytics_sandbox, braze_sandbox, tmp_path: Path
):
    lytics_sandbox.add_audience("vip", name="VIP", members=[_member(i) for i in range(120)])
    lytics_sandbox.add_audience(
        "churn", name="Churn", members=[_member(i) for i in range(100, 130)]
    )
    batches = tmp_path / "batches"
    tap_cfg = _write(
        tmp_path / "tap.json",
        {
            "api_url": lytics_sandbox.url,
            "api_token": lytics_sandbox.api_token,
            "audiences": ["vip", "churn"],
            "batch_config": _batch_config(batches),
        },
    )
    target_cfg = _write(
        tmp_path / "target.json",
        {
            "api_key": braze_sandbox.api_key,
            "rest_endpoint": braze_sandbox.url,
            "store_url": str(tmp_path / "store.sqlite"),
            "retry_backoff_base": 0.01,
        },
    )
    tap = [str(BIN / "tap-lytics-audience"), "--config", tap_cfg]
    target = [str(BIN / "target-braze-audience"), "--config", target_cfg]

    tap_rc, target_rc, out, err = pipe(tap, target, timeout=120)
    assert (tap_rc, target_rc) == (0, 0), err[-3000:]
    assert list(batches.glob("*.json.gz")), "the tap really wrote batch files"
    assert "BATCH of stream 'audience_members': 150 records read from 1 file(s)" in err
    expected = {f"u{i}": ["vip"] for i in range(100)}
    expected |= {f"u{i}": ["churn", "vip"] for i in range(100, 120)}
    expected |= {f"u{i}": ["churn"] for i in range(120, 130)}
    assert _segments(braze_sandbox) == expected
    states = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(states) == 1
    assert set(states[0]["bookmarks"]) >= {"audience_members", "audience_snapshots"}

    # Second run: 20 users leave vip. The removals come from the snapshot batch file, which
    # is only applied after the members batch file (input order is kept).
    lytics_sandbox.set_members("vip", [_member(i) for i in range(20, 120)])
    braze_sandbox.clear_requests()
    tap_rc, target_rc, out, err = pipe(tap, target, timeout=120)
    assert (tap_rc, target_rc) == (0, 0), err[-3000:]
    expected = {u: v for u, v in expected.items() if u not in {f"u{i}" for i in range(20)}}
    assert _segments(braze_sandbox) == expected
    sent = [
        obj
        for req in braze_sandbox.requests
        if req.path == "/users/track"
        for obj in req.json["attributes"]
    ]
    assert sorted(o["external_id"] for o in sent) == sorted(f"u{i}" for i in range(20))
    assert all(o["lytics_segments"] == {"remove": ["vip"]} for o in sent)


def test_tap_braze_csv_batches_into_target_lytics_users(lytics_sandbox, tmp_path: Path):
    export = generate_export(tmp_path / "exports" / "segment-a-20261128.zip", 260, seed=7)
    with zipfile.ZipFile(export) as zf:
        text = zf.read(zf.namelist()[0]).decode("utf-8-sig")
    braze_ids = sorted(row["Appboy ID"] for row in csv.DictReader(io.StringIO(text, newline="")))
    batches = tmp_path / "batches"
    tap_cfg = _write(
        tmp_path / "tap.json",
        {"paths": [str(tmp_path / "exports" / "*.zip")], "batch_config": _batch_config(batches)},
    )
    target_cfg = _write(
        tmp_path / "target.json",
        {
            "api_token": lytics_sandbox.api_token,
            "api_url": lytics_sandbox.url,
            "max_batch_records": 100,
        },
    )
    tap = [str(BIN / "tap-braze-csv"), "--config", tap_cfg]
    target = [str(BIN / "target-lytics-users"), "--config", target_cfg]

    tap_rc, target_rc, out, err = pipe(tap, target, timeout=120)
    assert (tap_rc, target_rc) == (0, 0), err[-3000:]
    assert list(batches.glob("*.json.gz")), "the tap really wrote batch files"
    collected = lytics_sandbox.collected("braze_users")
    assert sorted(r["braze_id"] for r in collected) == braze_ids  # each row once
    assert len([r for r in lytics_sandbox.requests if r.path.startswith("/collect")]) == 3
    states = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert states, "STATE is emitted once the batch's records are delivered"
    files = states[-1]["bookmarks"]["braze_users"]["files"]
    assert [f["rows"] for f in files] == [260]
