"""Which run is this? ``plan_run`` resolves (task, backbone, seed, lr) to a :class:`PlannedRun` with its key
and record path, without training; ``check_dataset_prepared`` says what to prepare first; ``record_identity``
is how every record of a run starts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.backbones import BackboneInfo
from benchmark.runs.config import RunOptions, _overrides
from benchmark.runs.records import CODE_VERSION, SCHEMA_VERSION, record_path, run_key
from tasks.prepare import DEFAULT_SIZE, check_manifest, load_manifest, prepared_dir
from tasks.registry import TaskSpec


@dataclass
class PlannedRun:
    task: TaskSpec
    backbone: BackboneInfo
    seed: int
    lr: float
    lr_source: str
    key: str
    path: Path
    prepared: Path
    manifest: dict = field(repr=False, default_factory=dict)
    phase: str = "final"  # "lr_search" (one run per grid value) or "final" (the seeds at the chosen lr)
    sweep: dict = field(default_factory=dict)  # how the sweep chose this run (seeds, lr search results)


def plan_run(
    task: TaskSpec,
    backbone: BackboneInfo,
    data_root,
    out_dir,
    seed: int,
    lr: float | None,
    options: RunOptions,
    lr_source: str | None = None,
    phase: str = "final",
    sweep: dict | None = None,
) -> PlannedRun:
    """Resolve one run and its key (no training)."""
    prepared = prepared_dir(data_root, task.dataset, task.size)
    manifest = load_manifest(prepared)
    check_manifest(manifest, prepared, task.dataset, task.size)
    chosen_lr = task.lr if lr is None else float(lr)
    key = run_key(
        task=task.to_dict(),
        backbone=backbone.to_dict(),
        split_hash=manifest["split_hash"],
        seed=seed,
        lr=chosen_lr,
        size=task.size,
        overrides=_overrides(options, task),
    )
    return PlannedRun(
        task,
        backbone,
        seed,
        chosen_lr,
        lr_source or ("default" if lr is None else "given"),
        key,
        record_path(out_dir, backbone.name, task.id, key),
        prepared,
        manifest,
        phase,
        dict(sweep or {}),
    )


def record_identity(run: PlannedRun, status: str) -> dict:
    """The fields every record of a run starts with, whether it ran here or failed elsewhere (a Slurm job)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "code_version": CODE_VERSION,  # which metric definitions (see benchmark.runs.records.metrics_as_published)
        "key": run.key,
        "status": status,
        "task": run.task.id,
        "task_spec": run.task.to_dict(),
        "backbone": run.backbone.to_dict(),
        "seed": run.seed,
        "lr": run.lr,
        "lr_source": run.lr_source,
        "phase": run.phase,
        "sweep": run.sweep,
    }


def check_dataset_prepared(data_root, task: TaskSpec) -> None:
    """Clear error when a task's dataset has not been prepared under ``data_root`` at the task's size, or
    the folder there was written by another dataset, size or source (``DatasetError``)."""
    prepared = prepared_dir(data_root, task.dataset, task.size)
    if (prepared / "manifest.json").exists():
        check_manifest(load_manifest(prepared), prepared, task.dataset, task.size)
        return
    size_flag = "" if task.size == DEFAULT_SIZE else f" --size {task.size}"
    message = (
        f"task {task.id} needs the prepared '{task.dataset}' dataset at {prepared}: run "
        f"`cxrbench prepare {task.dataset} --raw <download folder> --out {data_root}{size_flag}`"
    )
    pattern = re.compile(re.escape(task.dataset) + r"(-\d+px)?")
    other_sizes = sorted(
        p.name
        for p in Path(data_root).glob(f"{task.dataset}*")
        if pattern.fullmatch(p.name) and (p / "manifest.json").exists()
    )
    if other_sizes:
        message += (
            f" (prepared at other sizes there: {', '.join(other_sizes)}; `evaluate --size PX` reads those)"
        )
    raise FileNotFoundError(message)
