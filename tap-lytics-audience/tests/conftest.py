"""Helpers for tap-lytics-audience tests: run the tap in-process and parse its output."""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest
from tap_lytics_audience.tap import TapLyticsAudience

TOKEN = "sandbox-lytics-token"


@dataclass
class TapRun:
    """Parsed Singer output of one in-process run."""

    messages: list[dict[str, Any]]
    error: BaseException | None = None
    records: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    states: list[dict[str, Any]] = field(default_factory=list)
    stdout: str = ""

    def __post_init__(self) -> None:
        for msg in self.messages:
            if msg["type"] == "RECORD":
                self.records[msg["stream"]].append(msg["record"])
            elif msg["type"] == "STATE":
                self.states.append(msg["value"])


def base_config(url: str, **overrides: Any) -> dict[str, Any]:
    """Tap config for a sandbox: fast retries, small timeouts."""
    config: dict[str, Any] = {
        "api_token": TOKEN,
        "api_url": url,
        "retry_backoff_base": 0.01,
        "retry_backoff_max": 0.05,
        "request_timeout": 10,
    }
    config.update(overrides)
    return config


def run_tap(
    config: dict[str, Any], state: dict | None = None, *, expect_error: bool = False
) -> TapRun:
    """Run `sync_all` in-process, capturing stdout; keep the exception when one is expected."""
    buf = io.StringIO()
    error: BaseException | None = None
    with contextlib.redirect_stdout(buf):
        tap = TapLyticsAudience(config=config, state=state, validate_config=True)
        try:
            tap.sync_all()
        except Exception as exc:
            if not expect_error:
                raise
            error = exc
    if expect_error and error is None:
        pytest.fail("the tap run was expected to fail but finished")
    out = buf.getvalue()
    run = TapRun([json.loads(line) for line in out.splitlines() if line.strip()], error)
    run.stdout = out
    return run


@pytest.fixture
def tap_runner():
    """The `run_tap` helper."""
    return run_tap


@pytest.fixture
def make_config():
    """The `base_config` helper."""
    return base_config
