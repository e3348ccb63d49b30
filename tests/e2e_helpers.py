"""Helpers for the cross-plugin end-to-end tests: real `meltano run`, real piped processes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MELTANO = BIN / "meltano"


def meltano_install(project: Path, timeout: float = 600) -> None:
    """`meltano install` in a project (plugins whose venv matches their pip_url are kept)."""
    proc = subprocess.run(
        [str(MELTANO), "install"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false"},
    )
    assert proc.returncode == 0, f"meltano install failed:\n{proc.stdout}\n{proc.stderr}"


class Meltano:
    """Runs meltano commands in the project with an isolated system database (state store)."""

    def __init__(self, tmp: Path, project: Path = ROOT, environment: str = "sandbox") -> None:
        self.tmp = tmp
        self.project = project
        self.env: dict[str, str] = {
            **os.environ,
            "MELTANO_DATABASE_URI": f"sqlite:///{tmp / 'meltano.db'}",
            "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
            "MELTANO_ENVIRONMENT": environment,
            "MELTANO_CLI_LOG_LEVEL": "info",
        }

    def set(self, **settings: object) -> None:
        """Set plugin settings through environment variables (TAP_X_SETTING=...)."""
        for key, value in settings.items():
            self.env[key] = value if isinstance(value, str) else json.dumps(value)

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `meltano <args>` and return the finished process (output captured)."""
        return subprocess.run(
            [str(MELTANO), *args],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def state(self, state_id: str) -> dict:
        """The state Meltano keeps for a state id."""
        proc = self.run("state", "get", state_id)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])


def pipe(
    tap: list[str], target: list[str], *, timeout: float = 300, cwd: Path | None = None
) -> tuple[int, int, str, str]:
    """Run `tap | target` as two real processes; return (tap rc, target rc, target stdout, stderrs)."""
    tap_proc = subprocess.Popen(tap, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    target_proc = subprocess.Popen(
        target,
        stdin=tap_proc.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    assert tap_proc.stdout is not None
    tap_proc.stdout.close()
    out, target_err = target_proc.communicate(timeout=timeout)
    tap_err = tap_proc.stderr.read().decode() if tap_proc.stderr else ""
    tap_proc.wait(timeout=timeout)
    return tap_proc.returncode, target_proc.returncode, out, tap_err + target_err


def load_tap_test_module(name: str) -> ModuleType:
    """Import a helper module of tap-braze-csv/tests (sftp_server, pgp_keys, s3_server) by path."""
    path = ROOT / "tap-braze-csv" / "tests" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"braze_csv_{name}", path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module
