"""``cxrbench doctor``: is this installation able to run the benchmark?"""

from __future__ import annotations

import importlib
import os
import platform
from pathlib import Path


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "unknown")
    except Exception:
        return None


def _check_nms(device: str) -> tuple[bool, str]:
    import torch

    from benchmark.openmmlab.nms import brute_force_nms

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 100
    wh = torch.rand(60, 2, generator=g) * 40 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(60, generator=g)
    from mmcv.ops import nms  # the op mmdet calls, whichever provider backs it

    _, keep = nms(boxes.to(device), scores.to(device), 0.4)
    expected = brute_force_nms(boxes, scores, 0.4)
    ok = torch.equal(keep.cpu().long(), expected)
    return ok, f"{len(keep)} of 60 boxes kept, {'matches' if ok else 'DIFFERS FROM'} brute-force NMS"


def collect() -> dict:
    """All checks as a dict; ``ok`` is False when something required is missing or broken."""
    report: dict = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "problems": [],
        "warnings": [],
    }
    problems, warnings = report["problems"], report["warnings"]
    for name in (
        "torch",
        "torchvision",
        "numpy",
        "pandas",
        "pydicom",
        "sklearn",
        "skimage",
        "albumentations",
        "safetensors",
        "pycocotools",
    ):
        v = _version(name)
        report[name] = v
        if v is None:
            problems.append(f"{name} is not importable: run scripts/setup.sh")
    try:
        from benchmark import openmmlab

        report["nms_provider"] = openmmlab.NMS_PROVIDER
        for name in ("mmengine", "mmcv", "mmdet", "mmseg"):
            report[name] = _version(name)
    except Exception as e:
        problems.append(f"the OpenMMLab stack does not import: {type(e).__name__}: {e}")
        report["nms_provider"] = None
    import torch

    report["cuda_available"] = torch.cuda.is_available()
    report["cuda_devices"] = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if report["cuda_available"]
        else []
    )
    if report.get("nms_provider"):
        checks = {}
        for device in ["cpu"] + (["cuda"] if report["cuda_available"] else []):
            try:
                ok, msg = _check_nms(device)
            except Exception as e:
                ok, msg = False, f"{type(e).__name__}: {e}"
            checks[device] = msg
            if not ok:
                problems.append(f"NMS on {device}: {msg}")
        report["nms_check"] = checks
    try:
        from pydicom.pixels import get_decoder
        from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit

        plugins = {}
        for uid in (JPEGBaseline8Bit, JPEG2000Lossless):
            dec = get_decoder(uid)
            plugins[uid.name] = list(dec.available_plugins)
            if not dec.is_available:
                problems.append(
                    f"no pydicom plugin decodes {uid.name}: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
                )
        report["dicom_plugins"] = plugins
    except Exception as e:
        problems.append(f"pydicom pixel decoders unavailable: {e}")
    from benchmark.backbones import _weights_dir

    weights = _weights_dir()
    report["weights_dir"] = str(weights)
    report["weights_files"] = sorted(p.name for p in weights.glob("*.pth")) if weights.is_dir() else []
    results = Path(os.environ.get("CXRBENCH_RESULTS", "results")).resolve()
    report["results_dir"] = str(results)
    report["results_writable"] = os.access(results if results.exists() else results.parent, os.W_OK)
    if not report["results_writable"]:
        warnings.append(f"results folder {results} is not writable")
    report["offline"] = os.environ.get("CXRBENCH_OFFLINE", "") not in ("", "0")
    report["ok"] = not problems
    return report


def format_report(r: dict) -> str:
    lines = [f"cxrbench doctor ({'OK' if r['ok'] else 'PROBLEMS FOUND'})", ""]
    lines.append(f"  python        {r['python']}  ({r['platform']})")
    for name in ("torch", "torchvision", "mmengine", "mmcv", "mmdet", "mmseg", "pydicom", "numpy"):
        lines.append(f"  {name:<13} {r.get(name) or 'MISSING'}")
    lines.append(f"  NMS provider  {r.get('nms_provider') or 'none'}")
    for device, msg in (r.get("nms_check") or {}).items():
        lines.append(f"    nms on {device}: {msg}")
    cuda = ", ".join(r["cuda_devices"]) if r["cuda_available"] else "not available (CPU only)"
    lines.append(f"  CUDA          {cuda}")
    for syntax, plugins in (r.get("dicom_plugins") or {}).items():
        lines.append(f"  DICOM {syntax}: {', '.join(plugins) or 'NO PLUGIN'}")
    lines.append(f"  weights dir   {r['weights_dir']} ({len(r['weights_files'])} .pth files)")
    lines.append(f"  results dir   {r['results_dir']}{'' if r['results_writable'] else ' (NOT WRITABLE)'}")
    if r["offline"]:
        lines.append("  offline mode  CXRBENCH_OFFLINE is set: no downloads")
    for w in r["warnings"]:
        lines.append(f"  warning: {w}")
    for p in r["problems"]:
        lines.append(f"  PROBLEM: {p}")
    return "\n".join(lines)
