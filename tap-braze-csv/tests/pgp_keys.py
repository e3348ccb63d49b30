"""Real PGP keys and encrypted files for tests, made with the `gpg` binary.

Reusable from any tests directory (import by path, like sftp_server.py)::

    key = pgp_keys.make_gpg_key(tmp_path)          # GpgKey(armored_private_key, passphrase, recipient)
    pgp_keys.encrypt_file(src, dst, armored=True)  # to the last key made (or recipient=key.recipient)
    ...
    pgp_keys.cleanup()                              # stop gpg-agents, remove the keyrings

Each key lives in its own short-named temporary GNUPGHOME (gpg's agent socket path must stay
under ~100 characters, which pytest's tmp paths can exceed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

_HOMES: dict[str, Path] = {}  # recipient fingerprint -> GNUPGHOME holding its keys
_LAST: list[str] = []


class GpgKey(NamedTuple):
    armored_private_key: str
    passphrase: str
    recipient: str  # fingerprint


def _gpg(home: Path, *args: str, input_: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    gpg = shutil.which("gpg")
    if gpg is None:
        raise RuntimeError("the gpg program (GnuPG) is required: apt-get install gnupg")
    return subprocess.run(
        [gpg, "--homedir", str(home), "--batch", "--no-tty", "--quiet", *args],
        input=input_,
        capture_output=True,
        check=True,
        timeout=120,
    )


def make_gpg_key(
    tmp: Path | None = None,
    passphrase: str | None = "correct horse battery staple 42",  # noqa: S107
    name: str = "Braze Export Test <exports@example.com>",
) -> GpgKey:
    """Generate an Ed25519/Cv25519 key pair; returns (armoured private key, passphrase, fingerprint).

    `passphrase=None` makes an unprotected key (GpgKey.passphrase is then "").
    """
    base = Path(tmp) if tmp is not None and len(str(tmp)) < 60 else None
    home = Path(tempfile.mkdtemp(prefix="bcsvgpg-", dir=base))
    os.chmod(home, 0o700)
    (home / "gpg-agent.conf").write_text("s2k-count 65536\n")  # fast (test) key protection
    pw_args = ["--pinentry-mode", "loopback", "--passphrase", passphrase or ""]
    _gpg(home, *pw_args, "--quick-gen-key", name, "future-default", "default", "never")
    listing = _gpg(home, "--with-colons", "--list-secret-keys").stdout.decode()
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
    )
    armored = _gpg(home, *pw_args, "--armor", "--export-secret-keys", fingerprint).stdout.decode()
    _HOMES[fingerprint] = home
    _LAST.append(fingerprint)
    return GpgKey(armored, passphrase or "", fingerprint)


def encrypt_file(src: Path, dst: Path, armored: bool, recipient: str | None = None) -> Path:
    """Encrypt `src` to `dst` for `recipient` (default: the last key made), armoured or binary."""
    fingerprint = recipient or _LAST[-1]
    home = _HOMES[fingerprint]
    args = ["--trust-model", "always", "--recipient", fingerprint, "--yes", "--output", str(dst)]
    if armored:
        args.append("--armor")
    _gpg(home, *args, "--encrypt", str(src))
    return Path(dst)


def cleanup() -> None:
    """Stop the gpg-agents started for the keys made here and remove their keyrings."""
    gpgconf = shutil.which("gpgconf")
    for fingerprint, home in list(_HOMES.items()):
        if gpgconf:
            subprocess.run(
                [gpgconf, "--homedir", str(home), "--kill", "gpg-agent"],
                capture_output=True,
                check=False,
                timeout=30,
            )
        shutil.rmtree(home, ignore_errors=True)
        del _HOMES[fingerprint]
    _LAST.clear()
