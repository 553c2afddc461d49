"""Run records: one JSON file per training run, written atomically, keyed by what determines the result."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

from tasks.io import write_json_atomic

SCHEMA_VERSION = 1
# Bumped when a change of the code changes results; part of every run key.
CODE_VERSION = "0.3"  # 0.3: metrics and normalisation statistics defined as the published tables
# 0.2: early-stopping ties, YOLOv3 validation loss, fraction normalisation
# Records of an older code version have primary metrics of another definition than the published tables
# (COCO-style mAP, another FROC fill rule, NIH Dice over present classes, statistics on the padded square):
# the leaderboard never ranks them against published rows.
PUBLISHED_DEFINITIONS_SINCE = "0.3"


def _version_tuple(v) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(v).split("."))
    except ValueError:
        return ()


def metrics_as_published(record: dict) -> bool:
    """Whether a record's primary metric has the published tables' definition (written by cxrbench
    ``PUBLISHED_DEFINITIONS_SINCE`` or newer; records from before carry no ``code_version``)."""
    return _version_tuple(record.get("code_version")) >= _version_tuple(PUBLISHED_DEFINITIONS_SINCE)


def run_key(
    *,
    task: dict,
    backbone: dict,
    split_hash: str,
    seed: int,
    lr: float,
    size: int,
    overrides: dict | None = None,
) -> str:
    """Hash of everything that determines a run's result (16 hex digits)."""
    payload = {
        "task": task,
        "backbone": {
            "spec": backbone["spec"] if backbone.get("tag") != "file" else None,
            "arch": backbone["arch"],
            "tag": backbone["tag"],
            "sha256": backbone.get("sha256"),
        },
        "split_hash": split_hash,
        "seed": int(seed),
        "lr": float(lr),
        "size": int(size),
        "overrides": overrides or {},
        "code_version": CODE_VERSION,
    }
    if backbone.get("normalization"):  # an input convention other than the task statistics changes results
        payload["backbone"]["normalization"] = backbone["normalization"]
    if backbone.get("resolution"):  # SPEC#res=N: the encoder runs at N px whatever the task's size
        payload["backbone"]["resolution"] = backbone["resolution"]
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record_path(out_dir: str | os.PathLike, backbone_name: str, task_id: str, key: str) -> Path:
    return Path(out_dir) / "runs" / backbone_name / task_id / f"{key}.json"


def write_record(path: str | os.PathLike, record: dict) -> None:
    write_json_atomic(path, record)


def read_record(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())


def record_files(runs_dir: str | os.PathLike) -> list[Path]:
    """The record files under a ``runs/`` folder (or an output folder containing one), sorted by path: the
    one place that knows the layout ``runs/<backbone>/<task>/<key>.json`` (:func:`record_path`)."""
    root = Path(runs_dir)
    if (root / "runs").is_dir():
        root = root / "runs"
    return sorted(root.glob("*/*/*.json"))


def iter_records(runs_dir: str | os.PathLike):
    """All records under a ``runs/`` folder (or an output folder containing one), sorted by path."""
    for path in record_files(runs_dir):
        yield read_record(path)


def versions() -> dict[str, str]:
    """Versions of everything that can change a result."""
    import mmcv
    import mmdet
    import mmengine
    import mmseg
    import numpy
    import torch
    import torchvision

    import benchmark
    from benchmark.openmmlab.nms import active_provider

    return {
        "cxrbench": benchmark.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "mmengine": mmengine.__version__,
        "mmcv": mmcv.__version__,
        "mmdet": mmdet.__version__,
        "mmseg": mmseg.__version__,
        "numpy": numpy.__version__,
        "nms_provider": active_provider() or "",
    }
