#!/usr/bin/env bash
# Create .venv and install inferline with every extra and the dev tools.
# On a fresh Debian machine this also installs the system packages it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

need_apt=()
"$PY" -c "import venv, ensurepip" 2>/dev/null || need_apt+=("python3-venv" "python3.11-venv")
command -v gcc >/dev/null || need_apt+=("build-essential" "python3-dev")
# h2load: the gRPC load generator of benchmarks/ and tests/transport/test_grpc_h2_h2load.py.
command -v h2load >/dev/null || need_apt+=("nghttp2-client")
# wrk: the HTTP load generator of `make bench`.
command -v wrk >/dev/null || need_apt+=("wrk")
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" || true
  else
    echo "bootstrap: please install ${need_apt[*]} (apt-get)" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Every version comes from constraints.txt (scripts/lock.sh refreshes it), so a fresh
# machine tests what CI tested, not whatever was released since.
.venv/bin/python -m pip install -q -c constraints.txt pip
.venv/bin/pip install -q -c constraints.txt -e '.[all,dev]'
# The CPU build: on machines that carry the wheel locally pip takes it from there.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q -c constraints.txt 'torch==2.13.0' \
    || echo "bootstrap: torch not installed; torch tests will skip" >&2
fi
touch .venv/.installed
