"""`cxrbench evaluate --executor slurm` on a real Slurm cluster: sbatch job arrays, scancel, sacct.

Needs a running cluster (`sudo bash scripts/slurm-cluster.sh` starts a single-node one on this machine; CI
runs it before the tests). Without one these tests are skipped, unless ``CXRBENCH_REQUIRE_SLURM=1`` (CI)
makes that a failure. The jobs run the Python of this test (``sys.executable``) with the submitting
command's environment (sbatch exports it), so ``PYTHONPATH`` and the virtual environment reach the jobs.

The task is tiny: generated RSNA, 40 patients at 64 px, one epoch, three seeds (one job array of three).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.records import records_by_key

REPO = Path(__file__).resolve().parents[2]
CXRBENCH = Path(sys.executable).parent / "cxrbench"
TASK = "rsna_linear_100"
SEEDS = 3


def _cluster_or_skip() -> None:
    why = None
    if shutil.which("sbatch") is None:
        why = "no Slurm here (sbatch is not on PATH)"
    else:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
        states = {s.strip().rstrip("*~#") for s in out.stdout.split()}
        if out.returncode != 0 or not states & {"idle", "mixed", "allocated"}:
            why = f"no Slurm node up (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    if why:
        msg = f"{why}: start a single-node cluster with `sudo bash scripts/slurm-cluster.sh`"
        if os.environ.get("CXRBENCH_REQUIRE_SLURM") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    _cluster_or_skip()
    from tasks.fakes import make_fake_rsna
    from tasks.prepare import prepare

    raw = make_fake_rsna(tmp_path_factory.mktemp("rsna_raw64"), n_patients=40, seed=0, size=64)
    root = tmp_path_factory.mktemp("data64")
    report = prepare("rsna", raw, root, size=64, workers=1, progress=False)
    assert not report.failures
    return root


def _evaluate(data: Path, out: Path) -> subprocess.Popen:
    """``cxrbench evaluate --executor slurm`` as a user types it, on CPU jobs of one core each."""
    args = [
        str(CXRBENCH), "evaluate", "--backbone", "resnet18.random", "--tasks", TASK, "--data", str(data),
        "--size", "64", "--out", str(out), "--seeds", str(SEEDS), "--no-lr-search", "--max-epochs", "1",
        "--batch-size", "2", "--device", "cpu", "--no-feature-cache",
        "--executor", "slurm", "--slurm-gpus", "0", "--slurm-cpus", "1", "--slurm-time", "15",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO), CXRBENCH_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        log, _ = proc.communicate()
        pytest.fail(f"cxrbench evaluate --executor slurm did not finish in {timeout} s:\n{log}")
    return log


def _arrays(log: str) -> list[str]:
    return [line.rsplit(" ", 1)[-1] for line in log.splitlines() if "as job array" in line]


def _sacct(job_ids: list[str]) -> dict[str, str]:
    """Job (array task) id -> state, as sacct lists them (no steps)."""
    out = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(job_ids)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(line.split("|", 1) for line in out.stdout.splitlines() if line)


def _wait_for_sacct(job_ids: list[str], n: int, timeout: float = 60) -> dict[str, str]:
    """sacct once it lists ``n`` finished jobs (slurmctld reports job ends to slurmdbd asynchronously)."""
    deadline = time.time() + timeout
    while True:
        states = _sacct(job_ids)
        done = {j: s for j, s in states.items() if s.split()[0] not in ("PENDING", "RUNNING", "REQUEUED")}
        if len(done) >= n or time.time() > deadline:
            return states
        time.sleep(1)


@pytest.mark.slow
def test_sweep_cancel_and_rerun_on_real_slurm(tiny_data, tmp_path):
    out = tmp_path / "out"
    proc = _evaluate(tiny_data, out)
    # a job that has claimed its run is mid-run: cancel it as a user would
    deadline = time.time() + 300
    victim = None
    while victim is None and proc.poll() is None and time.time() < deadline:
        for claim in (out / "claims").glob("*.claim"):
            try:
                owner = json.loads(claim.read_text())
            except (OSError, ValueError):
                continue  # being written
            victim = (owner["slurm_job"], claim.stem)
            break
        time.sleep(0.1)
    assert victim is not None, "no job claimed a run"
    job_id, key = victim
    subprocess.run(["scancel", job_id], check=True)
    log = _finish(proc)
    assert proc.returncode == 1, log  # the sweep finished, with one failed run
    assert "submitted 3 run(s) as job array" in log, log
    records = records_by_key(out)
    assert len(records) == SEEDS, log
    failed = {k: r for k, r in records.items() if r["status"] != "ok"}
    assert list(failed) == [key], log
    assert f"job {job_id} failed (CANCELLED" in failed[key]["reason"], failed[key]["reason"]
    assert "2 run(s) ok, 1 failed" in log, log
    (array,) = _arrays(log)
    states = _wait_for_sacct([array], SEEDS)
    assert sorted(states) == [f"{array}_{i}" for i in range(SEEDS)], states
    assert states[job_id].startswith("CANCELLED"), states
    assert all(s == "COMPLETED" for j, s in states.items() if j != job_id), states

    # the same command again: only the failed run is submitted; the set is complete, nothing twice
    again = _evaluate(tiny_data, out)
    log2 = _finish(again)
    assert again.returncode == 0, log2
    assert "submitted 1 run(s) as job array" in log2, log2
    after = records_by_key(out)
    assert sorted(after) == sorted(records), log2  # no missing run, no extra one
    assert all(r["status"] == "ok" for r in after.values()), log2
    assert {k: r["finished_at"] for k, r in after.items() if k != key} == {
        k: r["finished_at"] for k, r in records.items() if k != key
    }  # the two ok runs were not run again
    assert len({r["seed"] for r in after.values()}) == SEEDS
    (array2,) = _arrays(log2)
    # submitit sends a batch of one as a plain job (id N), not an array (N_0)
    assert list(_wait_for_sacct([array2], 1).values()) == ["COMPLETED"]
    assert not list((out / "claims").glob("*.claim")), "claims must be released (or taken over)"


@pytest.mark.slow
def test_two_submitting_commands_at_once_train_each_run_once(tiny_data, tmp_path):
    out = tmp_path / "out"
    procs = [_evaluate(tiny_data, out), _evaluate(tiny_data, out)]
    logs = [_finish(p) for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log
        assert f"{SEEDS} run(s) ok, 0 failed" in log, log
    records = records_by_key(out)
    assert len(records) == SEEDS and all(r["status"] == "ok" for r in records.values())
    # each run was trained by exactly one job; the other command's job (if it submitted one) skipped it
    both = "\n".join(logs)
    for seed in range(SEEDS):
        trained = [ln for ln in both.splitlines() if f" seed={seed} " in ln and ": ok (job " in ln]
        assert len(trained) == 1, both
    arrays = [a for log in logs for a in _arrays(log)]
    assert arrays, both
    states = _wait_for_sacct(arrays, SEEDS * len(arrays))
    assert len(states) == SEEDS * len(arrays) and all(s == "COMPLETED" for s in states.values()), states
    assert not list((out / "claims").glob("*.claim"))
