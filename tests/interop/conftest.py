"""Fixtures of the interoperability matrix: a Meltano project holding our plugins and PyPI peers.

The project is generated into ``.interop/`` (git-ignored) from the root meltano.yml (our four
plugins, editable) and ``peers.yml`` (PyPI plugins pinned by hash). ``meltano install`` there
skips every plugin whose venv already matches its pip_url, so only the first session installs
anything; later ones run offline.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from e2e_helpers import ROOT, Meltano, meltano_install

HERE = Path(__file__).resolve().parent
PROJECT = Path(os.environ.get("INTEROP_PROJECT_DIR", ROOT / ".interop"))
PROJECT_ID = "1b7c1e33-7d2a-4cf4-9d7c-0a6e5f6c1d11"


def project_definition() -> dict:
    """meltano.yml of the interop project (our plugins from the root project, plus the peers)."""
    root = yaml.safe_load((ROOT / "meltano.yml").read_text())
    peers_text = (
        (HERE / "peers.yml").read_text().replace("{requirements}", str(HERE / "requirements"))
    )
    peers = yaml.safe_load(peers_text)
    plugins: dict[str, list[dict]] = {}
    for kind in ("extractors", "loaders"):
        ours = []
        for plugin in root["plugins"][kind]:
            if "pip_url" not in plugin:
                continue  # an inherited variant (tap-braze-rest-export): not needed here
            plugin = dict(plugin)
            folder = plugin["pip_url"].split()[-1]  # "-e ./tap-braze-csv"
            plugin["pip_url"] = f"-e {(ROOT / folder).resolve()}"
            ours.append(plugin)
        plugins[kind] = ours + peers.get(kind, [])
    return {
        "requires_meltano": ">=3.4",
        "project_id": PROJECT_ID,
        "send_anonymous_usage_stats": False,
        "default_environment": "interop",
        "venv": {"backend": "uv"},
        "plugins": plugins,
        "environments": [{"name": "interop"}],
    }


@pytest.fixture(scope="session")
def interop_project() -> Path:
    """The generated project, installed (first session: a few minutes; later: seconds)."""
    PROJECT.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(project_definition(), sort_keys=False)
    target = PROJECT / "meltano.yml"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    started = time.monotonic()
    meltano_install(PROJECT, timeout=1200)
    print(f"interop project installed in {time.monotonic() - started:.1f}s")
    return PROJECT


@pytest.fixture
def interop(interop_project: Path, tmp_path: Path) -> Meltano:
    """A meltano runner in the interop project with its own system database (state store)."""
    return Meltano(tmp_path, project=interop_project, environment="interop")
