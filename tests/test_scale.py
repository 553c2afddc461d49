"""Scaling out: claim files, local worker sweeps (killed with SIGKILL and restarted), Slurm job arrays
through submitit's local executor, one run over two processes with torchrun (gloo, CPU)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from benchmark.runs import RunOptions, evaluate
from benchmark.runs.claims import is_stale, owner_info, try_claim
from tasks.registry import get_task

OPTIONS = RunOptions(max_epochs=1, batch_size=2, progress=False)
# two grid values keep the sweep short: 2 lr-search runs, then 1 final run at the chosen value
TASK = replace(get_task("rsna_linear_10"), lr_grid=(3e-2, 1e-3))
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def records_in(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/*/*.json"))}


def assert_same_records(got: dict[str, dict], ref: dict[str, dict]) -> None:
    assert sorted(got) == sorted(ref)  # same keys: same tasks, seeds and (chosen) learning rates
    for key, r in ref.items():
        g = got[key]
        assert g["status"] == r["status"] == "ok"
        assert (g["phase"], g["seed"], g["lr"], g["lr_source"]) == (
            r["phase"],
            r["seed"],
            r["lr"],
            r["lr_source"],
        )
        scores = "search_val_scores"
        assert {k: v for k, v in g["sweep"].items() if k != scores} == {
            k: v for k, v in r["sweep"].items() if k != scores
        }
        assert g["sweep"].get(scores, {}) == pytest.approx(r["sweep"].get(scores, {}), rel=1e-4)
        for split in ("val", "test"):
            assert g["metrics"][split] == pytest.approx(r["metrics"][split], rel=1e-4, abs=1e-5), (key, split)


# --- claims -----------------------------------------------------------------------------------------------


def test_claims_are_exclusive_and_released(tmp_path):
    path = tmp_path / "k.claim"
    first = try_claim(path, heartbeat_s=0)
    assert first is not None and try_claim(path, heartbeat_s=0) is None
    assert json.loads(path.read_text())["pid"] == os.getpid()
    first.release()
    assert not path.exists()
    with try_claim(path, heartbeat_s=0) as again:
        assert again is not None and path.exists()
    assert not path.exists()


def test_stale_claims_are_taken_over(tmp_path):
    p = mp.get_context("spawn").Process(target=time.sleep, args=(0,))
    p.start()
    p.join()
    dead = tmp_path / "dead.claim"
    dead.write_text(json.dumps(owner_info() | {"pid": p.pid}))  # its process has exited
    assert is_stale(dead)
    claim = try_claim(dead, heartbeat_s=0)
    assert claim is not None and json.loads(dead.read_text())["pid"] == os.getpid()
    claim.release()

    elsewhere = tmp_path / "other.claim"
    elsewhere.write_text(json.dumps(owner_info() | {"host": socket.gethostname() + "-other", "pid": 1}))
    assert not is_stale(elsewhere, stale_after_s=60)  # another machine, heartbeat fresh
    old = time.time() - 120
    os.utime(elsewhere, (old, old))
    assert is_stale(elsewhere, stale_after_s=60)  # its heartbeat stopped
    assert not is_stale(elsewhere, stale_after_s=600)


def test_heartbeat_keeps_a_claim_fresh(tmp_path):
    path = tmp_path / "beat.claim"
    with try_claim(path, heartbeat_s=0.05):
        old = time.time() - 1000
        os.utime(path, (old, old))
        time.sleep(0.3)
        assert time.time() - path.stat().st_mtime < 100


# --- sweeps ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One feature cache for the sweeps of this module (built by the first, reused by the others)."""
    return tmp_path_factory.mktemp("feature_cache")


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory, cache_dir):
    """The records of an uninterrupted sequential single-worker sweep."""
    out = tmp_path_factory.mktemp("reference")
    options = replace(OPTIONS, feature_cache=str(cache_dir))  # as the sweeps below
    evaluate("resnet18.random", [TASK], data_root, out, seeds=[0], options=options, echo=lambda *a: None)
    records = records_in(out)
    assert len(records) == 3
    return records


SWEEP_SCRIPT = """
import sys
from dataclasses import replace
from benchmark.runs import RunOptions
from benchmark.executors.local import Sweep, run_local
from tasks.registry import get_task

if __name__ == "__main__":
    data, out, workers, cache = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    task = replace(get_task("rsna_linear_10"), lr_grid=(3e-2, 1e-3))
    options = RunOptions(max_epochs=1, batch_size=2, progress=False, feature_cache=cache)
    run_local(Sweep("resnet18.random", (task,), data, out, (0,), options=options), workers)
"""


