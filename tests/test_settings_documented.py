"""Each plugin's settings are documented and declared, the same way for all four.

- the README's settings table is `<plugin> --about --format=markdown`'s, verbatim;
- every setting key the package's code reads (`config.get("x")`, `cfg["x"]`, or a helper called
  as `f(cfg, "x", ...)`) is declared in `--about` (at the top level or inside an object setting
  such as `sftp` or `rest_export`), so no setting works while missing from the docs and Meltano.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PLUGINS = ["tap-lytics-audience", "tap-braze-csv", "target-braze-audience", "target-lytics-users"]
# Names a config mapping goes by in the packages (`self.config`, `tap.config`, a nested `cfg`).
CONFIG_NAMES = frozenset({"config", "_config", "cfg"})


def _about(plugin: str, fmt: str) -> str:
    return subprocess.run(
        [str(BIN / plugin), "--about", f"--format={fmt}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _is_config(node: ast.expr) -> bool:
    """`config`, `cfg`, `self.config`, `tap.config`, `self._config`..."""
    if isinstance(node, ast.Name):
        return node.id in CONFIG_NAMES
    return isinstance(node, ast.Attribute) and node.attr in CONFIG_NAMES


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def setting_reads(source: str, filename: str = "<source>") -> Iterator[tuple[str, int]]:
    """Yield (key, line) for each literal setting key the source reads from a config mapping."""
    for node in ast.walk(ast.parse(source, filename)):
        key: str | None = None
        if isinstance(node, ast.Subscript) and _is_config(node.value):
            key = _literal(node.slice)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "get" and _is_config(func.value):
                key = _literal(node.args[0])
            elif len(node.args) >= 2 and _is_config(node.args[0]):
                key = _literal(node.args[1])  # a reader helper: _number(cfg, "port", ...)
        if key is not None:
            yield key, node.lineno


def declared_names(schema: dict) -> set[str]:
    """Every property name in a settings JSON schema, at any depth."""
    names: set[str] = set()
    if not isinstance(schema, dict):
        return names
    for name, prop in (schema.get("properties") or {}).items():
        names.add(name)
        names |= declared_names(prop)
    for alternative in [*schema.get("anyOf", []), *schema.get("oneOf", [])]:
        names |= declared_names(alternative)
    return names


def test_setting_reads_finds_every_form() -> None:
    """The scanner itself: each form is found, a non-config mapping and a variable key are not."""
    source = (
        "def f(self, cfg, tap, row, key):\n"
        "    self.config.get('a')\n"
        "    tap.config['b']\n"
        "    cfg.get('c', 1)\n"
        "    _number(cfg, 'd', 22)\n"
        "    self._config['e']\n"
        "    row.get('not_a_setting')\n"
        "    cfg.get(key)\n"
    )
    assert sorted(setting_reads(source)) == [("a", 2), ("b", 3), ("c", 4), ("d", 5), ("e", 6)]


@pytest.mark.parametrize("plugin", PLUGINS)
def test_readme_settings_table_is_the_about_output(plugin: str) -> None:
    """The README's settings table is `<plugin> --about --format=markdown`'s, verbatim."""
    about = _about(plugin, "markdown")
    table = about.split("## Settings\n\n", 1)[1].split("\n\n", 1)[0].strip()
    assert table.startswith("| Setting |")
    assert table.count("\n") >= 10
    readme = (ROOT / plugin / "README.md").read_text()
    assert table in readme, (
        f"{plugin}/README.md: regenerate the settings table from "
        f"`{plugin} --about --format=markdown`"
    )


@pytest.mark.parametrize("plugin", PLUGINS)
def test_every_setting_the_code_reads_is_declared(plugin: str) -> None:
    declared = declared_names(json.loads(_about(plugin, "json"))["settings"])
    package = ROOT / plugin / plugin.replace("-", "_")
    reads: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        for key, line in setting_reads(path.read_text(), str(path)):
            reads.setdefault(key, []).append(f"{path.relative_to(ROOT)}:{line}")
    assert len(reads) >= 5, f"the scanner found too few reads in {package}: {sorted(reads)}"
    undeclared = {key: where for key, where in reads.items() if key not in declared}
    assert not undeclared, f"{plugin} reads settings its --about does not declare: {undeclared}"
