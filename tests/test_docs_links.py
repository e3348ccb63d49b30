"""Links between the repository's Markdown documents resolve: the file exists and so does the anchor.

Covers relative links and links to this repository on GitHub (`…/blob/main/<path>#anchor`, which
the plugin READMEs must use to be readable on a package index). Anchors are GitHub's heading slugs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPO_BLOB = "https://github.com/lytics-braze-singer/lytics-braze-singer/blob/main/"
SKIP_DIRS = {".venv", ".meltano", ".interop", "node_modules", ".work", ".git"}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_files() -> list[Path]:
    return sorted(
        p
        for p in ROOT.rglob("*.md")
        if not SKIP_DIRS.intersection(p.relative_to(ROOT).parts)
        and not any(part.startswith(".venv") for part in p.relative_to(ROOT).parts)
    )


def _lines_outside_code(text: str) -> list[str]:
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for line in _lines_outside_code(path.read_text()):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            n = counts.get(base, 0)
            counts[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(path: Path) -> list[str]:
    broken = []
    for line in _lines_outside_code(path.read_text()):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if target.startswith(REPO_BLOB):
                file_part, _, anchor = target[len(REPO_BLOB) :].partition("#")
                dest = ROOT / file_part
            elif re.match(r"^[a-z]+:", target):
                continue  # another site
            else:
                file_part, _, anchor = target.partition("#")
                dest = (path.parent / file_part) if file_part else path
            if not dest.exists():
                broken.append(f"{target}: no file {dest}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{target}: no heading #{anchor} in {dest}")
    return broken


def test_slug_matches_github() -> None:
    assert (
        slug("How a Braze export arrives (three ways)") == "how-a-braze-export-arrives-three-ways"
    )
    assert (
        slug("`array_write_mode: set_when_cheaper` (opt-in)")
        == "array_write_mode-set_when_cheaper-opt-in"
    )
    assert slug("Responses, retries, failures") == "responses-retries-failures"


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "# Title\n\n## Title\n\n```\n# not a heading\n```\n\n"
        "[a](#title) [b](#title-1) [c](#not-a-heading) [d](missing.md) [e](x.md#title) `[f](#g)`\n"
    )
    assert broken_links(doc) == [
        f"#not-a-heading: no heading #not-a-heading in {doc}",
        f"missing.md: no file {tmp_path / 'missing.md'}",
    ]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_links_resolve(path: Path) -> None:
    assert broken_links(path) == []
