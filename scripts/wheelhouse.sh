#!/usr/bin/env bash
# Build a wheelhouse for an offline GPU node: cxrbench's wheel and the wheels of its dependencies, except
# torch / torchvision / triton / nvidia-* / cuda-* (the node's own torch build is used), for the node's
# Python version and platform. Run it on a machine with access to PyPI, copy the folder to the node, then
# install there without any network (see README, "Offline GPU nodes"):
#   scripts/setup.sh --offline WHEELHOUSE --python /path/to/the/nodes/python3
#
# Usage: scripts/wheelhouse.sh [--out DIR] [--python-version X.Y] [--platform TAG]... [--have FILE] [--python PY]
#                              [--real-opencv]
#   --out DIR              the wheelhouse (default: wheelhouse in the repository); emptied first
#   --python-version X.Y   the node's Python (default: that of --python)
#   --platform TAG         a wheel platform tag the node accepts, repeatable (default: this machine's;
#                          given --python-version and no --platform: the manylinux x86_64 tags)
#   --have FILE            `python3 -m pip list --format=freeze` run on the node: packages it already has
#                          are left out, and the versions it has are kept (the node's torch, numpy, ...);
#                          a line with a bare name leaves that package out without pinning its version
#   --python PY            the interpreter whose pip resolves and downloads (default: $CXRBENCH_VENV/bin/python,
#                          else python3); pip >= 23.0
#   --real-opencv          fetch opencv-python (71 MiB) instead of satisfying it with an empty wheel that
#                          requires opencv-python-headless (the same cv2 without GUI libraries)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$repo/wheelhouse"
pyver=""
platforms=()
have=""
real_opencv=0
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
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "wheelhouse.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
[ -z "$have" ] || [ -f "$have" ] || { echo "wheelhouse.sh: --have $have: no such file" >&2; exit 2; }

target=()
if [ -n "$pyver" ]; then
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
"$python" -m pip wheel --quiet --no-deps -w "$out" "$repo"

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

echo "==> [3/4] resolve for Python ${pyver:-$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}${platforms:+ (${platforms[0]}, ...)}"
"$python" -m pip install --quiet --dry-run --ignore-installed --only-binary=:all: "${target[@]}" \
  --target "$work/target" --report "$work/report.json" -c "$work/constraints.txt" -r "$work/requirements.txt"
"$python" - "$work" "$out" "$real_opencv" <<'PY'
import json
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
resolved = {norm(i["metadata"]["name"]): i["metadata"]["version"] for i in json.loads((work / "report.json").read_text())["install"]}
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
print(f"{len(keep)} wheels to fetch; left out (the node's or replaced): {len(left)}")
PY

echo "==> [4/4] download"
"$python" -m pip download --quiet --no-deps --only-binary=:all: "${target[@]}" -d "$out" -r "$work/download.txt"
cp "$work/download.txt" "$out/requirements.txt"
bytes="$(du -sb "$out" | cut -f1)"
echo
echo "wheelhouse $out: $(ls "$out"/*.whl | wc -l) wheels, $((bytes / 1024 / 1024)) MiB"
echo "on the node: scripts/setup.sh --offline $out --python <the node's python3 with torch>"
echo "         or: pip install --no-index --find-links $out cxrbench   (into a venv with --system-site-packages)"
