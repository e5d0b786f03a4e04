#!/usr/bin/env bash
# The demo command (README, first line): from a fresh clone, set up the same
# virtualenv and ComfyUI as the tests (scripts/lib/env.sh), then start a headless
# ComfyUI with the pack, run the digits demo workflow on the embedded demo model,
# print where the illusion, its view grid and its animation are, and stop the server.
# No GPU and no model download. Extra arguments go to scripts/demo.py
# (--seed N, --output DIR, --serve to keep the server up for the browser).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
source scripts/lib/env.sh

ensure_test_env

exec "$VA_PYTHON" scripts/demo.py "$@"
