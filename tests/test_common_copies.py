"""Shared mechanics live once in common/ and are copied into each plugin by
scripts/sync_common.py (each plugin installs alone); the copies never drift from the original."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "sync_common.py"


def load_sync_common() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sync_common", SCRIPT)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync_common = load_sync_common()


def test_every_copy_is_its_original_behind_the_generated_header() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    copies = sync_common.expected(ROOT)
    modules = [p for p in copies if p.name != "__init__.py"]
    # Every canonical module is used by at least one plugin, and each copy is really imported
    # from the package it sits in (a copy nobody imports would be dead weight in the wheel).
    assert {p.name for p in modules} == {p.name for p in (ROOT / "common").glob("*.py")}
    for path in modules:
        package = path.parent.parent.name
        dotted = f"{package}.common.{path.stem}"
        users = [
            f
            for f in path.parent.parent.rglob("*.py")
            if "common" not in f.relative_to(path.parent.parent).parts and dotted in f.read_text()
        ]
        # ...or by a sibling copy (`from .retry_headers import ...` in retries.py).
        users += [
            f for f in path.parent.glob("*.py") if f"from .{path.stem} import" in f.read_text()
        ]
        assert users, f"{path.relative_to(ROOT)} is not imported by {package}"
        assert path.read_text().startswith(
            f"# generated from common/{path.name} by scripts/sync_common.py: edit the original\n"
        )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of common/ and the plugin packages' common/ directories."""
    shutil.copytree(ROOT / "common", tmp_path / "common")
    for path in sync_common.expected(ROOT):
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    assert sync_common.problems(tmp_path) == []
    return tmp_path


def test_an_edited_copy_fails_naming_the_file(tree: Path) -> None:
    copy = tree / "target-lytics-users" / "target_lytics_users" / "common" / "secrets.py"
    copy.write_text(copy.read_text() + "\n# a local fix\n")
    assert sync_common.problems(tree) == [
        "target-lytics-users/target_lytics_users/common/secrets.py: differs from its original "
        "(edit common/secrets.py, then run scripts/sync_common.py)"
    ]
    # Writing restores it from the original.
    assert sync_common.write(tree) == [copy]
    assert sync_common.problems(tree) == []


def test_an_edited_original_fails_naming_every_stale_copy(tree: Path) -> None:
    original = tree / "common" / "config_numbers.py"
    original.write_text(original.read_text() + "\n# changed\n")
    found = sync_common.problems(tree)
    assert len(found) == len(sync_common.COPIES["config_numbers.py"])
    assert all("common/config_numbers.py: differs from its original" in line for line in found)


def test_missing_and_unknown_modules_in_a_plugins_common_fail(tree: Path) -> None:
    pkg = tree / "tap-braze-csv" / "tap_braze_csv" / "common"
    (pkg / "config_numbers.py").unlink()
    (pkg / "local.py").write_text("X = 1\n")
    assert sync_common.problems(tree) == [
        "tap-braze-csv/tap_braze_csv/common/config_numbers.py: missing "
        "(run scripts/sync_common.py)",
        "tap-braze-csv/tap_braze_csv/common/local.py: not generated from common/ "
        "(plugin code belongs outside <package>/common/)",
    ]
