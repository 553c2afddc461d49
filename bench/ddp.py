"""DDP on CPU: one finetuning run over 2 processes (torchrun, gloo) vs 1 process, 1 thread each.

    python -m bench.ddp [--epochs 2] [--work DIR]

A finetuned YOLOv3 on a random ResNet-18 (every weight trains after a 2-step warm-up, so the gradient
all-reduce covers the whole network) is trained with the task's total batch (8) in one process, then under
``torchrun --nproc-per-node 2`` with 4 images per process; every process has one thread (torchrun's
default). The ideal is a 2x shorter epoch; what is missing is what DDP costs on CPU (gradient all-reduce
through gloo, duplicated Python work, uneven shards). The script also checks that both ranks end training
with identical encoder weights (the warm-up leaves the encoder out of the graph for its first steps).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from bench.common import fake_data, machine, median, timed_run, today

BATCH = 8


def _checksum_hook() -> str:
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    class BenchEncoderChecksum(Hook):
        """After training (before the best checkpoint is loaded): each rank's encoder weights checksum."""

        priority = "VERY_LOW"
        sums: list[float] = []

        def after_train(self, runner):
            import torch
            import torch.distributed as dist

            model = runner.model.module if hasattr(runner.model, "module") else runner.model
            total = sum(p.detach().double().sum() for p in model.backbone.encoder.parameters())
            mine = torch.tensor([float(total)], dtype=torch.float64)
            if dist.is_initialized():
                gathered = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
                dist.all_gather(gathered, mine)
                BenchEncoderChecksum.sums = [float(g) for g in gathered]
            else:
                BenchEncoderChecksum.sums = [float(mine)]

    HOOKS.register_module(name="BenchEncoderChecksum", module=BenchEncoderChecksum, force=True)
    return "BenchEncoderChecksum"


def child(data: str, work: str, epochs: int) -> None:
    """One measured run (under torchrun when WORLD_SIZE is set); rank 0 prints a JSON line."""
    import torch

    from benchmark.runs import RunOptions
    from tasks.registry import get_task

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
    else:
        torch.set_num_threads(1)  # as torchrun sets it for each process (OMP_NUM_THREADS=1)
    task = replace(get_task("rsna_yolov3_finetune_100"), warmup_steps=2, patience=epochs + 1)
    options = RunOptions(
        max_epochs=epochs,
        batch_size=BATCH // world,
        progress=False,
        launcher="pytorch" if world > 1 else "none",
    )
    name = _checksum_hook()
    outcome, timer, wall = timed_run(
        task, "resnet18.random", data, Path(work) / f"ddp-{world}", options, hooks=[dict(type=name)]
    )
    from mmengine.registry import HOOKS

    sums = HOOKS.get(name).sums
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        epochs_s = [t + v for t, v in zip(timer.train, timer.val)]
        print(
            "RESULT "
            + json.dumps(
                {
                    "world": world,
                    "train_s": median(timer.train[1:] or timer.train),
                    "epoch_s": median(epochs_s[1:] or epochs_s),
                    "iterations": outcome.iterations,
                    "checksums": sums,
                }
            ),
            flush=True,
        )
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


def _result(output: str) -> dict:
    for line in output.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"no result in the output:\n{output[-3000:]}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--n", type=int, default=60, help="fake RSNA images")
    p.add_argument("--work", default=None)
    p.add_argument("--child", nargs=2, metavar=("DATA", "WORK"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], args.epochs)
        return 0
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="cxrbench-bench-"))
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo), CUDA_VISIBLE_DEVICES="", CXRBENCH_OFFLINE="1")
    try:
        data = fake_data(work, args.n)
        common = ["-m", "bench.ddp", "--epochs", str(args.epochs), "--child", str(data), str(work)]
        one = subprocess.run([sys.executable, *common], env=env, capture_output=True, text=True, cwd=repo)
        torchrun = [
            str(Path(sys.executable).parent / "torchrun"),
            "--nproc-per-node",
            "2",
            "--master-port",
            "29731",
        ]
        two = subprocess.run([*torchrun, *common], env=env, capture_output=True, text=True, cwd=repo)
        r1, r2 = _result(one.stdout + one.stderr), _result(two.stdout + two.stderr)
        in_sync = len(set(r2["checksums"])) == 1
        print(f"DDP bench, {today()}, {machine()}")
        speedup = r1["epoch_s"] / r2["epoch_s"]
        print(
            f"finetuned YOLOv3 / ResNet-18, total batch {BATCH}, 1 thread per process: epoch {r1['epoch_s']:.1f} s "
            f"in 1 process, {r2['epoch_s']:.1f} s in 2 processes (torchrun, gloo): {speedup:.2f}x faster (ideal 2x, "
            f"parallel efficiency {50 * speedup:.0f} %, training part {r1['train_s'] / r2['train_s']:.2f}x); "
            f"iterations {r1['iterations']} vs {r2['iterations']}; encoder weights identical on both ranks: {in_sync}"
        )
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
