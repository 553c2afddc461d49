#!/usr/bin/env bash
# Build a wheelhouse for an offline GPU node: cxrbench's wheel and the wheels of its dependencies, except
# torch / torchvision / triton / nvidia-* / cuda-* (the node's own torch build is used), for the node's
# Python version and platform. Run it on a machine with access to PyPI, copy the folder to the node, then
# install there without any network (see docs/scale.md, "Offline GPU nodes"):
#   scripts/setup.sh --offline WHEELHOUSE --python /path/to/the/nodes/python3
#
# Usage: scripts/wheelhouse.sh [--out DIR] [--python-version X.Y] [--platform TAG]... [--have FILE] [--python PY]
#                              [--real-opencv] [--resolve-only]
#   --out DIR              the wheelhouse (default: wheelhouse in the repository); emptied first
#   --python-version X.Y   the node's Python (default: that of --python)
#   --platform TAG         a wheel platform tag the node accepts, repeatable (default: this machine's;
#                          given --python-version and no --platform: the manylinux x86_64 tags)
#   --have FILE            `python3 -m pip list --format=freeze` run on the node: packages it already has
#                          are left out, and the versions it has are kept (the node's torch, numpy, ...);
#                          a line with a bare name leaves that package out without pinning its version
#   --python PY            the interpreter whose pip downloads (default: $CXRBENCH_VENV/bin/python, else python3);
#                          pip >= 23.0. uv resolves (seconds, deterministic, for any Python / platform): the
#                          uv next to PY or on PATH, else one installed from PyPI into a temporary venv
#   --real-opencv          fetch opencv-python (71 MiB) instead of satisfying it with an empty wheel that
#                          requires opencv-python-headless (the same cv2 without GUI libraries)
#   --resolve-only         resolve only: write DIR/requirements.txt (the wheels it would fetch) and
#                          DIR/left-out.txt (resolved, but the node's or replaced); nothing built or fetched
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$repo/wheelhouse"
pyver=""
platforms=()
have=""
real_opencv=0
resolve_only=0
python="${CXRBENCH_VENV:+$CXRBENCH_VENV/bin/python}"
python="${python:-python3}"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --python-version) pyver="$2"; shift 2 ;;
    --platform) platforms+=("$2"); shift 2 ;;
    --have) have="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --real-opencv) real_opencv=1; shift ;;
    --resolve-only) resolve_only=1; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "wheelhouse.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
[ -z "$have" ] || [ -f "$have" ] || { echo "wheelhouse.sh: --have $have: no such file" >&2; exit 2; }

[ -n "$pyver" ] || pyver_given=0
pyver="${pyver:-$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}"
# uv resolves for one target platform: the first --platform (a wheel tag, as pip takes it) in uv's words;
# the node's Python without --platform: x86_64 manylinux 2.28 (glibc >= 2.28).
uv_platform=""
if [ ${#platforms[@]} -gt 0 ]; then
  case "${platforms[0]}" in
    manylinux_2_*_*) p="${platforms[0]#manylinux_}"; uv_platform="${p#*_*_}-manylinux_${p%_"${p#*_*_}"}" ;;
    manylinux2014_*) uv_platform="${platforms[0]#manylinux2014_}-manylinux_2_17" ;;
    linux_*) uv_platform="${platforms[0]#linux_}-unknown-linux-gnu" ;;
    *) echo "wheelhouse.sh: --platform ${platforms[0]}: only Linux tags (manylinux_2_N_ARCH, manylinux2014_ARCH, linux_ARCH)" >&2; exit 2 ;;
  esac
elif [ "${pyver_given:-1}" = 1 ]; then
  uv_platform="x86_64-manylinux_2_28"  # the manylinux x86_64 tags pip fetches with, below
fi

