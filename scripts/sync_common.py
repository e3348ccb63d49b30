"""Copy the canonical shared modules of common/ into the plugins that use them.

    uv run python scripts/sync_common.py           # write the copies
    uv run python scripts/sync_common.py --check   # exit 1 naming each copy that differs

Each plugin installs on its own (`pip install ./tap-braze-csv`, a Meltano `pip_url` per plugin),
so a plugin cannot import another plugin or a repository-level package. A mechanism that is the
same everywhere is therefore written once in common/<module>.py and copied, byte for byte after
a generated header, to <package>/common/<module>.py of every plugin listed in COPIES below
(with a generated <package>/common/__init__.py). Edit the original, then run this script;
tests/test_common_copies.py fails, naming the file, when a copy differs from its original.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ("tap-lytics-audience", "tap-braze-csv", "target-braze-audience", "target-lytics-users")
# common/<module>.py -> the plugins that carry a copy.
TARGETS = ("target-braze-audience", "target-lytics-users")
COPIES: dict[str, tuple[str, ...]] = {
    "batch_files.py": TARGETS,
    "config_numbers.py": PLUGINS,
    "input_lines.py": TARGETS,
    "orjson_reader.py": TARGETS,
    "orjson_writer.py": ("tap-lytics-audience", "tap-braze-csv"),
    "retry_headers.py": PLUGINS,
    # tap-lytics-audience's RESTStream hooks take retries.py only (issue 15); the other clients
    # both.
    "retries.py": PLUGINS,
    "retrying.py": ("tap-braze-csv", *TARGETS),
    "secrets.py": PLUGINS,
}
HEADER = "# generated from common/{module} by scripts/sync_common.py: edit the original\n"
INIT = (
    '"""Shared modules, generated from common/ by scripts/sync_common.py: edit the originals."""\n'
)


def package_dir(root: Path, plugin: str) -> Path:
    """`<root>/tap-braze-csv/tap_braze_csv/common`."""
    return root / plugin / plugin.replace("-", "_") / "common"


def expected(root: Path = ROOT) -> dict[Path, str]:
    """Every generated file and the text it must hold."""
    out: dict[Path, str] = {}
    for module, plugins in COPIES.items():
        text = HEADER.format(module=module) + (root / "common" / module).read_text()
        for plugin in plugins:
            target = package_dir(root, plugin)
            out[target / "__init__.py"] = INIT
            out[target / module] = text
    return out


def problems(root: Path = ROOT) -> list[str]:
    """What differs between the copies and their originals (empty when in sync)."""
    want = expected(root)
    found: list[str] = []
    for path, text in sorted(want.items()):
        name = path.relative_to(root)
        if not path.exists():
            found.append(f"{name}: missing (run scripts/sync_common.py)")
        elif path.read_text() != text:
            found.append(
                f"{name}: differs from its original (edit common/{path.name}, "
                "then run scripts/sync_common.py)"
            )
    for plugin in PLUGINS:
        for path in sorted(package_dir(root, plugin).glob("*.py")):
            if path not in want:
                found.append(
                    f"{path.relative_to(root)}: not generated from common/ "
                    "(plugin code belongs outside <package>/common/)"
                )
    return found


def write(root: Path = ROOT) -> list[Path]:
    """Write every copy that differs; return the paths written."""
    written = []
    for path, text in sorted(expected(root).items()):
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report copies that differ")
    args = parser.parse_args()
    if args.check:
        found = problems()
        for line in found:
            print(line, file=sys.stderr)
        return 1 if found else 0
    for path in write():
        print(f"wrote {path.relative_to(ROOT)}")
    stale = [p for p in problems() if "not generated" in p]
    for line in stale:
        print(line, file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
