"""Run every benchmark side by side and write the results table into benchmarks/README.md.

    python benchmarks/run.py [--scale 1.0] [--only NAME ...]

Each `bench_*.py` module exposes `run(work: Path, scale: float) -> list[dict]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import sys
import traceback
from pathlib import Path

from measure import compile_bytecode

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
README = HERE / "README.md"
RESULTS = (
    HERE / "results.json"
)  # rows per benchmark module; `--only` replaces just those modules' rows
START, END = "<!-- results:start -->", "<!-- results:end -->"
COLUMNS = [
    "benchmark",
    "command",
    "rows",
    "seconds",
    "rows_per_s",
    "ratio_to_baseline",
    "peak_rss_mb",
    "notes",
]


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    spec.loader.exec_module(module)
    return module


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value).replace("|", "\\|")


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="shrink (<1) or grow the inputs")
    parser.add_argument(
        "--only", nargs="*", default=None, help="module names to run (e.g. bench_e2e)"
    )
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    by_module: dict[str, dict] = {}
    failed = []
    for path in sorted(HERE.glob("bench_*.py")):
        if args.only and path.stem not in args.only:
            continue
        try:
            module = load(path)
        except Exception:
            traceback.print_exc()
            failed.append(path.stem)
            continue
        if not hasattr(module, "run"):  # a long benchmark run on its own (bench_scale.py)
            continue
        print(f"== {path.stem}", flush=True)
        compile_bytecode(WORK / "venvs")  # quick when nothing changed (mtime checks)
        try:
            result = module.run(WORK / path.stem, scale=args.scale)
        except Exception:
            traceback.print_exc()
            failed.append(path.stem)
            continue
        for row in result:
            row.setdefault("benchmark", path.stem)
            print("   " + ", ".join(f"{k}={fmt(v)}" for k, v in row.items()), flush=True)
        when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        by_module[path.stem] = {"when": when, "scale": args.scale, "rows": result}
    merged = {**previous, **by_module}
    RESULTS.write_text(json.dumps(merged, indent=1, default=str) + "\n")
    rows = [row for name in sorted(merged) for row in merged[name]["rows"]]
    runs = "; ".join(
        f"{name}: {m['when']}, scale {m['scale']}" for name, m in sorted(merged.items())
    )
    header = (
        f"{platform.machine()} with {os.cpu_count()} cores, Python {platform.python_version()}. "
        f"Runs: {runs}. Ratios compare rows of the same benchmark, measured in the same run.\n\n"
    )
    block = f"{START}\n{header}{table(rows)}\n{END}"
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text += "\n" + block + "\n"
    README.write_text(text)
    print(table(rows))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
