"""A sweep of small runs with 2 local workers vs 1, side by side.

    python -m bench.workers [--seeds 2] [--work DIR]

The same sweep (a frozen linear task on a random ResNet-18: an lr search over 4 values, then 2 final
seeds; 1 epoch, batch 2) is run by ``run_local`` with 1 worker and with 2, each into a fresh output
folder, and the wall times compared. Each worker uses cores / workers threads; small runs spend much of
their time in single-threaded Python (building the Runner, hooks, data loading, metrics), which a second
worker overlaps.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.common import fake_data, machine, today


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=2, help="final seeds (the sweep has 4 + seeds runs)")
    p.add_argument("--n", type=int, default=60, help="fake RSNA images")
    p.add_argument("--work", default=None)
    args = p.parse_args(argv)
    from benchmark.executors.local import Sweep, run_local
    from benchmark.runs import RunOptions
    from tasks.registry import get_task

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="cxrbench-bench-"))
    try:
        data = fake_data(work, args.n)
        grid = (3e-2, 1e-2, 3e-3, 1e-3)
        tasks = (replace(get_task("rsna_linear_10"), lr_grid=grid),)
        options = RunOptions(max_epochs=1, batch_size=2, progress=False)
        seconds = {}
        for workers in (1, 2):
            out = work / f"sweep-{workers}w"
            shutil.rmtree(out, ignore_errors=True)
            sweep = Sweep(
                "resnet18.random", tasks, str(data), str(out), tuple(range(args.seeds)), options=options
            )
            started = time.perf_counter()
            records = run_local(sweep, workers, echo=lambda *a: None, quiet_workers=True)
            seconds[workers] = time.perf_counter() - started
            assert len(records) == sweep.total() and all(r["status"] == "ok" for r in records)
        n = 4 + args.seeds
        print(f"local workers bench, {today()}, {machine()}")
        print(
            f"sweep of {n} small runs: 1 worker {seconds[1]:.1f} s, 2 workers {seconds[2]:.1f} s: "
            f"{seconds[1] / seconds[2]:.2f}x faster with 2 workers"
        )
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
