"""One protocol loop: the sequential ``evaluate``, local workers and Slurm stages walk the same plan
(benchmark.runs.protocol) and settle runs by the same rules. Training is replaced by a fake that writes a
record at once, so these tests check the protocol, not the OpenMMLab runs (tests/test_sweep.py and
tests/test_scale.py train for real)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import pytest

import benchmark.runs as run_mod
from benchmark.backbones import parse_spec
from benchmark.runs import RunOptions, evaluate, record_identity
from benchmark.runs.claims import claim_path, try_claim
from benchmark.runs.protocol import Sweep, collect, scan, settled
from benchmark.runs.records import write_record
from tasks.registry import get_task

SEARCHED = replace(get_task("rsna_linear_10"), lr_grid=(3e-2, 1e-3))
FIXED = get_task("rsna_yolov3_frozen_10")  # no grid: its final runs depend on nothing
OPTIONS = RunOptions(max_epochs=1, progress=False)


def fake_execute(run, out_dir, options):
    """A record at once: the search run at lr 1e-3 and every run of seed 7 fail, the others score by lr."""
    ok = not (run.phase == "lr_search" and run.lr == 1e-3) and run.seed != 7
    record = {**record_identity(run, "ok" if ok else "failed"), "primary_metric": "dice", "wall_time_s": 0}
    if ok:
        score = {3e-2: 0.5, 1e-3: 0.6}.get(run.lr, 0.3) + run.seed / 1000
        record |= {"val_score": score, "test_score": score / 2}
    else:
        record["reason"] = "RuntimeError: fake failure"
    write_record(run.path, record)
    return record


def as_stored(records: list[dict]) -> list[dict]:
    return json.loads(json.dumps(records))


@pytest.fixture
def executed(monkeypatch) -> list[str]:
    keys: list[str] = []
    monkeypatch.setattr(run_mod, "execute", lambda run, *a: keys.append(run.key) or fake_execute(run, *a))
    return keys


def test_every_executor_walks_the_same_protocol(data_root, tmp_path, executed):
    from benchmark.executors.local import work
    from benchmark.executors.slurm import SlurmSettings, run_slurm

    tasks, seeds = (SEARCHED, FIXED), (0, 7)
    lines: list[str] = []
    sequential = evaluate(
        "resnet18.random", [*tasks], data_root, tmp_path / "s", [*seeds], options=OPTIONS, echo=lines.append
    )
    sequential = as_stored(sequential)
    assert "    rsna_linear_10: learning rate 0.03 chosen on validation" in lines
    assert [(r["task"], r["phase"], r["seed"], r["lr"]) for r in sequential] == [
        (SEARCHED.id, "lr_search", 1000, 3e-2),
        (SEARCHED.id, "lr_search", 1000, 1e-3),
        (SEARCHED.id, "final", 0, 3e-2),
        (SEARCHED.id, "final", 7, 3e-2),
        (FIXED.id, "final", 0, FIXED.lr),
        (FIXED.id, "final", 7, FIXED.lr),
    ]
    assert executed == [r["key"] for r in sequential]  # trained in plan order, each once

    workers = Sweep("resnet18.random", tasks, str(data_root), str(tmp_path / "w"), seeds, options=OPTIONS)
    executed.clear()
    assert work(workers, "sweep1", "w1", echo=lines.append, poll_s=0.01) == 6
    assert collect(workers, "sweep1") == sequential
    assert executed == [r["key"] for r in sequential]

    slurm = replace(workers, out_dir=str(tmp_path / "slurm"))
    settings = SlurmSettings(folder=str(tmp_path / "submitit"), cluster="debug")
    lines.clear()
    assert run_slurm(slurm, settings, echo=lines.append, poll_s=0.01) == sequential
    stages = [line for line in lines if "as job array" in line]
    assert [s.split(":")[0] for s in stages] == [
        "stage 1 (lr search, fixed-lr tasks)",
        "stage 2 (final seeds)",
    ]
    # stage 1: the search runs and the fixed-lr task's finals; stage 2: the finals at the chosen lr
    assert "submitted 4 run(s)" in stages[0] and "submitted 2 run(s)" in stages[1]


def test_stage_one_is_what_depends_on_nothing(data_root, tmp_path):
    sweep = Sweep("resnet18.random", (SEARCHED, FIXED), str(data_root), str(tmp_path), (0,), options=OPTIONS)
    state = scan(sweep, parse_spec("resnet18.random"), lambda run: None)
    assert [(r.task.id, r.phase, r.lr) for r in state.ready] == [
        (SEARCHED.id, "lr_search", 3e-2),
        (SEARCHED.id, "lr_search", 1e-3),
        (FIXED.id, "final", FIXED.lr),
    ]
    assert state.left == sweep.total() == 4 and state.records == []


def test_a_failed_run_of_an_earlier_sweep_is_retried_by_every_executor(data_root, tmp_path, executed):
    from benchmark.executors.local import work

    sweep = Sweep("resnet18.random", (FIXED,), str(data_root), str(tmp_path), (0, 7), options=OPTIONS)
    evaluate("resnet18.random", [FIXED], data_root, tmp_path, [0, 7], options=OPTIONS, echo=lambda *a: None)
    assert len(executed) == 2
    evaluate("resnet18.random", [FIXED], data_root, tmp_path, [0, 7], options=OPTIONS, echo=lambda *a: None)
    assert len(executed) == 3 and executed[2] == executed[1]  # seed 7 failed: retried, seed 0 skipped
    assert work(sweep, "sweep2", "w1", echo=lambda *a: None, poll_s=0.01) == 1
    assert executed[3] == executed[1]


def test_a_worker_does_not_retrain_a_run_another_process_failed_while_it_waited(
    data_root, tmp_path, executed
):
    """As in ``evaluate`` waiting for a claim: the other process's failed record settles the run."""
    from benchmark.executors.local import work

    sweep = Sweep("resnet18.random", (FIXED,), str(data_root), str(tmp_path), (0, 1), options=OPTIONS)
    (held, free) = scan(sweep, parse_spec("resnet18.random"), lambda run: None).ready
    other = try_claim(claim_path(tmp_path, held.key), heartbeat_s=0, worker="another evaluate")
    done = {}
    worker = threading.Thread(
        target=lambda: done.update(n=work(sweep, "sweep3", "w1", lambda *a: None, poll_s=0.01))
    )
    worker.start()
    deadline = time.time() + 60
    while free.key not in executed and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the worker waits for the held run
    assert executed == [free.key]
    write_record(held.path, {**record_identity(held, "failed"), "reason": "RuntimeError: elsewhere"})
    other.release()
    worker.join(timeout=60)
    assert not worker.is_alive() and done["n"] == 1
    assert executed == [free.key]  # the held run was not trained again
    assert settled(held, tmp_path, "sweep3")["reason"] == "RuntimeError: elsewhere"
    assert [r["seed"] for r in collect(sweep, "sweep3")] == [0, 1]
