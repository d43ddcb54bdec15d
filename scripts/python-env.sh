#!/usr/bin/env bash
# A virtualenv with grpcio and grpcio-tools from PyPI, for the test that drives the gRPC API from
# Python through stubs generated from proto/, and pylibsrtp (wheels bundle libsrtp) for the SRTP
# interop test's independent peer. Prints the interpreter's path.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="target/python"
if [ ! -x "$venv/bin/python3" ] || ! "$venv/bin/python3" -c "import grpc, grpc_tools, pylibsrtp" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "grpcio==1.85.*" "grpcio-tools==1.85.*" \
    "pylibsrtp==1.0.*" >&2
fi
echo "$PWD/$venv/bin/python3"
