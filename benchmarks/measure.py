"""Process measurement helpers shared by the benchmarks: wall time and peak RSS per process."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


@dataclass
class Measured:
    """One finished process: exit code, wall seconds, peak resident memory."""

    returncode: int
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float = 0.0  # user + system time of the process


def _wait(proc: subprocess.Popen, started: float) -> Measured:
    # os.wait4 reports the rusage of exactly this child (ru_maxrss in KiB on Linux).
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        proc.returncode,
        time.perf_counter() - started,
        usage.ru_maxrss / 1024,
        usage.ru_utime + usage.ru_stime,
    )


ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tap-lytics-audience", "tap-braze-csv", "target-braze-audience", "target-lytics-users")


def compile_bytecode(*extra: Path) -> None:
    """Compile every module the measured processes import, once, before measuring.

    A user's `pip install` / `meltano install` writes `.pyc` files; `uv sync` does not, and with
    PYTHONDONTWRITEBYTECODE set (as on CI machines) no process ever caches them, so each start
    re-compiled ~450 modules (~1.1 s of CPU per process, measured with cProfile) and the
    benchmarks measured the compiler instead of the plugins.
    """
    dirs = [Path(sysconfig.get_paths()["purelib"]), ROOT / "sandbox" / "sandbox"]
    dirs += [ROOT / name / name.replace("-", "_") for name in PACKAGES]
    dirs += [d for d in extra if d.exists()]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", *map(str, dirs)],
        check=False,  # a module that does not compile is reported by its benchmark, not here
        stdout=subprocess.DEVNULL,
    )


def run_measured(
    cmd: Sequence[str],
    *,
    stdin: IO[Any] | int | None = None,
    stdout: IO[Any] | int | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    stderr: IO[Any] | int | None = subprocess.DEVNULL,
) -> Measured:
    """Run one command to completion and measure it."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=cwd)
    return _wait(proc, started)


def run_pipeline(
    tap: Sequence[str],
    target: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    stdout: IO[Any] | int | None = subprocess.DEVNULL,
) -> tuple[Measured, Measured, float]:
    """Run `tap | target`; return each process's measurement and the pipeline's wall time."""
    started = time.perf_counter()
    tap_proc = subprocess.Popen(
        tap, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=cwd
    )
    target_proc = subprocess.Popen(
        target, stdin=tap_proc.stdout, stdout=stdout, stderr=subprocess.DEVNULL, env=env, cwd=cwd
    )
    assert tap_proc.stdout is not None
    tap_proc.stdout.close()
    tap_m = _wait(tap_proc, started)
    target_m = _wait(target_proc, started)
    return tap_m, target_m, time.perf_counter() - started
