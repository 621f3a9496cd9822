#!/usr/bin/env bash
# Refresh constraints.txt: resolve inferline with every extra and the dev tools in a
# throwaway venv, with no constraints, and pin what pip chose. `make test`, `make demo`
# and CI install from the file (scripts/bootstrap.sh); pyproject.toml keeps the lower
# bounds users get. Run by `make lock`, and weekly by .github/workflows/refresh-lock.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --upgrade pip
"$tmp/venv/bin/pip" install -q '.[all,dev]'
# The CPU build of torch (the wheel this machine kind carries; see scripts/bootstrap.sh).
"$tmp/venv/bin/pip" install -q 'torch==2.13.0'
{
  echo "# The versions make test, make demo and CI install: scripts/lock.sh writes this file."
  echo "# Python $("$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())'), refreshed $(date -u +%Y-%m-%d)."
  "$tmp/venv/bin/pip" freeze --exclude-editable --all | grep -v -i '^inferline[= @]' | sort -f
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "lock: constraints.txt pins $(grep -vc '^#' constraints.txt) packages"
