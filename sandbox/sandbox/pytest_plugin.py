"""pytest fixtures ``braze_sandbox`` and ``lytics_sandbox`` (registered through pytest11)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.braze import BrazeSandbox
from sandbox.lytics import LyticsSandbox


@pytest.fixture
def braze_sandbox() -> Iterator[BrazeSandbox]:
    """Yield a started Braze emulator on 127.0.0.1 (random port), stopped after the test."""
    with BrazeSandbox() as server:
        yield server


@pytest.fixture
def lytics_sandbox() -> Iterator[LyticsSandbox]:
    """Yield a started Lytics emulator on 127.0.0.1 (random port), stopped after the test."""
    with LyticsSandbox() as server:
        yield server
