"""The ``cxrbench`` command line: a thin face over ``tasks``, ``benchmark`` (and later ``pretrain``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _cmd_doctor(args) -> int:
    from benchmark.doctor import collect, format_report

    report = collect()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["ok"] else 1


def _cmd_tasks(args) -> int:
    from tasks.registry import TASKS

    if args.json:
        print(json.dumps([t.to_dict() for t in TASKS.values()], indent=2))
        return 0
    print(
        f"{'#':>2}  {'task':<28} {'dataset':<12} {'head':<7} {'mode':<9} {'frac':>4} {'metric':<16} {'batch':>5} {'lr':>7}  lr grid"
    )
    for t in TASKS.values():
        grid = ", ".join(f"{x:g}" for x in t.lr_grid) or "fixed"
        print(
            f"{t.number:>2}  {t.id:<28} {t.dataset:<12} {t.head:<7} {t.mode:<9} {t.label_fraction:>3}% {t.metric:<16} "
            f"{t.batch_size:>5} {t.lr:>7g}  {grid}"
        )
    return 0


def _cmd_fake(args) -> int:
    from tasks.fakes import FAKES

    root = FAKES[args.dataset](args.out, n_patients=args.n, seed=args.seed)
    print(f"fake {args.dataset} download written to {root}")
    return 0


def _cmd_prepare(args) -> int:
    from tasks.errors import DatasetError
    from tasks.prepare import prepare

    try:
        report = prepare(
            args.dataset, args.raw, args.out, size=args.size, workers=args.workers, progress=not args.quiet
        )
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = report.manifest
    print(f"prepared {args.dataset} -> {report.out_dir}")
    print(
        f"  images: {report.prepared} prepared now, {report.resumed} already done; subsets: "
        + ", ".join(f"{k}={v}" for k, v in m["subsets"].items())
    )
    print(f"  split hash {m['split_hash']}")
    for k, v in m["differs_from_release"].items():
        print(f"  note: {k} = {v['found']}, the official release has {v['expected']}")
    if report.failures:
        print(
            f"\n{len(report.failures)} input(s) could not be used (also listed in {report.out_dir / 'manifest.json'}):"
        )
        for f in report.failures:
            print(f"  - {f}")
        if not args.allow_failures:
            print(
                "\nexit code 1: fix the inputs above or pass --allow-failures to accept a dataset without them",
                file=sys.stderr,
            )
            return 1
    return 0


def _cmd_evaluate(args) -> int:
    from benchmark.backbones import BackboneError
    from benchmark.run import RunOptions, default_num_workers, evaluate
    from tasks.registry import select_tasks

    try:
        tasks = select_tasks(args.tasks)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    if args.seeds < 1:
        print("error: --seeds must be >= 1", file=sys.stderr)
        return 2
    from benchmark.scale import evaluate_scaled, launcher_setup

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
        keep_checkpoints=args.keep_checkpoints,
        verbose=args.verbose,
        progress=not args.quiet and args.rank == 0 and args.workers == 1,
        feature_cache=None if args.no_feature_cache else str(args.feature_cache_dir),
        feature_cache_dtype=args.feature_cache_dtype,
        launcher=args.launcher,
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
    except (BackboneError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.rank == 0:
        if not args.no_feature_cache:
            from benchmark.feature_cache import FeatureStore, human_bytes

            total = FeatureStore(args.feature_cache_dir).total_bytes()
            if total:
                print(f"feature cache {args.feature_cache_dir}: {human_bytes(total)} in all")
        print_summary(records, Path(args.out))
        if missing:
            print(f"{missing} run(s) have no record yet: start the same command again to finish the sweep")
    return 1 if missing or any(r["status"] != "ok" for r in records) else 0


def print_summary(records: list[dict], out: Path) -> None:
    """Console table: per task, mean / population std / 95 % CI of the final runs, in %."""
    from benchmark.run import summarize

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


def _cmd_leaderboard(args) -> int:
    from benchmark.leaderboard import LeaderboardError, write_leaderboard
    from tasks.registry import select_tasks

    try:
        tasks = [t.id for t in select_tasks(args.tasks)] if args.tasks else None
        result = write_leaderboard(
            args.runs,
            args.out,
            reference=args.reference or False,
            baseline=args.baseline,
            seeds=args.seeds,
            tasks=tasks,
            plot_backbones=args.plot.split(",") if args.plot else None,
            plots=not args.no_plots,
            alpha=args.alpha,
        )
    except (LeaderboardError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    for w in result.leaderboard.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print("\n".join(result.summary))
    print(f"\nleaderboard written to {result.out_dir}:")
    for f in result.files:
        print(f"  {f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cxrbench", description="Localized downstream benchmark for chest X-ray encoders."
    )
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("doctor", help="check the installation (versions, NMS provider, CUDA, DICOM plugins)")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.set_defaults(func=_cmd_doctor)

    t = sub.add_parser("tasks", help="list the 18 tasks of the protocol")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=_cmd_tasks)

    f = sub.add_parser(
        "fake", help="write a seeded fake raw dataset in the official layout (for trying things out)"
    )
    f.add_argument("dataset", choices=["rsna"])
    f.add_argument("--out", required=True, help="folder to create")
    f.add_argument("--n", type=int, default=40, help="number of images / patients (default 40)")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=_cmd_fake)

    pr = sub.add_parser("prepare", help="raw download -> prepared dataset (PNG, COCO, masks, splits, stats)")
    pr.add_argument("dataset", choices=["rsna"])
    pr.add_argument("--raw", required=True, help="the folder the official download unpacks to (read only)")
    pr.add_argument("--out", required=True, help="data root; the dataset is written to OUT/<dataset>")
    pr.add_argument("--size", type=int, default=224, help="prepared image side in pixels (default 224)")
    pr.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)), help="parallel processes")
    pr.add_argument(
        "--allow-failures", action="store_true", help="exit 0 even if some inputs could not be used"
    )
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=_cmd_prepare)

    e = sub.add_parser("evaluate", help="train and test heads on a backbone; one JSON record per run")
    e.add_argument(
        "--backbone",
        required=True,
        help="resnet50.random | resnet50.imagenet | path/to/weights.{pt,pth,safetensors}",
    )
    e.add_argument("--tasks", required=True, help="comma-separated task ids, dataset names, or 'all'")
    e.add_argument("--data", required=True, help="data root holding prepared datasets (the --out of prepare)")
    e.add_argument(
        "--out", required=True, help="output folder; records go to OUT/runs/<backbone>/<task>/<key>.json"
    )
    e.add_argument("--seeds", type=int, default=5, help="number of seeds per task (default 5, the protocol)")
    e.add_argument("--first-seed", type=int, default=0, help="seeds are FIRST..FIRST+N-1 (default 0)")
    e.add_argument(
        "--lr", type=float, default=None, help="one learning rate for every task (skips the lr search)"
    )
    e.add_argument(
        "--no-lr-search", action="store_true", help="use each task's default lr instead of searching its grid"
    )
    e.add_argument("--search-seed", type=int, default=1000, help="seed of the lr-search runs (default 1000)")
    e.add_argument(
        "--max-epochs", type=int, default=None, help="override the epoch budget (0 = test the untrained head)"
    )
    e.add_argument("--batch-size", type=int, default=None, help="override the task's batch size")
    e.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    e.add_argument(
        "--loader-workers", type=int, default=None, help="data-loader processes per run (default 0 on CPU)"
    )
    e.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    e.add_argument("--keep-checkpoints", action="store_true", help="keep the .pth files of each run")
    e.add_argument("--verbose", action="store_true", help="mmengine's INFO log on the console")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    from benchmark.scale import add_arguments

    add_arguments(e)
    e.set_defaults(func=_cmd_evaluate)

    lb = sub.add_parser(
        "leaderboard", help="records -> per-task CSVs, the wide table, Markdown, HTML, plots, significance"
    )
    lb.add_argument(
        "--runs",
        action="append",
        required=True,
        metavar="DIR",
        help="a runs/ folder or an --out folder of `evaluate` (repeat to merge several)",
    )
    lb.add_argument(
        "--out", required=True, help="folder for leaderboard.csv, tasks/<task>.csv, .md, .html, plots/"
    )
    lb.add_argument(
        "--reference",
        nargs="?",
        const=True,
        default=None,
        metavar="PATH",
        help="add the published LoVT rows (results/reference/, or a given folder / CSV)",
    )
    lb.add_argument(
        "--baseline",
        default=None,
        metavar="NAME",
        help="compare every row with this one (e.g. resnet50.imagenet or published:ImageNet): "
        "differences, Welch t-test over seeds, Holm over tasks",
    )
    lb.add_argument(
        "--seeds", type=int, default=5, help="expected seeds per task; fewer is flagged (default 5)"
    )
    lb.add_argument(
        "--tasks",
        default=None,
        help="task columns: ids, dataset names or 'all' (default: tasks with records)",
    )
    lb.add_argument("--plot", default=None, metavar="NAMES", help="comma-separated rows for the bar plot")
    lb.add_argument("--no-plots", action="store_true", help="no PNG plots")
    lb.add_argument("--alpha", type=float, default=0.05, help="family-wise significance level (default 0.05)")
    lb.set_defaults(func=_cmd_leaderboard)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "executor", None) == "slurm":
        # the device is the jobs' business, not the submitting (login) node's; see benchmark/scale.py
        return int(args.func(args) or 0)
    if getattr(args, "device", "unset") is None or getattr(args, "device", None) == "cuda":
        import torch

        if args.device == "cuda" and not torch.cuda.is_available():
            print(
                "error: --device cuda but torch sees no CUDA device (see `cxrbench doctor`)", file=sys.stderr
            )
            return 2
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if getattr(args, "device", None) == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # mmengine puts models on CUDA whenever it sees a device
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
