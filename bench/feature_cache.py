"""Frozen linear and frozen YOLOv3 epoch time with vs without the feature cache, side by side.

    python -m bench.feature_cache [--backbone resnet50.random] [--epochs 2] [--n 60] [--work DIR]

Each task is trained twice in this process through the same code as ``cxrbench evaluate`` (same seed,
same data, same batch size): once running the encoder on every batch, once on cached features. An epoch
is one pass over the training subset plus the validation pass; the figure is the median over the epochs
after the first. The one-off cost of building the cache (paid once per backbone, dataset, subset and
normalisation; shared by every learning rate and, for a file / ImageNet backbone, every seed) is printed
separately, with the whole-run ratio including it.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from bench.common import fake_data, machine, median, timed_run, today


def flop_bound(task_id: str, backbone: str, data, work: Path, batch: int) -> dict:
    """FLOPs of one training step per image, and of the encoder's forward pass within it: the
    cache removes the latter, so total / (total - encoder) bounds the speed-up of the training compute."""
    from mmengine.runner import Runner
    from torch.utils.flop_counter import FlopCounterMode

    from benchmark import openmmlab
    from benchmark.backbones import parse_spec
    from benchmark.runs import RunOptions, plan_run, resolve
    from tasks.registry import get_task

    options = RunOptions(max_epochs=1, batch_size=batch, progress=False)
    run = plan_run(get_task(task_id), parse_spec(backbone), data, work / "flops", 0, None, options)
    cfg = openmmlab.build_config(run.task, resolve(run, work / "flops", options, f"flops-{task_id}"))
    runner = Runner.from_cfg(cfg)
    model = runner.model
    batch_data = model.data_preprocessor(next(iter(runner.build_dataloader(cfg.train_dataloader))), True)
    n = len(batch_data["data_samples"])
    with FlopCounterMode(display=False) as counter:
        model.backbone(batch_data["inputs"])
    encoder = counter.get_total_flops() / n
    with FlopCounterMode(display=False) as counter:
        loss, _ = model.parse_losses(model(**batch_data, mode="loss"))
        loss.backward()
    total = counter.get_total_flops() / n
    return {
        "encoder_gflop": encoder / 1e9,
        "step_gflop": total / 1e9,
        "bound": total / max(total - encoder, 1.0),
    }


def measure(task_id: str, backbone: str, data, work: Path, epochs: int, batch: int) -> dict:
    from benchmark.runs import RunOptions
    from tasks.registry import get_task

    task = replace(get_task(task_id), patience=epochs + 1)  # no early stop during the measurement
    result = {}
    shutil.rmtree(work / f"cache-{task_id}", ignore_errors=True)  # the build is part of the measurement
    for mode in ("encoder", "cached"):
        options = RunOptions(
            max_epochs=epochs,
            batch_size=batch,
            progress=False,
            feature_cache=str(work / f"cache-{task_id}") if mode == "cached" else None,
        )
        outcome, timer, wall = timed_run(task, backbone, data, work / f"{mode}-{task_id}", options)
        epochs_s = [t + v for t, v in zip(timer.train, timer.val)]
        result[mode] = {
            "epoch_s": median(epochs_s[1:] or epochs_s),
            "train_s": median(timer.train[1:] or timer.train),
            "val_s": median(timer.val[1:] or timer.val),
            "wall_s": wall,
            "cache": outcome.feature_cache,
            "val": outcome.val,
        }
    enc, cac = result["encoder"], result["cached"]
    result["epoch_ratio"] = enc["epoch_s"] / cac["epoch_s"]
    result["run_ratio"] = enc["wall_s"] / cac["wall_s"]
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet50.random", help="the protocol's architecture by default")
    p.add_argument("--epochs", type=int, default=2, help="the figure is the median over epochs 2..N")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--n", type=int, default=60, help="fake RSNA images")
    p.add_argument("--work", default=None, help="working folder (default: a temporary one, removed)")
    args = p.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="cxrbench-bench-"))
    try:
        data = fake_data(work, args.n)
        print(f"feature cache bench, {today()}, {machine()}")
        print(
            f"backbone {args.backbone}, {args.epochs} epochs, batch {args.batch_size}, fake RSNA ({args.n} images)"
        )
        lines = []
        for task_id, goal in (("rsna_linear_100", 20), ("rsna_yolov3_frozen_100", 5)):
            r = measure(task_id, args.backbone, data, work, args.epochs, args.batch_size)
            flops = flop_bound(task_id, args.backbone, data, work, args.batch_size)
            enc, cac = r["encoder"], r["cached"]
            cache = cac["cache"]
            line = (
                f"{task_id:<24} epoch {enc['epoch_s']:6.2f} s -> {cac['epoch_s']:6.2f} s: "
                f"{r['epoch_ratio']:5.1f}x faster (goal >= {goal}x); train part {enc['train_s'] / cac['train_s']:.1f}x, "
                f"val part {enc['val_s'] / cac['val_s']:.1f}x; cache {cache['size']} built in {cache['seconds']:.1f} s; "
                f"whole first run incl. build {r['run_ratio']:.1f}x; val loss {enc['val'].get('loss', 0):.4f} vs "
                f"{cac['val'].get('loss', 0):.4f}; compute per image: encoder forward {flops['encoder_gflop']:.1f} "
                f"of {flops['step_gflop']:.1f} GFLOP per training step, so at most {flops['bound']:.3g}x from FLOPs"
            )
            print(line, flush=True)
            lines.append(line)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
