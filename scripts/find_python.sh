#!/usr/bin/env bash
# Print the path of a CPython X.Y interpreter (make test-pythons, make dist): one uv already finds,
# else a pyenv build, else one uv downloads (python-build-standalone, needs GitHub access).
set -euo pipefail
version="$1"
uv="${UV:-uv}"
if found=$($uv python find --system --no-project "cpython@$version" 2>/dev/null) && "$found" -c "" 2>/dev/null; then
  echo "$found"; exit 0
fi
for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/python"$version"; do
  if [ -x "$candidate" ]; then echo "$candidate"; exit 0; fi
done
$uv python install "cpython@$version" >&2
$uv python find --system --no-project "cpython@$version"
