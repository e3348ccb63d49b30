"""Fixtures for the cross-plugin end-to-end tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_helpers import ROOT, Meltano, meltano_install


@pytest.fixture(scope="session")
def meltano_installed() -> Path:
    """Install the project's plugins into .meltano/ once per session (fast with the uv backend)."""
    meltano_install(ROOT)
    return ROOT


@pytest.fixture
def meltano(meltano_installed: Path, tmp_path: Path) -> Meltano:
    """A meltano runner with its own system database."""
    return Meltano(tmp_path)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str, dict], Path]:
    """Write a plugin config JSON file and return its path."""

    def _write(name: str, config: dict) -> Path:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(config))
        return path

    return _write