target=()
if [ "${pyver_given:-1}" = 1 ]; then
  target+=(--python-version "$pyver" --implementation cp)
  if [ ${#platforms[@]} -eq 0 ]; then
    platforms=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
      manylinux1_x86_64 linux_x86_64)
    for n in 39 38 37 36 35 34 33 32 31 30 29 26 25 24; do platforms+=("manylinux_2_${n}_x86_64"); done
  fi
fi
for p in "${platforms[@]}"; do target+=(--platform "$p"); done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rm -rf "$out"
mkdir -p "$out"

echo "==> [1/4] the cxrbench wheel"
[ "$resolve_only" = 1 ] || "$python" -m pip wheel --quiet --no-deps -w "$out" "$repo"

echo "==> [2/4] requirements (pyproject.toml without torch / torchvision) and the node's versions"
"$python" - "$repo/pyproject.toml" "$have" "$work" <<'PY'
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib
from packaging.requirements import Requirement

pyproject, have, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
TORCH = {"torch", "torchvision"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


deps = tomllib.loads(Path(pyproject).read_text())["project"]["dependencies"]
reqs = [d for d in deps if norm(Requirement(d).name) not in TORCH]
(work / "requirements.txt").write_text("\n".join(reqs + ["setuptools>=64"]) + "\n")
pins, names = [], []
if have:
    for line in Path(have).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")) or " @ " in line:
            continue  # editable / direct-reference installs: not something the resolver can pin
        name = line.split("==", 1)[0]
        if norm(name) in ("pip", "setuptools", "wheel"):
            continue  # installers, not dependencies (setuptools goes in for the editable build)
        if "==" in line:
            name, version = line.split("==", 1)
            pins.append(f"{name}=={version.split('+', 1)[0]}")  # the node's +cu130 build is that version
        else:  # a bare name: the node has it, version unknown (left out, not pinned)
            name = line
        names.append(norm(name))
    if not TORCH & set(names):
        sys.exit(f"{have}: no torch in the node's packages; cxrbench installs over the node's torch")
(work / "constraints.txt").write_text("\n".join(pins) + "\n")
(work / "have.txt").write_text("\n".join(names) + "\n")
print(f"{len(reqs)} requirements; the node has {len(names)} packages ({len(pins)} with versions)" if have else f"{len(reqs)} requirements")
PY

echo "==> [3/4] resolve for Python $pyver${uv_platform:+ ($uv_platform)}"
uv="$(dirname "$python")/uv"
if ! [ -x "$uv" ]; then
  uv="$(command -v uv || true)"
fi
if [ -z "$uv" ]; then  # pip's own resolver backtracks for tens of minutes on a foreign Python's numpy / scipy
  echo "(no uv here: installing it from PyPI into a temporary venv)"
  "$python" -m venv "$work/uv-venv"
  "$work/uv-venv/bin/python" -m pip install --quiet uv
  uv="$work/uv-venv/bin/uv"
fi
"$uv" pip compile --quiet --no-header --no-annotate --only-binary :all: --python-version "$pyver" \
  ${uv_platform:+--python-platform "$uv_platform"} -c "$work/constraints.txt" "$work/requirements.txt" \
  -o "$work/resolved.txt"
"$python" - "$work" "$out" "$real_opencv" <<'PY'
import re
import sys
from pathlib import Path

work, out, alias_off = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"


def alias(version: str, headless: str) -> None:
    """opencv_python-VERSION+headless-py3-none-any.whl: metadata only, Requires-Dist the headless build."""
    import base64
    import hashlib
    import zipfile

    v = f"{version}+headless"
    info = f"opencv_python-{v}.dist-info"
    files = {
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\nName: opencv-python\nVersion: {v}\n"
            "Summary: cxrbench wheelhouse: opencv-python satisfied by opencv-python-headless (same cv2, no GUI)\n"
            f"Requires-Dist: opencv-python-headless=={headless}\n"
        ),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: cxrbench-wheelhouse\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(out / f"opencv_python-{v}-py3-none-any.whl", "w") as z:
        for path, text in files.items():
            z.writestr(path, text)


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


have = set((work / "have.txt").read_text().split())
resolved = {}  # uv's lines: NAME==VERSION
for line in (work / "resolved.txt").read_text().splitlines():
    if line.strip() and not line.lstrip().startswith("#"):
        name, version = line.split(";", 1)[0].strip().split("==", 1)
        resolved[norm(name)] = version
keep, left = [], []
for name, version in resolved.items():
    gpu_stack = name in ("torch", "torchvision", "triton") or name.startswith(("nvidia-", "cuda-"))
    # setuptools always: pip builds the editable install in an isolated environment from the wheelhouse
    if gpu_stack or (name in have and name != "setuptools"):
        left.append(name)
    elif name == "opencv-python" and "opencv-python-headless" in resolved and not alias_off:
        # mmengine and mmcv-lite declare opencv-python (71 MiB, GUI libraries); albumentations brings
        # opencv-python-headless, the same cv2 without them. An empty wheel of that name requiring the
        # headless one satisfies the declaration and keeps the wheelhouse small.
        alias(version, resolved["opencv-python-headless"])
        left.append(f"{name} (an empty wheel requiring opencv-python-headless)")
    else:
        keep.append(f"{name}=={version}")
(work / "download.txt").write_text("\n".join(keep) + "\n")
(out / "left-out.txt").write_text("\n".join(left) + "\n")
print(f"{len(keep)} wheels to fetch; left out (the node's or replaced): {len(left)}")
PY

if [ "$resolve_only" = 1 ]; then
  cp "$work/download.txt" "$out/requirements.txt"
  echo "resolved only: $out/requirements.txt (to fetch), $out/left-out.txt"
  exit 0
fi
echo "==> [4/4] download"
"$python" -m pip download --quiet --no-deps --only-binary=:all: "${target[@]}" -d "$out" -r "$work/download.txt"
cp "$work/download.txt" "$out/requirements.txt"
bytes="$(du -sb "$out" | cut -f1)"
echo
echo "wheelhouse $out: $(ls "$out"/*.whl | wc -l) wheels, $((bytes / 1024 / 1024)) MiB"
echo "on the node: scripts/setup.sh --offline $out --python <the node's python3 with torch>"
echo "         or: pip install --no-index --find-links $out cxrbench   (into a venv with --system-site-packages)"
