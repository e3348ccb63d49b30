"""Publishable packages: metadata, licence, index-ready READMEs, Hub-style plugin definitions, and a
separate Meltano project that adds the plugins from those definitions (no copy of meltano.yml)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from e2e_helpers import BIN, ROOT, Meltano
from packaging.specifiers import SpecifierSet
from tap_braze_csv.sample import generate_export

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

REPO = "https://github.com/lytics-braze-singer/lytics-braze-singer"
RAW = "https://raw.githubusercontent.com/lytics-braze-singer/lytics-braze-singer/main"
PACKAGES = [
    "sandbox",
    "tap-lytics-audience",
    "tap-braze-csv",
    "target-braze-audience",
    "target-lytics-users",
]
PLUGINS = {
    "tap-lytics-audience": "extractor",
    "tap-braze-csv": "extractor",
    "target-braze-audience": "loader",
    "target-lytics-users": "loader",
}
# A link or image target that is not absolute (http(s), mailto) nor an anchor in the same page.
RELATIVE_LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)]*)\)")


def definition_file(name: str) -> Path:
    return ROOT / "hub" / f"{PLUGINS[name]}s" / name / "lytics-braze-singer.yml"


def pyproject(directory: str) -> dict:
    return tomllib.loads((ROOT / directory / "pyproject.toml").read_text())


def test_hub_definitions_in_sync_with_plugin_about() -> None:
    """hub/ is generated from each plugin's --about: it cannot drift from the code."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sync_hub_definitions.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("directory", PACKAGES)
