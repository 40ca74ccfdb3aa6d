#!/usr/bin/env bash
# The one test command: sets up .venv on a fresh machine, then lint, types and the whole suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k build -x).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-env.sh

echo "== ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy" >&2
.venv/bin/mypy
echo "== pytest" >&2
.venv/bin/pytest "$@"
