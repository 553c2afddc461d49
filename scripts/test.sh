#!/usr/bin/env bash
# Run the test suite with the environment that scripts/setup.sh made. Extra arguments go to pytest,
# e.g. `scripts/test.sh -m "not slow"` or `scripts/test.sh tests/backbones/test_specs_and_weights.py -x`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CXRBENCH_VENV:-$repo/.venv}"
case "$venv" in /*) ;; *) venv="$repo/$venv" ;; esac
[ -x "$venv/bin/python" ] || { echo "no environment at $venv: run scripts/setup.sh first" >&2; exit 1; }
cd "$repo"
export CXRBENCH_OFFLINE="${CXRBENCH_OFFLINE:-1}"  # tests never download weights
exec "$venv/bin/python" -m pytest "$@"
