"""Structure checks of the plugin packages, run by `make test` (`make structure`).

1. Complexity: no function or method over MAX_LINES lines, none of radon cyclomatic-complexity
   grade C or worse (complexity > 10).
2. Import cycles: no cycle among a package's modules. Every import counts, also one inside a
   function or under `if TYPE_CHECKING:`: deferring an import hides a cycle from the
   interpreter, not from the reader (two modules that need each other are one concern).

scripts/structure_allowlist.txt names the known debts (functions not yet split, cycles not yet
broken), one per line; each is a debt to pay, the list only shrinks. A violation not listed fails
the check; a listed entry that no longer violates is reported so it can be removed.

    python scripts/check_structure.py [--allowlist FILE] [PACKAGE_DIR ...]
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from radon.complexity import cc_rank, cc_visit
from radon.visitors import Function

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = [
    "tap-lytics-audience/tap_lytics_audience",
    "tap-braze-csv/tap_braze_csv",
    "target-braze-audience/target_braze_audience",
    "target-lytics-users/target_lytics_users",
]
ALLOWLIST = ROOT / "scripts" / "structure_allowlist.txt"
MAX_LINES = 60
WORST_GRADE = "B"  # grade C (complexity 11-20) or worse fails


@dataclass(frozen=True)
class Finding:
    """One violation; `key` is how the allowlist names it."""

    key: str
    detail: str


def _functions(source: str) -> Iterator[Function]:
    """Every function and method radon sees, nested ones included, each once."""
    pending = list(cc_visit(source))  # radon lists methods both alone and in their class
    seen: set[tuple[str | None, str, int]] = set()
    while pending:
        block = pending.pop()
        if isinstance(block, Function):
            if (block.classname, block.name, block.lineno) not in seen:
                seen.add((block.classname, block.name, block.lineno))
                yield block
            pending.extend(block.closures)
        else:  # a class: its methods and nested classes
            pending.extend(block.methods)
            pending.extend(getattr(block, "inner_classes", []))


def complexity_findings(package: Path) -> Iterator[Finding]:
    """Functions of `package` over MAX_LINES lines or graded worse than WORST_GRADE."""
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).as_posix()
        for fn in _functions(path.read_text()):
            name = f"{fn.classname}.{fn.name}" if fn.classname else fn.name
            lines = fn.endline - fn.lineno + 1
            grade = cc_rank(fn.complexity)
            problems = []
            if lines > MAX_LINES:
                problems.append(f"{lines} lines (max {MAX_LINES})")
            if grade > WORST_GRADE:
                problems.append(f"complexity {fn.complexity}, grade {grade}")
            if problems:
                yield Finding(
                    f"function {rel}::{name}", f"line {fn.lineno}: " + ", ".join(problems)
                )


def _module_name(path: Path, package: Path) -> str:
    parts = [package.name, *path.relative_to(package).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in it)."""
    modules = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_pkg else 0)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def cycle_findings(package: Path) -> Iterator[Finding]:
    for component in cycles(import_graph(package)):
        yield Finding("cycle " + " ".join(component), "these modules import each other")


def read_allowlist(path: Path) -> set[str]:
    if not path.exists():
        return set()
    entries = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.add(line)
    return entries


def check(packages: Iterable[Path], allowlist: set[str]) -> tuple[list[Finding], list[str]]:
    """(violations not allowlisted, allowlist entries that no longer violate)."""
    findings = [
        finding
        for package in packages
        for finding in [*complexity_findings(package), *cycle_findings(package)]
    ]
    failing = [f for f in findings if f.key not in allowlist]
    stale = sorted(allowlist - {f.key for f in findings})
    return failing, stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", type=Path, help="package directories")
    parser.add_argument("--allowlist", type=Path, default=ALLOWLIST)
    args = parser.parse_args(argv)
    packages = args.packages or [ROOT / p for p in PACKAGES]
    failing, stale = check(packages, read_allowlist(args.allowlist))
    for finding in failing:
        print(f"{finding.key}: {finding.detail}")
    for entry in stale:
        print(f"{args.allowlist}: no longer needed, remove: {entry}")
    if failing:
        print(
            f"{len(failing)} structure problem(s): split the function (max {MAX_LINES} lines, "
            f"radon grade {WORST_GRADE} or better) or break the import cycle"
        )
        return 1
    print(
        f"structure ok: {len(packages)} package(s), {len(read_allowlist(args.allowlist))} allowlisted"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
