"""`make dist`: build, check and try every package the way a user outside this repository would.

    uv run python scripts/dist.py [--python /path/to/python3.X]

1. Builds the sdist and wheel of the four plugins and the sandbox into dist/ (`uv build`: each
   wheel is built from its sdist, so a file missing from the sdist fails here).
2. `twine check --strict` on all of them (metadata and README render on a package index), and
   checks that each carries the licence and declares its Python versions consistently.
3. Installs each wheel alone into its own clean virtualenv (no workspace, no sibling packages,
   `--python`: the interpreter under test) and runs `--about --format=json`.
4. Smoke test with the installed executables only: the sandbox wheel's `lytics-sandbox` and
   `braze-sandbox` as processes, `tap-lytics-audience | target-braze-audience` and
   `tap-braze-csv | target-lytics-users` piped, and what landed in the emulators is checked.
   target-braze-audience without its `postgres` extra must refuse a PostgreSQL store clearly;
   with `target-braze-audience[postgres]` the driver imports.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from e2e_helpers import pipe  # noqa: E402
from packaging.specifiers import SpecifierSet  # noqa: E402
from sync_common import expected as common_copies  # noqa: E402
from tap_braze_csv.sample import generate_export  # noqa: E402

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

DIST = ROOT / "dist"
BIN = Path(sys.executable).parent
UV = shutil.which("uv") or str(BIN / "uv")
PACKAGES = [
    "sandbox",
    "tap-lytics-audience",
    "tap-braze-csv",
    "target-braze-audience",
    "target-lytics-users",
]
PLUGINS = PACKAGES[1:]


STARTED = time.perf_counter()


def say(text: str) -> None:
    print(f"[dist {time.perf_counter() - STARTED:5.1f}s] {text}", flush=True)


def check(condition: object, message: object) -> None:
    """Stop with `message` unless `condition` holds (asserts would vanish under -O)."""
    if not condition:
        raise SystemExit(f"[dist] check failed: {message}")


def run(*cmd: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure print its output and stop."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"[dist] failed (exit {proc.returncode}): {' '.join(map(str, cmd))}")
    return proc


def project(directory: str) -> dict:
    return tomllib.loads((ROOT / directory / "pyproject.toml").read_text())["project"]


def artifact(directory: str, suffix: str) -> Path:
    stem = project(directory)["name"].replace("-", "_")
    (path,) = DIST.glob(f"{stem}-*{suffix}")
    return path


def build() -> None:
    shutil.rmtree(DIST, ignore_errors=True)
    started = time.perf_counter()
    run(UV, "build", "--all-packages", "--out-dir", DIST, cwd=ROOT)
    say(
        f"built {len(list(DIST.glob('*.whl')))} wheels and {len(list(DIST.glob('*.tar.gz')))} sdists "
        f"in {time.perf_counter() - started:.1f}s"
    )
    run(
        BIN / "twine",
        "check",
        "--strict",
        *sorted(DIST.glob("*.whl")),
        *sorted(DIST.glob("*.tar.gz")),
    )
    say("twine check --strict: every wheel and sdist PASSED")
    licence = (ROOT / "LICENSE").read_text()
    for directory in PACKAGES:
        meta = project(directory)
        with zipfile.ZipFile(artifact(directory, ".whl")) as whl:
            names = whl.namelist()
            (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
            text = whl.read(metadata).decode()
            (lic,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
            check(whl.read(lic).decode() == licence, f"{directory}: wheel LICENSE differs")
            check(not [n for n in names if n.startswith("tests/")], f"{directory}: tests in wheel")
            # The shared modules copied from common/ (scripts/sync_common.py) ship, as generated.
            for path, copy in common_copies(ROOT).items():
                if path.is_relative_to(ROOT / directory):
                    name = path.relative_to(ROOT / directory).as_posix()
                    check(name in names, f"{directory}: wheel misses {name}")
                    check(whl.read(name).decode() == copy, f"{directory}: {name} is not generated")
        declared = re.search(r"^Requires-Python: (.+)$", text, re.MULTILINE)
        check(
            declared is not None
            and SpecifierSet(declared.group(1)) == SpecifierSet(meta["requires-python"]),
            f"{directory}: Requires-Python",
        )
        check("License-Expression: Apache-2.0" in text, directory)
        with tarfile.open(artifact(directory, ".tar.gz")) as sdist:
            members = {Path(m).name for m in sdist.getnames()}
        check(
            {"LICENSE", "README.md", "pyproject.toml"} <= members,
            f"{directory}: sdist misses files",
        )
    say(
        "every wheel and sdist carries LICENSE (Apache-2.0), README and Requires-Python; "
        "every wheel its copies of common/"
    )


def venv(python: str, work: Path, name: str, *requirements: str) -> Path:
    """A clean virtualenv holding only `requirements` (and their dependencies); its bin/."""
    path = work / name
    run(UV, "venv", "--quiet", "--no-project", "--python", python, path)
    run(UV, "pip", "install", "--quiet", "--python", path / "bin" / "python", *requirements)
    return path / "bin"


@contextmanager
def emulator(executable: Path, *args: str) -> Iterator[str]:
    """Run a sandbox console script on a free port; yield its URL."""
    proc = subprocess.Popen(
        [str(executable), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = ""
        for _ in range(5):
            if match := re.search(r"listening on (http://\S+)", proc.stdout.readline()):
                url = match.group(1)
                break
        if not url:
            raise SystemExit(
                f"[dist] {executable.name} printed no URL: {proc.stderr.read() if proc.stderr else ''}"
            )
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback emulator)
        return json.loads(response.read())


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def check_about(bins: dict[str, Path]) -> None:
    for name in PLUGINS:
        about = json.loads(run(bins[name] / name, "--about", "--format=json").stdout)
        meta = project(name)
        classifiers = [
            c.rsplit(" :: ", 1)[1]
            for c in meta["classifiers"]
            if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
        ]
        check(about["name"] == name and about["version"] == meta["version"], about)
        check(
            about["supported_python_versions"] == classifiers,
            (name, about["supported_python_versions"]),
        )
        check(about["settings"]["properties"], name)
    say(f"--about from each clean install: {', '.join(PLUGINS)} (Python {', '.join(classifiers)})")


def smoke(bins: dict[str, Path], python: str, work: Path) -> None:
    members = {"high_value": [1, 2, 3, 4, 5], "churn_risk": [4, 5, 6]}
    seed = write_json(
        work / "audiences.json",
        {
            "audiences": [
                {
                    "slug": slug,
                    "name": slug,
                    "members": [{"_uid": f"lu{i}", "braze_id": f"u{i}"} for i in ids],
                }
                for slug, ids in members.items()
            ]
        },
    )
    export = generate_export(work / "segment-2026-11-30.zip", 25)
    sandbox = bins["sandbox"]
    with (
        emulator(sandbox / "lytics-sandbox", "--seed-file", str(seed)) as lytics,
        emulator(sandbox / "braze-sandbox") as braze,
    ):
        tap = write_json(
            work / "tap-lytics.json",
            {"api_url": lytics, "api_token": "sandbox-lytics-token", "audiences": list(members)},
        )
        target = write_json(
            work / "target-braze.json",
            {
                "rest_endpoint": braze,
                "api_key": "sandbox-braze-key",
                "store_url": str(work / "store.sqlite"),
            },
        )
        rc_tap, rc_target, _, err = pipe(
            [str(bins["tap-lytics-audience"] / "tap-lytics-audience"), "--config", str(tap)],
            [str(bins["target-braze-audience"] / "target-braze-audience"), "--config", str(target)],
            timeout=120,
        )
        check((rc_tap, rc_target) == (0, 0), err[-4000:])
        users = get(f"{braze}/_sandbox/users")
        got = {u: sorted(a.get("lytics_segments") or []) for u, a in users.items()}  # type: ignore[union-attr]
        want = {f"u{i}": sorted(s for s, ids in members.items() if i in ids) for i in range(1, 7)}
        check(got == want, (got, want))
        say(
            f"tap-lytics-audience | target-braze-audience: Braze holds lytics_segments of {len(got)} users as expected"
        )

        tap = write_json(work / "tap-braze-csv.json", {"paths": [str(export)]})
        target = write_json(
            work / "target-lytics.json", {"api_url": lytics, "api_token": "sandbox-lytics-token"}
        )
        rc_tap, rc_target, _, err = pipe(
            [str(bins["tap-braze-csv"] / "tap-braze-csv"), "--config", str(tap)],
            [str(bins["target-lytics-users"] / "target-lytics-users"), "--config", str(target)],
            timeout=120,
        )
        check((rc_tap, rc_target) == (0, 0), err[-4000:])
        collected = get(f"{lytics}/_sandbox/collected?stream=braze_users")
        check(isinstance(collected, list) and len(collected) == 25, collected)
        check(all(r.get("braze_id") and r.get("external_id") for r in collected), collected[0])
        say("tap-braze-csv | target-lytics-users: Lytics stream braze_users collected 25 records")

    # The PostgreSQL driver is the `postgres` extra: without it, a clear error naming the extra.
    pg = write_json(
        work / "target-pg.json",
        {
            "rest_endpoint": "http://127.0.0.1:9",
            "api_key": "k",
            "store_url": "postgresql://u@127.0.0.1:9/db",
        },
    )
    messages = (
        '{"type":"SCHEMA","stream":"audience_members","schema":{"properties":{"external_id":{"type":"string"},'
        '"audience_slug":{"type":"string"}}},"key_properties":[]}\n'
        '{"type":"RECORD","stream":"audience_members","record":{"external_id":"u1","audience_slug":"a"}}\n'
    )
    proc = subprocess.run(
        [str(bins["target-braze-audience"] / "target-braze-audience"), "--config", str(pg)],
        input=messages,
        capture_output=True,
        text=True,
        timeout=60,
    )
    check(
        proc.returncode != 0 and "target-braze-audience[postgres]" in proc.stderr,
        proc.stderr[-3000:],
    )
    extra = f"{artifact('target-braze-audience', '.whl')}[postgres]"
    pg_bin = venv(python, work, "target-braze-audience-postgres", extra)
    run(pg_bin / "python", "-c", "import psycopg, target_braze_audience.store")
    say(
        "target-braze-audience: PostgreSQL store without the extra -> clear error; [postgres] extra installs psycopg"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter of the clean virtualenvs"
    )
    python = parser.parse_args().python
    build()
    version = run(
        python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="dist-check-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        bins = {d: venv(python, work, d, str(artifact(d, ".whl"))) for d in PACKAGES}
        say(
            f"installed each wheel alone into a clean Python {version} virtualenv in {time.perf_counter() - started:.1f}s"
        )
        check_about(bins)
        smoke(bins, python, work)
    say(f"OK: dist/ holds checked wheels and sdists that install and run on Python {version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
