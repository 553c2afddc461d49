"""Local worker sweeps (benchmark.executors.local): killed with SIGKILL and restarted, and through the CLI."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.executors.reference import assert_same_records
from tests.support.records import records_by_key

REPO = Path(__file__).resolve().parents[2]


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
    while len(records_by_key(out)) < after_records and killed.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(delay)
    if killed.poll() is None:
        os.killpg(killed.pid, signal.SIGKILL)  # the sweep and its workers, without any chance to clean up
    killed.wait()
    delay = (after_records, delay)
    before = records_by_key(out)
    restarted = _sweep(data_root, out, 2, cache_dir)
    log, _ = restarted.communicate(timeout=600)
    assert restarted.returncode == 0, log
    after = records_by_key(out)
    assert_same_records(after, reference)
    # the restart ran exactly the runs that were missing, each once, sharing them between both workers
    ran = [line.rsplit("/", 1)[-1].removesuffix(".json") for line in log.splitlines() if " -> " in line]
    assert sorted(ran) == sorted(set(after) - set(before)), (delay, log)
    assert not list((out / "claims").glob("*.claim")), "claims must be released"


@pytest.mark.slow
def test_cli_local_workers(data_root, reference, cache_dir, tmp_path, cli):
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
    both = cli(*common, "--executor", "slurm", "--workers", "2")
    assert both.code == 2
    assert "--workers is for the local executor" in both.err
    if shutil.which("sbatch") is None:
        no_slurm = cli(*common, "--executor", "slurm")
        assert no_slurm.code == 2
        assert "no Slurm here" in no_slurm.err
    workers = cli(*common, "--workers", "2")
    assert workers.code == 0
    out = workers.out
    assert "on 2 local worker(s)" in out and "2 run(s) ok, 0 failed" in out
    records = records_by_key(tmp_path / "out")
    assert sorted(r["seed"] for r in records.values()) == [0, 1]
    assert all(r["feature_cache"]["root"] == str(cache_dir) for r in records.values())
