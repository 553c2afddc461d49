"""Synthetic run records in the exact format of ``benchmark.runs.execute`` (for leaderboard tests)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from benchmark.runs.records import CODE_VERSION, record_path, write_record
from tasks.registry import METRIC_KEYS, TASKS


def fake_test_metrics(task_id: str, score: float) -> dict:
    """Test metrics of a run whose primary score is ``score`` (fractions), with the task's secondary keys."""
    task = TASKS[task_id]
    if task.kind == "detection":
        m = {"mAP": score, "mAP_50": min(1.0, score * 1.5), "mAP_75": score * 0.5, "n_detections": 42}
        m |= {"mAP_coco": score * 0.98, "mAP_coco_50": min(1.0, score * 1.45), "mAP_coco_75": score * 0.45}
        if task.metric == "froc":
            m = {"froc": score, "froc_all_predictions": min(1.0, score + 0.02), "mAP": score * 0.8}
        return m
    m = {"dice": score, "dice_per_image": min(1.0, score + 0.1), "iou": score / (2 - score)}
    if task.dataset == "nih":
        m |= {f"dice.{c}": score for c in ("Atelectasis", "Cardiomegaly")}
        m["dice_present_classes"] = min(1.0, score + 0.05)
    else:
        m["dice.opacity"] = score
    return m


def make_record(
    runs_dir,
    backbone: str,
    task_id: str,
    seed: int,
    score: float | None,
    *,
    lr: float | None = None,
    phase: str | None = "final",
    status: str = "ok",
    val: float | None = None,
    split_hash: str = "abc123",
    lr_source: str = "default",
    finished_at: str = "2025-01-01T00:00:00",
    key: str | None = None,
    size: int = 224,
    code_version: str | None = CODE_VERSION,
) -> Path:
    """Write one record under ``runs_dir`` (an ``evaluate --out`` folder) and return its path."""
    task = TASKS[task_id]
    arch, tag = backbone.split(".", 1) if "." in backbone else (backbone, "file")
    lr = task.lr if lr is None else lr
    if key is None:  # like benchmark.runs.records.run_key: a hash of what determines the result
        key = hashlib.sha256(
            f"{backbone}|{task_id}|{seed}|{lr}|{phase}|{split_hash}|{size}".encode()
        ).hexdigest()[:16]
    primary = METRIC_KEYS[task.metric].record
    rec = {
        "schema_version": 1,
        "key": key,
        **({"code_version": code_version} if code_version is not None else {}),
        "status": status,
        "task": task_id,
        "task_spec": task.to_dict() | {"size": size},
        "backbone": {
            "spec": backbone,
            "arch": arch,
            "tag": tag,
            "path": None,
            "sha256": None,
            "name": backbone,
        },
        "seed": seed,
        "lr": lr,
        "lr_source": lr_source,
        "split_hash": split_hash,
        "primary_metric": primary,
        "wall_time_s": 12.5,
        "finished_at": finished_at,
    }
    if phase is not None:
        rec["phase"] = phase
    if status == "ok":
        val = score if val is None else val
        rec |= {
            "metrics": {
                "val": fake_test_metrics(task_id, val) | {"loss": 0.5},
                "test": fake_test_metrics(task_id, score),
            },
            "test_score": score,
            "val_score": val,
        }
    else:
        rec |= {"reason": "RuntimeError: CUDA out of memory", "traceback": "..."}
    path = record_path(runs_dir, backbone, task_id, key)
    write_record(path, rec)
    return path


# A small scenario shared by the leaderboard tests: 3 backbones x 3 tasks, with a tie, an incomplete
# cell, a failed cell, a missing cell, records without "phase" and a learning-rate search.
T1, T2, T3 = "rsna_yolov3_frozen_10", "rsna_linear_100", "covid_linear"
IMN, RND, MINE = "resnet50.imagenet", "resnet50.random", "mine-0123abcd"
# Fractions, in seed order 0..4. MINE's T1 values are IMN's in another order: the same mean, a tie.
VALUES = {
    (IMN, T1): [0.30, 0.31, 0.29, 0.32, 0.28],
    (IMN, T2): [0.40, 0.42, 0.41, 0.43, 0.39],
    (IMN, T3): [0.33, 0.35, 0.34, 0.36, 0.32],
    (RND, T1): [0.05, 0.06, 0.04, 0.05, 0.07],
    (RND, T2): [0.10, 0.12, 0.11],  # 3 of 5 seeds: incomplete
    (MINE, T1): [0.28, 0.32, 0.30, 0.29, 0.31],
    (MINE, T2): [0.45, 0.47, 0.46, 0.44, 0.48],
    # (RND, T3): every run failed; (MINE, T3): never run
}


def pct(x):
    return np.asarray(x) * 100


def write_scenario(runs_dir: Path) -> Path:
    for (bb, task), vals in VALUES.items():
        for seed, v in enumerate(vals):
            # IMN's records predate the "phase" field: a missing phase means a final run.
            lr = 0.01 if (bb, task) == (MINE, T2) else None
            src = "search" if (bb, task) == (MINE, T2) else "default"
            make_record(
                runs_dir, bb, task, seed, v, phase=None if bb == IMN else "final", lr=lr, lr_source=src
            )
    for seed in range(5):
        make_record(runs_dir, RND, T3, seed, None, status="failed")
    # Learning-rate search of MINE on T2: not part of the values, reported in lr_search.
    make_record(runs_dir, MINE, T2, 0, 0.99, lr=0.03, phase="lr_search", val=0.41)
    make_record(runs_dir, MINE, T2, 0, 0.99, lr=0.01, phase="lr_search", val=0.455)
    return runs_dir
