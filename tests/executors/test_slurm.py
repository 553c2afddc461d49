"""Slurm job arrays (benchmark.executors.slurm) through submitit's local cluster; the record of a dead job."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.executors.reference import OPTIONS, TASK, assert_same_records
from tests.support.records import records_by_key


@pytest.mark.slow
def test_slurm_executor_with_submitit_local_cluster(data_root, reference, cache_dir, tmp_path):
    from benchmark.executors.local import Sweep
    from benchmark.executors.slurm import SlurmSettings, run_slurm

    out = tmp_path / "out"
    options = replace(OPTIONS, device="cpu", feature_cache=str(cache_dir))
    # one search run is recorded already (an earlier, interrupted submission): it is not submitted again
    done = next(r for r in reference.values() if r["phase"] == "lr_search" and r["lr"] == 3e-2)
    (out / "runs" / "resnet18.random" / TASK.id).mkdir(parents=True)
    (out / "runs" / "resnet18.random" / TASK.id / f"{done['key']}.json").write_text(json.dumps(done))
    sweep = Sweep("resnet18.random", (TASK,), str(data_root), str(out), (0,), options=options)
    settings = SlurmSettings(folder=str(tmp_path / "slurm"), gpus=0, cpus=1, time_min=10, cluster="local")
    lines: list[str] = []
    records = run_slurm(sweep, settings, echo=lines.append, poll_s=0.5)
    log = "\n".join(lines)
    assert "stage 1" in log and "submitted 1 run(s)" in log and "stage 2" in log, log
    assert log.count("submitted 1 run(s) as job array") == 2, log
    assert [r["phase"] for r in records] == ["lr_search", "lr_search", "final"]
    assert_same_records(records_by_key(out), reference)
    assert list((tmp_path / "slurm").glob("*_log.out"))  # submitit's per-job logs
    # resume-safe: everything is recorded, so a second call submits nothing
    lines.clear()
    again = run_slurm(sweep, settings, echo=lines.append, poll_s=0.5)
    assert "submitted" not in "\n".join(lines)
    assert [r["key"] for r in again] == [r["key"] for r in records]


def test_record_of_a_dead_slurm_job_has_the_run_identity(data_root, reference, tmp_path):
    """A job that died without a record gets a failed record with the same identity fields (and key) as the
    run would have written, so the sweep and the leaderboard treat it like any failed run."""
    from benchmark.backbones import parse_spec
    from benchmark.executors.slurm import _failed_record
    from benchmark.leaderboard import load_records
    from benchmark.runs import plan_run
    from benchmark.runs.records import write_record

    run = plan_run(
        TASK, parse_spec("resnet18.random"), data_root, tmp_path, 0, 1e-3, OPTIONS, "given", "final"
    )
    rec = json.loads(json.dumps(_failed_record(run, "job 12_0 failed: OutOfMemoryError")))  # as stored
    full = next(iter(reference.values()))
    identity = ("schema_version", "task", "task_spec", "backbone", "seed", "phase", "split_hash")
    assert {k: rec[k] for k in identity} == {k: full[k] for k in identity} | {"seed": 0, "phase": "final"}
    assert rec["key"] == run.key and rec["status"] == "failed" and "OutOfMemoryError" in rec["reason"]
    assert set(rec) <= set(full) | {"reason"}
    write_record(run.path, rec)
    (loaded,), _ = load_records([tmp_path])
    assert loaded["status"] == "failed"
