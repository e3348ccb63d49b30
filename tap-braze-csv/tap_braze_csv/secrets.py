"""Secret settings as they come from files: surrounding whitespace removed, never echoed.

Every plugin installs on its own, so each carries this small module (same code).
"""

from __future__ import annotations

import typing as t


def strip_secrets(config: dict[str, t.Any], schema: dict[str, t.Any]) -> dict[str, t.Any]:
    """Return a copy of `config` whose secret strings (per the schema) are stripped.

    A secret mounted from a file (Kubernetes, Docker, Vault agent) usually ends with a
    newline, which would otherwise reach HTTP headers and their error messages.
    """
    out = dict(config)
    for name, prop in (schema.get("properties") or {}).items():
        value = out.get(name)
        if isinstance(value, str) and prop.get("secret"):
            out[name] = value.strip()
        elif isinstance(value, dict) and prop.get("properties"):
            out[name] = strip_secrets(value, prop)
    return out
