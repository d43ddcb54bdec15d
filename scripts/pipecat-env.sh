#!/usr/bin/env bash
# A virtualenv with pipecat-ai (its websocket extra: FastAPI, websockets) and uvicorn from PyPI,
# for the e2e test that runs a Pipecat bot behind Twilio's Media Streams protocol against
# Dialtone (examples/media-streams/pipecat_bot.py). Kept apart from scripts/python-env.sh: it is
# large (numpy, onnxruntime). Prints the interpreter's path.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="target/pipecat"
if [ ! -x "$venv/bin/python3" ] || ! "$venv/bin/python3" -c "import pipecat, uvicorn, fastapi" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "pipecat-ai[websocket]==1.14.0" \
    "uvicorn==0.55.*" >&2
fi
echo "$PWD/$venv/bin/python3"
