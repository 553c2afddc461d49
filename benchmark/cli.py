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
    options = RunOptions(
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        device=args.device,
        num_workers=default_num_workers(args.device) if args.workers is None else args.workers,
        amp=args.amp,
        keep_checkpoints=args.keep_checkpoints,
        verbose=args.verbose,
        progress=not args.quiet,
    )
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    try:
        records = evaluate(
            args.backbone, tasks, args.data, args.out, seeds=seeds, lr=args.lr, options=options
        )
    except (BackboneError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = [r for r in records if r["status"] != "ok"]
    print(
        f"\n{len(records) - len(failed)} run(s) ok, {len(failed)} failed; records under {Path(args.out) / 'runs'}"
    )
    print(f"{'task':<28} {'seed':>4} {'lr':>8} {'metric':<7} {'val':>8} {'test':>8}  status")
    for r in records:
        val = f"{r['val_score']:.4f}" if r.get("val_score") is not None else "-"
        test = f"{r['test_score']:.4f}" if r.get("test_score") is not None else "-"
        print(
            f"{r['task']:<28} {r['seed']:>4} {r['lr']:>8g} {r['primary_metric']:<7} {val:>8} {test:>8}  {r['status']}"
        )
    return 1 if failed else 0


def _cmd_backbones(args) -> int:
    from benchmark.catalog import catalog, format_catalog

    cat = catalog()
    print(json.dumps(cat, indent=2) if args.json else format_catalog(cat))
    return 0


def _cmd_inspect(args) -> int:
    from benchmark.backbones import BackboneError
    from benchmark.catalog import export_state, format_report, inspect_weights

    try:
        report = inspect_weights(args.file, args.format)
    except BackboneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    state = report.pop("_state", None)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if not report["ok"]:
        return 1
    if args.export:
        out = export_state(state, args.export)
        print(
            f"exported {len(state)} tensors (plain {report['format'] == 'timm' and 'timm' or 'torchvision'} layout) to {out}"
        )
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
        help="resnet50.random | resnet50.imagenet | path/to/weights | FORMAT:path | timm:NAME[:path] "
        "(see `cxrbench backbones`)",
    )
    e.add_argument("--tasks", required=True, help="comma-separated task ids, dataset names, or 'all'")
    e.add_argument("--data", required=True, help="data root holding prepared datasets (the --out of prepare)")
    e.add_argument(
        "--out", required=True, help="output folder; records go to OUT/runs/<backbone>/<task>/<key>.json"
    )
    e.add_argument("--seeds", type=int, default=5, help="number of seeds per task (default 5, the protocol)")
    e.add_argument("--first-seed", type=int, default=0, help="seeds are FIRST..FIRST+N-1 (default 0)")
    e.add_argument(
        "--lr", type=float, default=None, help="learning rate for every task (default: each task's default)"
    )
    e.add_argument(
        "--max-epochs", type=int, default=None, help="override the epoch budget (0 = test the untrained head)"
    )
    e.add_argument("--batch-size", type=int, default=None, help="override the task's batch size")
    e.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    e.add_argument("--workers", type=int, default=None, help="data-loader processes (default 0 on CPU)")
    e.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    e.add_argument("--keep-checkpoints", action="store_true", help="keep the .pth files of each run")
    e.add_argument("--verbose", action="store_true", help="mmengine's INFO log on the console")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=_cmd_evaluate)

    b = sub.add_parser("backbones", help="list the accepted backbone specs and checkpoint formats")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.set_defaults(func=_cmd_backbones)

    i = sub.add_parser(
        "inspect", help="report a weights file's format, mapped / ignored keys, parameters and sha256"
    )
    i.add_argument("file", help="weights file (.pt/.pth/.safetensors/.bin/.ckpt) or folder")
    i.add_argument(
        "--format", default=None, help="insist on a format (see `cxrbench backbones`) or timm:NAME"
    )
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument(
        "--export",
        default=None,
        metavar="OUT.safetensors",
        help="also write the converted image encoder weights",
    )
    i.set_defaults(func=_cmd_inspect)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