def test_package_metadata_complete(directory: str) -> None:
    project = pyproject(directory)["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / directory / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    assert project["authors"]
    assert project["description"]
    assert project["keywords"]
    assert set(project["urls"]) >= {
        "Homepage",
        "Documentation",
        "Repository",
        "Issues",
        "Changelog",
    }
    assert all(url.startswith(REPO) for url in project["urls"].values())
    # The Python classifiers are exactly the minor versions requires-python admits (and the
    # versions the suite runs on are its lowest and highest: see the Makefile's test-pythons).
    spec = SpecifierSet(project["requires-python"])
    admitted = [f"3.{minor}" for minor in range(6, 30) if f"3.{minor}" in spec]
    prefix = "Programming Language :: Python :: "
    declared = [
        c.removeprefix(prefix)
        for c in project["classifiers"]
        if re.fullmatch(rf"{prefix}3\.\d+", c)
    ]
    assert declared == admitted, (declared, admitted)
    makefile = (ROOT / "Makefile").read_text()
    assert f"PY_LOWEST := {admitted[0]}" in makefile
    assert f"PY_HIGHEST := {admitted[-1]}" in makefile


@pytest.mark.parametrize("directory", PACKAGES)
def test_readme_reads_well_on_a_package_index(directory: str) -> None:
    """No links a package index cannot follow, no install commands that need this checkout."""
    readme = (ROOT / directory / "README.md").read_text()
    assert not RELATIVE_LINK.findall(readme), RELATIVE_LINK.findall(readme)
    assert "pip install ./" not in readme
    assert "../" not in readme
    name = pyproject(directory)["project"]["name"]
    assert (
        f"{name} @ git+{REPO}.git#subdirectory={directory}" in readme
    )  # installable from anywhere
    if directory in PLUGINS:
        ref = f"{RAW}/{definition_file(directory).relative_to(ROOT)}"
        assert f"--from-ref {ref}" in readme


def test_changelog_covers_every_package_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    for directory in PACKAGES:
        project = pyproject(directory)["project"]
        assert f"{project['name']} {project['version']}" in changelog, project["name"]


def test_every_definition_installs_from_the_repository() -> None:
    for name in PLUGINS:
        definition = yaml.safe_load(definition_file(name).read_text())
        pip_url = definition["pip_url"]
        assert re.fullmatch(
            rf"{name}(\[(postgres|s3)\])?@git\+{re.escape(REPO)}\.git#subdirectory={name}",
            pip_url,
        ), pip_url
        assert definition["repo"] == REPO
        assert definition["variant"] == "lytics-braze-singer"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workspace's wheels, built as `make dist` builds them."""
    out = tmp_path_factory.mktemp("wheels")
    uv = shutil.which("uv") or str(BIN / "uv")
    subprocess.run(
        [uv, "build", "--all-packages", "--wheel", "--out-dir", str(out), "--quiet"],
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    return out


def test_separate_meltano_project_adds_plugins_from_hub_definitions(
    wheels: Path, tmp_path: Path, lytics_sandbox, braze_sandbox
) -> None:
    """A new Meltano project (not this repository) adds all four plugins with `meltano add
    --from-ref <definition>`, installs them from local wheels and runs both directions."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "meltano.yml").write_text(
        yaml.safe_dump(
            {
                "default_environment": "sandbox",
                "send_anonymous_usage_stats": False,
                "project_id": "3b0d7c52-6a8e-4d2b-9f27-5c1e0f6a9d10",
                "venv": {"backend": "uv"},
                "environments": [{"name": "sandbox"}],
            }
        )
    )
    meltano = Meltano(tmp_path, project=project)
    for name, plugin_type in PLUGINS.items():
        definition = yaml.safe_load(definition_file(name).read_text())
        # Same definition, installed from the wheel built above instead of GitHub (no internet).
        extra = re.match(rf"{name}(\[\w+\])?@", definition["pip_url"])
        assert extra is not None
        (wheel,) = wheels.glob(f"{name.replace('-', '_')}-*.whl")
        local = tmp_path / f"{name}.yml"
        local.write_text(
            yaml.safe_dump({**definition, "pip_url": f"{wheel}{extra.group(1) or ''}"})
        )
        proc = meltano.run(
            "add", "--plugin-type", plugin_type, name, "--from-ref", str(local), "--no-install"
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    proc = meltano.run("install")  # all four at once, from the local wheels
    assert proc.returncode == 0, proc.stderr[-3000:]

    added = yaml.safe_load((project / "meltano.yml").read_text())["plugins"]
    for name, plugin_type in PLUGINS.items():
        definition = yaml.safe_load(definition_file(name).read_text())
        (entry,) = [p for p in added[f"{plugin_type}s"] if p["name"] == name]
        for key in ("variant", "namespace", "executable", "capabilities", "settings"):
            assert entry[key] == definition[key], (name, key)
    assert set(added) == {"extractors", "loaders"}  # nothing else (e.g. no stray utility)
    venv = project / ".meltano" / "loaders" / "target-braze-audience" / "venv"
    assert list(venv.glob("lib/*/site-packages/psycopg")), "the definition installs [postgres]"

    lytics_sandbox.add_audience(
        "high_value",
        name="High value",
        members=[{"_uid": f"lu{i}", "braze_id": f"u{i}"} for i in range(3)],
    )
    meltano.set(
        TAP_LYTICS_AUDIENCE_API_URL=lytics_sandbox.url,
        TAP_LYTICS_AUDIENCE_API_TOKEN=lytics_sandbox.api_token,
        TAP_LYTICS_AUDIENCE_AUDIENCES=["high_value"],
        TARGET_BRAZE_AUDIENCE_REST_ENDPOINT=braze_sandbox.url,
        TARGET_BRAZE_AUDIENCE_API_KEY=braze_sandbox.api_key,
        TARGET_BRAZE_AUDIENCE_STORE_URL=str(tmp_path / "store.sqlite"),
    )
    proc = meltano.run("run", "tap-lytics-audience", "target-braze-audience", timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert {u: a.get("lytics_segments") for u, a in braze_sandbox.users().items()} == {
        f"u{i}": ["high_value"] for i in range(3)
    }
    # Meltano saved the run's state in the new project's system database.
    assert meltano.state("sandbox:tap-lytics-audience-to-target-braze-audience")

    export = generate_export(tmp_path / "segment-2026-11-30.zip", 12)
    meltano.set(
        TAP_BRAZE_CSV_PATHS=[str(export)],
        TARGET_LYTICS_USERS_API_URL=lytics_sandbox.url,
        TARGET_LYTICS_USERS_API_TOKEN=lytics_sandbox.api_token,
    )
    proc = meltano.run("run", "tap-braze-csv", "target-lytics-users", timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(lytics_sandbox.collected("braze_users")) == 12
