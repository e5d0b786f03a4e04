#!/usr/bin/env bash
# The test command (README "Run the tests"): from a fresh clone, make a virtualenv,
# install everything the tests need, build the tiny offline models (the tests do
# that themselves) and run the whole suite. Extra arguments go to pytest.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -k views -x     # a subset
#
# ruff (lint and format check) runs first, over the whole repository, whatever the arguments.
#
# VA_VENV overrides where the virtualenv lives (default: .venv in the repo).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
source scripts/lib/env.sh

ensure_test_env
ensure_browser

# The lint gate (pyproject.toml [tool.ruff]): a lint error or an unformatted file fails the run.
echo "== ruff check and ruff format --check"
"$VA_VENV/bin/ruff" check .
"$VA_VENV/bin/ruff" format --check .

export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
# pyproject.toml points pytest at tests/ when no path is given.
exec "$VA_PYTHON" -m pytest "$@"
