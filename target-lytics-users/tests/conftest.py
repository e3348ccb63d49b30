"""Fixtures for target-lytics-users tests (helpers live in target_lytics_testkit.py)."""

from __future__ import annotations

import typing as t
from collections.abc import Iterator

import pytest
from target_lytics_testkit import TOKEN, PoisonLyticsSandbox, RejectingLyticsSandbox

from sandbox import LyticsSandbox


@pytest.fixture
def config(lytics_sandbox: LyticsSandbox) -> dict[str, t.Any]:
    """Target config pointing at the sandbox with fast retries."""
    return {
        "api_token": TOKEN,
        "api_url": lytics_sandbox.url,
        "retry_backoff_base": 0.01,
        "retry_backoff_max": 0.05,
    }


@pytest.fixture
def rejecting_sandbox() -> Iterator[RejectingLyticsSandbox]:
    """A started RejectingLyticsSandbox."""
    with RejectingLyticsSandbox() as server:
        yield server


@pytest.fixture
def poison_sandbox() -> Iterator[PoisonLyticsSandbox]:
    """A started PoisonLyticsSandbox."""
    with PoisonLyticsSandbox() as server:
        yield server
