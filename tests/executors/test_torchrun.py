"""One run over two processes with torchrun (gloo, CPU): one record, the schema of a one-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.records import records_by_key

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


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
    (record,) = records_by_key(out).values()
    single = next(iter(reference.values()))
    assert set(record) == set(single)  # the same record schema as a one-process run
    assert record["status"] == "ok" and record["world_size"] == 2 and single["world_size"] == 1
    assert record["batch_size"] == 2 and record["batch_size_per_process"] == 1
    assert record["lr"] == 1e-3 and record["lr_source"] == "given" and 0 <= record["test_score"] <= 1
    assert not [p for p in (out / "runs").rglob("*") if p.is_file() and p.suffix != ".json"]
