"""The training loss, the protocol's vs LoVT's own (``--train-loss``), side by side on generated data.

    python -m bench.train_loss [--seeds 3] [--size 64] [--epochs 6] [--tasks ...] [--work DIR]

Trains heads on the demo's random-init ResNet-18 on generated RSNA (``rsna_yolov3_frozen_100``: mmdet's
YOLOv3 loss vs LoVT's YOLOv3Loss) and generated NIH (``nih_linear``, the protocol's NIH task: the mean of the
8 per-class Dice losses vs LoVT's Dice pooled over the classes), each seed once with each loss (paired: same
seed, same data, same initialisation), and prints per task the test metric of both, the per-seed
differences (LoVT - protocol, in points) and their mean and standard deviation. Frozen tasks train on cached
features (minutes on 2 shared cores); ``--tasks`` also takes ``rsna_yolov3_finetune_100`` and
``nih_unet_finetune`` (NIH's data under a finetuned U-Net head, not a protocol task), which cost about 4 min
per run at 64 px on 2 busy cores. docs/protocol.md's "Where cxrbench knowingly differs from LoVT's code" table
quotes these numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import machine, today
from tasks.registry import TRAIN_LOSSES

TASKS = ("rsna_yolov3_frozen_100", "nih_linear")


def tasks_for(ids, size: int):
    from tasks.registry import select_tasks

    nih = select_tasks("nih_linear")[0]
    chosen = []
    for task_id in ids:
        if task_id == "nih_unet_finetune":  # not a protocol task: NIH's data under a finetuned U-Net head
            task = dataclasses.replace(nih, id=task_id, head="unet", frozen=False, lr=1e-4, lr_grid=())
        else:
            task = select_tasks(task_id)[0]
        chosen.append(dataclasses.replace(task, size=size))
    return chosen


def prepare_data(work: Path, size: int) -> Path:
    from tasks.fakes import FAKES
    from tasks.prepare import prepare, prepared_dir

    for name, sizes in (("rsna", {"n_patients": 100, "size": 256}), ("nih", {"n_patients": 60, "size": 128})):
        if (prepared_dir(work / "data", name, size) / "manifest.json").exists():
            continue
        raw = FAKES[name](work / "raw" / name, seed=0, **sizes)
        report = prepare(name, raw, work / "data", size=size, workers=2, progress=False)
        if report.failures:
            raise SystemExit(f"preparing the generated {name} data failed: {report.failures[0]}")
    return work / "data"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args(argv)

    from benchmark.backbones import parse_spec
    from benchmark.demo import DEMO_BACKBONE
    from benchmark.runs import RunOptions, evaluate
    from tasks.registry import scaled_unet_widths

    work = args.work or Path(tempfile.mkdtemp(prefix="cxrbench-train-loss-"))
    started = time.time()
    data = prepare_data(work, args.size)
    tasks = tasks_for(args.tasks.split(","), args.size)
    seeds = list(range(args.seeds))
    widths = scaled_unet_widths(parse_spec(DEMO_BACKBONE).channels[5])
    print(
        f"{today()} on {machine()}: {DEMO_BACKBONE}, {args.size} px, {args.epochs} epochs, batch "
        f"{args.batch_size}, seeds {seeds}, default lr, U-Net widths {'/'.join(map(str, widths))}; work {work}"
    )
    scores: dict[tuple[str, str], dict[int, float]] = {}
    for loss in TRAIN_LOSSES:
        options = RunOptions(
            max_epochs=args.epochs,
            batch_size=args.batch_size,
            progress=False,
            unet_widths=widths,
            feature_cache=str(work / "feature_cache"),
            train_loss=loss,
        )
        records = evaluate(
            DEMO_BACKBONE, tasks, data, work / loss, seeds=seeds, lr_search=False, options=options,
            echo=lambda *a: None,
        )
        for r in records:
            if r["status"] != "ok":
                raise SystemExit(f"{r['task']} seed {r['seed']} ({loss}) failed: {r.get('error')}")
            if loss == "lovt" and r["overrides"].get("train_loss") != "lovt":
                raise SystemExit(f"{r['task']}: the record does not say train_loss=lovt: {r['overrides']}")
            scores.setdefault((r["task"], loss), {})[r["seed"]] = 100 * r["test_score"]
    print(f"{'task':28s} {'protocol':>18s} {'lovt':>18s}  lovt - protocol per seed (points)  mean +- sd")
    for t in tasks:
        p, q = scores[(t.id, "protocol")], scores[(t.id, "lovt")]
        diffs = [q[s] - p[s] for s in seeds]
        sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
        print(
            f"{t.id:28s} {statistics.mean(p.values()):8.2f} +- {statistics.pstdev(p.values()):5.2f} "
            f"{statistics.mean(q.values()):8.2f} +- {statistics.pstdev(q.values()):5.2f}  "
            f"{' '.join(f'{d:+.2f}' for d in diffs):34s} {statistics.mean(diffs):+.2f} +- {sd:.2f}"
        )
    print(f"took {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
