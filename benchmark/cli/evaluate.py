"""``cxrbench evaluate``: train and test heads on a backbone, one JSON record per run, and the console
summary of the records. The sweep itself is :func:`benchmark.runs.evaluate` (sequential) or
:func:`benchmark.executors.scale.evaluate_scaled` (local workers, Slurm); the scaling options are checked
and set up by :func:`benchmark.executors.scale.launcher_setup`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from benchmark.cli.args import COUNT, POSITIVE_INT, number
from tasks.registry import TRAIN_LOSSES


def add_parser(sub: argparse._SubParsersAction) -> None:
    from tasks.registry import MAX_SIZE

    e = sub.add_parser("evaluate", help="train and test heads on a backbone; one JSON record per run")
    e.add_argument(
        "--backbone",
        required=True,
        help="resnet50.random | resnet50.imagenet | path/to/weights | FORMAT:path | timm:NAME[:path] "
        "(see `cxrbench backbones`)",
    )
    e.add_argument(
        "--tasks",
        required=True,
        help="comma-separated task ids, dataset names, prefixes of ids (rsna_yolov3, covid), 'all', or task files (my_task.toml)",
    )
    e.add_argument("--data", required=True, help="data root holding prepared datasets (the --out of prepare)")
    e.add_argument(
        "--out", required=True, help="output folder; records go to OUT/runs/<backbone>/<task>/<key>.json"
    )
    e.add_argument(
        "--seeds", type=POSITIVE_INT, default=5, help="number of seeds per task (default 5, the protocol)"
    )
    e.add_argument("--first-seed", type=COUNT, default=0, help="seeds are FIRST..FIRST+N-1 (default 0)")
    e.add_argument(
        "--lr",
        type=number(float, 0.0, 10.0, low_open=True),
        default=None,
        help="one learning rate for every task (skips the lr search)",
    )
    e.add_argument(
        "--no-lr-search", action="store_true", help="use each task's default lr instead of searching its grid"
    )
    e.add_argument(
        "--search-seed", type=COUNT, default=1000, help="seed of the lr-search runs (default 1000)"
    )
    e.add_argument(
        "--max-epochs", type=COUNT, default=None, help="override the epoch budget (0 = test the untrained head)"
    )
    e.add_argument("--batch-size", type=POSITIVE_INT, default=None, help="override the task's batch size")
    e.add_argument(
        "--size",
        type=number(int, 32, MAX_SIZE),
        default=None,
        help="image side in px instead of the task's (224, the protocol); reads data prepared with the same --size",
    )
    e.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    e.add_argument(
        "--loader-workers", type=COUNT, default=None, help="data-loader processes per run (default 0 on CPU)"
    )
    e.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    e.add_argument(
        "--train-limit",
        type=POSITIVE_INT,
        default=None,
        metavar="N",
        help="train on the first N images only (smoke tests)",
    )
    e.add_argument(
        "--train-loss",
        choices=list(TRAIN_LOSSES),
        default=TRAIN_LOSSES[0],
        help="training loss: the protocol's (mmdet's YOLOv3 loss, mean of per-class Dice losses) or LoVT's own "
        "(its YOLOv3Loss, Dice pooled over classes); recorded in the record's overrides (default protocol)",
    )
    e.add_argument("--keep-checkpoints", action="store_true", help="keep the .pth files of each run")
    e.add_argument("--verbose", action="store_true", help="mmengine's INFO log on the console")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    add_scale_arguments(e)
    e.set_defaults(func=cmd_evaluate)


def add_scale_arguments(e: argparse.ArgumentParser) -> None:
    """The feature-cache, executor / launcher and Slurm options (checked by
    :func:`benchmark.executors.scale.launcher_setup`)."""
    c = e.add_argument_group("feature cache (frozen tasks)")
    c.add_argument(
        "--no-feature-cache",
        action="store_true",
        help="frozen tasks run the encoder on every batch instead of training on cached features",
    )
    c.add_argument(
        "--feature-cache",
        default=None,
        metavar="DIR",
        help="cache folder (default: $CXRBENCH_FEATURE_CACHE, else OUT/feature_cache)",
    )
    c.add_argument(
        "--feature-cache-dtype",
        choices=["float16", "float32"],
        default="float16",
        help="storage type of cached features (default float16: half the size; metrics agree to ~1e-3)",
    )
    x = e.add_argument_group("scaling out")
    x.add_argument(
        "--executor",
        choices=["local", "slurm"],
        default="local",
        help="local: worker processes on this machine; slurm: job arrays through submitit",
    )
    x.add_argument(
        "--workers", type=int, default=1, help="local executor: parallel worker processes pulling runs"
    )
    x.add_argument(
        "--launcher",
        choices=["none", "pytorch"],
        default="none",
        help="pytorch: each run spans the processes of `torchrun --nproc-per-node N -m benchmark.cli ...` (DDP)",
    )
    s = e.add_argument_group("slurm executor (one run per job, job arrays)")
    s.add_argument("--slurm-partition", default=None)
    s.add_argument(
        "--slurm-time", type=int, default=240, metavar="MIN", help="time limit per job (default 240)"
    )
    s.add_argument(
        "--slurm-gpus",
        type=int,
        default=1,
        help="GPUs per job (default 1; 0: CPU jobs); a job runs one run on one GPU",
    )
    s.add_argument("--slurm-cpus", type=int, default=8, help="CPUs per job (default 8)")
    s.add_argument("--slurm-mem", type=int, default=None, metavar="GB", help="memory per job")
    s.add_argument("--slurm-account", default=None)
    s.add_argument("--slurm-qos", default=None)
    s.add_argument(
        "--slurm-array-parallelism",
        type=int,
        default=64,
        help="jobs of an array running at once (default 64)",
    )
    s.add_argument("--slurm-folder", default=None, help="submitit logs and pickles (default OUT/slurm)")
    s.add_argument(
        "--slurm-cluster",
        choices=["slurm", "local", "debug"],
        default="slurm",
        help="local / debug: submitit runs the jobs on this machine (to try a sweep out)",
    )


def cmd_evaluate(args) -> int:
    from benchmark.backbones import BackboneError
    from benchmark.runs import RunOptions, default_num_workers, evaluate
    from tasks.custom import prepare_task_files, resolve_tasks
    from tasks.errors import DatasetError

    try:
        tasks, custom = resolve_tasks(args.tasks)
        if args.size is not None:
            tasks = [dataclasses.replace(t, size=args.size) for t in tasks]
        prepare_task_files(custom, args.data, size=args.size, progress=not args.quiet)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    except (DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.seeds < 1:
        print("error: --seeds must be >= 1", file=sys.stderr)
        return 2
    from benchmark.executors.scale import evaluate_scaled, launcher_setup

    problem = launcher_setup(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    options = RunOptions(
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        device=args.device,
        num_workers=default_num_workers(args.device) if args.loader_workers is None else args.loader_workers,
        amp=args.amp,
        train_limit=args.train_limit,
        keep_checkpoints=args.keep_checkpoints,
        verbose=args.verbose,
        progress=not args.quiet and args.rank == 0 and args.workers == 1,
        feature_cache=None if args.no_feature_cache else str(args.feature_cache_dir),
        feature_cache_dtype=args.feature_cache_dtype,
        launcher=args.launcher,
        train_loss=args.train_loss,
    )
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    echo = print if args.rank == 0 else (lambda *a, **k: None)
    try:
        if args.executor == "local" and args.workers == 1:
            records = evaluate(
                args.backbone,
                tasks,
                args.data,
                args.out,
                seeds=seeds,
                lr=args.lr,
                options=options,
                lr_search=not args.no_lr_search,
                search_seed=args.search_seed,
                echo=echo,
            )
            missing = 0
        else:
            records, missing = evaluate_scaled(args, tasks, seeds, options)
    except (BackboneError, FileNotFoundError, ValueError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.rank == 0:
        if not args.no_feature_cache:
            from benchmark.runs.feature_store import FeatureStore, human_bytes

            total = FeatureStore(args.feature_cache_dir).total_bytes()
            if total:
                print(f"feature cache {args.feature_cache_dir}: {human_bytes(total)} in all")
        print_summary(records, Path(args.out))
        if missing:
            print(f"{missing} run(s) have no record yet: start the same command again to finish the sweep")
    return 1 if missing or any(r["status"] != "ok" for r in records) else 0


def print_summary(records: list[dict], out: Path) -> None:
    """Console table: per task, mean / population std / 95 % CI of the final runs, in %."""
    from benchmark.runs import summarize

    failed = [r for r in records if r["status"] != "ok"]
    print(f"\n{len(records) - len(failed)} run(s) ok, {len(failed)} failed; records under {out / 'runs'}")
    print(f"{'task':<28} {'metric':<7} {'lr':>8} {'n':>3} {'mean %':>8} {'std %':>7}  95% CI")
    for row in summarize(records):
        lo, hi = row["ci95"]
        ci = f"[{lo:.2f}, {hi:.2f}]" if row["n"] > 1 else "-"
        fail = f"  ({row['failed']} failed)" if row["failed"] else ""
        print(
            f"{row['task']:<28} {row['metric']:<7} {row['lr']:>8g} {row['n']:>3} {row['mean']:>8.2f} {row['std']:>7.2f}  {ci}{fail}"
        )
    for r in failed:
        print(f"FAILED {r['task']} seed={r['seed']} lr={r['lr']:g}: {r.get('reason')}")