def _sweep(data_root, out: Path, workers: int, cache: Path, **kwargs) -> subprocess.Popen:
    script = out.parent / f"{out.name}_sweep.py"
    script.write_text(SWEEP_SCRIPT)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", CXRBENCH_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, str(script), str(data_root), str(out), str(workers), str(cache)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the kill reaches the workers too
        **kwargs,
    )


@pytest.mark.slow
def test_sweep_killed_and_restarted_with_two_workers_matches_single_worker(
    data_root, reference, cache_dir, tmp_path
):
    out = tmp_path / "out"
    out.mkdir()
    # a random point of the sweep: after 0, 1 or 2 of its 3 records, plus a random delay (start-up, a run
    # in progress, a record being written, ...)
    rng = random.Random()
    after_records, delay = rng.choice([0, 1, 2]), rng.uniform(0.0, 4.0)
    killed = _sweep(data_root, out, 2, cache_dir)
    deadline = time.time() + 300
    while len(records_in(out)) < after_records and killed.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(delay)
    if killed.poll() is None:
        os.killpg(killed.pid, signal.SIGKILL)  # the sweep and its workers, without any chance to clean up
    killed.wait()
    delay = (after_records, delay)
    before = records_in(out)
    restarted = _sweep(data_root, out, 2, cache_dir)
    log, _ = restarted.communicate(timeout=600)
    assert restarted.returncode == 0, log
    after = records_in(out)
    assert_same_records(after, reference)
    # the restart ran exactly the runs that were missing, each once, sharing them between both workers
    ran = [line.rsplit("/", 1)[-1].removesuffix(".json") for line in log.splitlines() if " -> " in line]
    assert sorted(ran) == sorted(set(after) - set(before)), (delay, log)
    assert not list((out / "claims").glob("*.claim")), "claims must be released"


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
    assert_same_records(records_in(out), reference)
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


# --- one run over two processes ----------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_two_processes_gloo_writes_one_record(data_root, reference, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        str(BIN / "torchrun"),
        "--nproc-per-node",
        "2",
        "--master-port",
        str(29500 + os.getpid() % 1000),
        "-m",
        "benchmark.cli",
        "evaluate",
        "--backbone",
        "resnet18.random",
        "--tasks",
        "rsna_linear_10",
        "--data",
        str(data_root),
        "--out",
        str(out),
        "--seeds",
        "1",
        "--lr",
        "0.001",
        "--max-epochs",
        "1",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--quiet",
        "--launcher",
        "pytorch",
    ]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", CXRBENCH_OFFLINE="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("run(s) ok") == 1  # rank 0 alone reports
    (record,) = records_in(out).values()
    single = next(iter(reference.values()))
    assert set(record) == set(single)  # the same record schema as a one-process run
    assert record["status"] == "ok" and record["world_size"] == 2 and single["world_size"] == 1
    assert record["batch_size"] == 2 and record["batch_size_per_process"] == 1
    assert record["lr"] == 1e-3 and record["lr_source"] == "given" and 0 <= record["test_score"] <= 1
    assert not [p for p in (out / "runs").rglob("*") if p.is_file() and p.suffix != ".json"]


@pytest.mark.slow
def test_cli_local_workers(data_root, reference, cache_dir, tmp_path, capsys):
    from benchmark.cli import main

    common = [
        "evaluate",
        "--backbone",
        "resnet18.random",
        "--tasks",
        "rsna_linear_10",
        "--data",
        str(data_root),
        "--out",
        str(tmp_path / "out"),
        "--seeds",
        "2",
        "--no-lr-search",
        "--max-epochs",
        "1",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--feature-cache",
        str(cache_dir),
    ]
    assert main([*common, "--executor", "slurm", "--workers", "2"]) == 2
    assert "--workers is for the local executor" in capsys.readouterr().err
    if shutil.which("sbatch") is None:
        assert main([*common, "--executor", "slurm"]) == 2
        assert "no Slurm here" in capsys.readouterr().err
    assert main([*common, "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "on 2 local worker(s)" in out and "2 run(s) ok, 0 failed" in out
    records = records_in(tmp_path / "out")
    assert sorted(r["seed"] for r in records.values()) == [0, 1]
    assert all(r["feature_cache"]["root"] == str(cache_dir) for r in records.values())
