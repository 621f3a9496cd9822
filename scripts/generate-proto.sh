#!/usr/bin/env bash
# Regenerate the gRPC modules in inferline/protocols/_generated/ from proto/.
#
# The output must be byte-for-byte reproducible: `make check` runs this and then
# `git diff --exit-code` on the folder, so a stale or hand-edited file fails CI.
# The pinned grpcio-tools (pyproject dev group) fixes the protoc version.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
OUT=inferline/protocols/_generated

mkdir -p "$OUT"
rm -f "$OUT"/*_pb2.py "$OUT"/*_pb2.pyi "$OUT"/*_pb2_grpc.py

"$PYTHON" -m grpc_tools.protoc \
  -Iproto \
  --python_out="$OUT" \
  --pyi_out="$OUT" \
  --grpc_python_out="$OUT" \
  proto/inference.proto

# Replace $1 by $2 in file $3, failing if $1 is absent (a new protoc changed its output).
rewrite() {
  grep -qF -- "$1" "$3" || { echo "generate-proto: '$1' not found in $3" >&2; exit 1; }
  "$PYTHON" - "$1" "$2" "$3" <<'PY'
import sys
old, new, path = sys.argv[1:]
with open(path) as f:
    text = f.read()
with open(path, "w") as f:
    f.write(text.replace(old, new))
PY
}

# protoc writes `import inference_pb2`, which only works with the folder on
# sys.path; make it an absolute import inside the package.
rewrite "import inference_pb2 as " \
  "from inferline.protocols._generated import inference_pb2 as " \
  "$OUT/inference_pb2_grpc.py"

# The proto package must stay `inference` for the wire (method paths are
# /inference.GRPCInferenceService/...), but tritonclient, KServe and MLServer
# register the same message names in protobuf's process-wide default pool, and
# a second registration fails at import ("duplicate symbol
# 'inference.ServerLiveRequest'", MLServer#1730, KServe#3099). Our descriptors
# therefore live in a private pool, so inferline imports next to any of them.
rewrite "_descriptor_pool.Default().AddSerializedFile(" \
  "POOL.AddSerializedFile(" \
  "$OUT/inference_pb2.py"
rewrite "from google.protobuf.internal import builder as _builder" \
  "from google.protobuf.internal import builder as _builder
from inferline.protocols._generated import POOL" \
  "$OUT/inference_pb2.py"

cat > "$OUT/__init__.py" <<'PY'
"""Modules generated from proto/ by scripts/generate-proto.sh; never edit by hand.

Their descriptors live in ``POOL``, not protobuf's default pool, so they do not
clash with other packages (tritonclient, kserve, mlserver) that register the
same ``inference.*`` message names.
"""

from google.protobuf.descriptor_pool import DescriptorPool

POOL = DescriptorPool()
PY
