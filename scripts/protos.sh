#!/usr/bin/env bash
# Regenerate the Python code of every .proto in the repo (tests and examples)
# with grpcio-tools, the standard generator. The output is committed, so
# nothing needs a network or a generator at test time; `make protos` reruns it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
for proto in tests/grpc/echo.proto examples/shop/protos/users.proto; do
  "$PY" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. "$proto"
done
