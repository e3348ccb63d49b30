"""scripts/check_structure.py (run by `make test`) finds what it is meant to, on a made-up package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "check_structure", ROOT / "scripts" / "check_structure.py"
)
assert _spec
assert _spec.loader
check_structure = importlib.util.module_from_spec(_spec)
sys.modules["check_structure"] = check_structure
_spec.loader.exec_module(check_structure)

BRANCHY = "def branchy(x):\n" + "".join(
    f"    if x == {i}:\n        return {i}\n" for i in range(11)
)
LONG = "def long():\n" + "".join(f"    a{i} = {i}\n" for i in range(60)) + "    return 0\n"
SHORT = "def short(x):\n    return x\n"


def make_package(tmp_path: Path) -> Path:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        f"from pkg.b import short\n\n{BRANCHY}\n\nclass K:\n    {LONG.replace(chr(10), chr(10) + '    ').rstrip()}\n"
    )
    (pkg / "b.py").write_text(f"{SHORT}\n\ndef later():\n    from . import c\n    return c\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from pkg import b\n"
    )
    (pkg / "d.py").write_text("from pkg import a\n")  # imports into the cycle, not part of it
    return pkg


def test_finds_long_and_complex_functions_and_cycles(tmp_path: Path) -> None:
    pkg = make_package(tmp_path)
    failing, stale = check_structure.check([pkg], set())
    keys = {f.key: f.detail for f in failing}
    assert set(keys) == {
        "function pkg/a.py::branchy",
        "function pkg/a.py::K.long",
        "cycle pkg.b pkg.c",  # deferred and TYPE_CHECKING imports count
    }
    assert "complexity 12, grade C" in keys["function pkg/a.py::branchy"]
    assert "62 lines (max 60)" in keys["function pkg/a.py::K.long"]
    assert "grade" not in keys["function pkg/a.py::K.long"]
    assert stale == []


def test_allowlist_silences_listed_debts_and_reports_paid_ones(tmp_path: Path) -> None:
    pkg = make_package(tmp_path)
    allow = tmp_path / "allow.txt"
    allow.write_text(
        "# debts\n"
        "function pkg/a.py::branchy  # grade C; someone\n"
        "cycle pkg.b pkg.c\n"
        "function pkg/b.py::short  # already fine: stale\n"
    )
    failing, stale = check_structure.check([pkg], check_structure.read_allowlist(allow))
    assert [f.key for f in failing] == ["function pkg/a.py::K.long"]
    assert stale == ["function pkg/b.py::short"]
    assert check_structure.main([str(pkg), "--allowlist", str(allow)]) == 1
    allow.write_text(allow.read_text() + "function pkg/a.py::K.long\n")
    assert check_structure.main([str(pkg), "--allowlist", str(allow)]) == 0


def test_the_repository_allowlist_names_only_real_findings() -> None:
    """Every allowlist line parses to a finding key the check can produce (no typo'd entry)."""
    entries = check_structure.read_allowlist(check_structure.ALLOWLIST)
    for entry in entries:
        kind, _, rest = entry.partition(" ")
        assert kind in ("function", "cycle"), entry
        if kind == "function":
            path, _, name = rest.partition("::")
            assert name, entry
            assert any(
                (ROOT / p).parent.joinpath(path).exists() for p in check_structure.PACKAGES
            ), entry
