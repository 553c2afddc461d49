#!/usr/bin/env bash
# Set up cxrbench on a fresh machine: a virtual environment, torch, the project (editable, with dev
# extras), then `cxrbench doctor`. Idempotent: a second run only checks and finishes in seconds.
#
# Usage: scripts/setup.sh [--venv DIR] [--python PYTHON] [--torch "SPECS"] [--torch-index-url URL] [--force]
#        scripts/setup.sh --offline WHEELHOUSE --python NODE_PYTHON [--venv DIR] [--force]
#   --venv DIR             where the virtual environment goes (default: .venv in the repository; env CXRBENCH_VENV)
#   --python PYTHON        interpreter that creates it (default: python3; env PYTHON)
#   --torch "SPECS"        pip requirement(s) for torch (default: "torch==2.14.1 torchvision==0.29.1";
#                          env CXRBENCH_TORCH). Example: --torch "torch==2.5.1 torchvision==0.20.1"
#   --torch-index-url URL  index for a specific CUDA/CPU build (env CXRBENCH_TORCH_INDEX_URL), e.g.
#                          https://download.pytorch.org/whl/cu124 or https://download.pytorch.org/whl/cpu
#   --force                reinstall the project even if nothing changed
#   --offline WHEELHOUSE   no network: a venv with --system-site-packages over PYTHON (the node's python with
#                          its own torch; --torch is ignored), cxrbench and the missing dependencies from
#                          the folder scripts/wheelhouse.sh built (without dev extras)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CXRBENCH_VENV:-$repo/.venv}"
python="${PYTHON:-python3}"
torch_specs="${CXRBENCH_TORCH:-torch==2.14.1 torchvision==0.29.1}"
torch_index="${CXRBENCH_TORCH_INDEX_URL:-}"
force=0
offline=""
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --torch) torch_specs="$2"; shift 2 ;;
    --torch-index-url) torch_index="$2"; shift 2 ;;
    --force) force=1; shift ;;
    --offline) offline="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$venv" in /*) ;; *) venv="$repo/$venv" ;; esac
if [ -n "$offline" ]; then
  case "$offline" in /*) ;; *) offline="$PWD/$offline" ;; esac
  ls "$offline"/cxrbench-*.whl >/dev/null 2>&1 || {
    echo "setup.sh: --offline $offline holds no cxrbench wheel: build it with scripts/wheelhouse.sh" >&2; exit 2; }
  export PIP_NO_INDEX=1 PIP_FIND_LINKS="$offline"  # every pip call below: the wheelhouse, no network
fi

step() { printf '\n==> %s\n' "$*"; }

step "[1/4] virtual environment: $venv"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import sys" 2>/dev/null; then
  echo "exists ($("$venv/bin/python" --version))"
else
  command -v "$python" >/dev/null || { echo "setup.sh: $python not found; pass --python" >&2; exit 1; }
  if [ -n "$offline" ]; then
    "$python" -m venv --system-site-packages "$venv"  # the node's torch (and whatever else it has)
  else
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
  fi
  echo "created with $("$venv/bin/python" --version)"
fi
pip=("$venv/bin/python" -m pip)

if [ -n "$offline" ]; then
  step "[2/4] torch: the node's own"
  "$venv/bin/python" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__, "CUDA", torch.cuda.is_available())' || {
    echo "setup.sh: $python has no torch / torchvision for the venv to inherit (--system-site-packages)" >&2; exit 1; }
  torch_specs="offline:$("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
else
step "[2/4] torch: $torch_specs${torch_index:+ from $torch_index}"
# shellcheck disable=SC2206
specs=($torch_specs)
if "$venv/bin/python" - "${specs[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
from packaging.requirements import Requirement
for spec in sys.argv[1:]:
    req = Requirement(spec)
    if not req.specifier.contains(version(req.name).split("+")[0], prereleases=True):
        sys.exit(1)
PY
then
  echo "already installed: $("$venv/bin/python" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)')"
else
  if [ -n "$torch_index" ]; then
    "${pip[@]}" install "${specs[@]}" --index-url "$torch_index"
  else
    "${pip[@]}" install "${specs[@]}"
  fi
fi
fi

extras="[dev]"
[ -z "$offline" ] || extras=""  # pytest / ruff / selenium are not in the wheelhouse
step "[3/4] cxrbench (editable${extras:+, with dev extras}${offline:+, from $offline})"
stamp="$venv/.cxrbench-setup"
want="$(cat "$repo/pyproject.toml" | sha256sum | cut -c1-16) $torch_specs"
if [ "$force" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "import benchmark, tasks, pretrain" 2>/dev/null; then
  echo "up to date (pyproject.toml unchanged since the last set-up)"
else
  "${pip[@]}" install --quiet -e "$repo$extras"
  echo "$want" > "$stamp"
  echo "installed"
fi

step "[4/4] cxrbench doctor"
"$venv/bin/cxrbench" doctor
echo
echo "Set-up complete. Activate with: source ${venv#$repo/}/bin/activate"
