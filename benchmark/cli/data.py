"""The data commands: ``tasks`` (the 18 tasks), ``fake`` (a generated raw download), ``datasets`` (the
five datasets; with ``--raw``, check a download) and ``prepare`` (raw download or task file -> prepared
dataset)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from benchmark.cli.args import POSITIVE_INT, number

# The datasets `prepare` and `fake` accept (tasks.datasets.DATASETS; listed here so that building the
# parser imports nothing heavy - a test checks that the two agree).
DATASET_NAMES = ("rsna", "siim", "object_cxr", "nih", "covid_rural")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("tasks", help="list the 18 tasks of the protocol")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_tasks)

    f = sub.add_parser(
        "fake", help="write a seeded fake raw dataset in the official layout (for trying things out)"
    )
    f.add_argument("dataset", choices=DATASET_NAMES)
    f.add_argument("--out", required=True, help="folder to create")
    f.add_argument(
        "--n", type=int, default=None, help="patients (Object-CXR: training images); default: small and fast"
    )
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--size", type=int, default=None, help="image side for rsna / siim (1024) and nih (128)")
    f.add_argument("--zip", action="store_true", help="object_cxr: train.zip / dev.zip instead of folders")
    f.set_defaults(func=cmd_fake)

    ds = sub.add_parser(
        "datasets", help="list the datasets; with --raw, check a download without preparing it"
    )
    ds.add_argument("--raw", default=None, help="a raw download folder to check")
    ds.add_argument(
        "--dataset", choices=DATASET_NAMES, default=None, help="which dataset (default: detected)"
    )
    ds.add_argument("--decode", type=int, default=3, help="decode the first N images and masks (default 3)")
    ds.set_defaults(func=cmd_datasets)

    pr = sub.add_parser("prepare", help="raw download -> prepared dataset (PNG, COCO, masks, splits, stats)")
    pr.add_argument("dataset", help=f"one of {', '.join(DATASET_NAMES)}, or a task file (my_task.toml)")
    pr.add_argument(
        "--raw",
        default=None,
        help="the folder the official download unpacks to (read only; not for task files)",
    )
    pr.add_argument("--out", required=True, help="data root; the dataset is written to OUT/<dataset>")
    pr.add_argument(
        "--size",
        type=number(int, 1, 4096),
        default=None,
        help="prepared image side in pixels (default 224, or the task file's)",
    )
    pr.add_argument(
        "--workers", type=POSITIVE_INT, default=max(1, (os.cpu_count() or 1)), help="parallel processes"
    )
    pr.add_argument(
        "--splits",
        default="default",
        help="default (the protocol's deterministic split) or lovt:DIR (the published LoVT split CSVs: the "
        "reference repository, its datasets/ folder or the dataset's split folder)",
    )
    pr.add_argument(
        "--allow-failures", action="store_true", help="exit 0 even if some inputs could not be used"
    )
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_prepare)


def cmd_tasks(args) -> int:
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


def cmd_fake(args) -> int:
    from tasks.fakes import FAKES

    kwargs = {"seed": args.seed}
    if args.n is not None:
        kwargs["n_patients"] = args.n
    if args.size is not None:
        if args.dataset not in ("rsna", "siim", "nih"):
            print(
                f"error: --size applies to rsna, siim and nih (square images), not {args.dataset}",
                file=sys.stderr,
            )
            return 2
        kwargs["size"] = args.size
    if args.zip:
        if args.dataset != "object_cxr":
            print("error: --zip applies to object_cxr only", file=sys.stderr)
            return 2
        kwargs["as_zip"] = True
    root = FAKES[args.dataset](args.out, **kwargs)
    print(f"fake {args.dataset} download written to {root}")
    return 0


def cmd_datasets(args) -> int:
    from tasks.datasets import DATASETS
    from tasks.errors import DatasetError

    if args.raw is None:
        if args.dataset:
            print("error: --dataset needs --raw (the folder to check)", file=sys.stderr)
            return 2
        for name, cls in DATASETS.items():
            print(f"{name:<12} {cls.title}")
            print(f"{'':<12} classes: {', '.join(cls.classes)}{' (multi-label)' if cls.multi_label else ''}")
            print(f"{'':<12} release: " + ", ".join(f"{k}={v:,}" for k, v in cls.expected.items()))
            print(f"{'':<12} get it: {cls.url}")
        print("\ncheck a download: cxrbench datasets --raw DIR [--dataset NAME]")
        return 0
    from tasks.check import check_raw, detect_datasets

    name = args.dataset
    if name is None:
        found = detect_datasets(args.raw)
        if len(found) != 1:
            what = f"it matches {', '.join(found)}" if found else "no dataset's layout matches it"
            print(f"error: cannot tell which dataset {args.raw} is ({what}); pass --dataset", file=sys.stderr)
            return 2
        name = found[0]
    try:
        report = check_raw(name, args.raw, decode=args.decode)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{name}: {report.root}")
    for k, v in report.sources.items():
        print(f"  {k:<14} {v}")
    print("  counts: " + ", ".join(f"{k}={v}" for k, v in report.counts.items()))
    for k, (found, expected) in report.differs.items():
        print(f"  note: {k} = {found}, the official release has {expected:,}")
    print(f"  split: {report.split_scheme}: " + ", ".join(f"{k}={v}" for k, v in report.split_sizes.items()))
    print(f"  decoded {report.decoded} image(s) with their masks")
    if report.failures:
        print(f"\n{len(report.failures)} input(s) cannot be used:")
        for f in report.failures:
            print(f"  - {f}")
        return 1
    print("  ok: ready for `cxrbench prepare`")
    return 0


def cmd_prepare(args) -> int:
    from tasks.custom import is_task_file, load_task_file
    from tasks.errors import DatasetError, OutputError
    from tasks.prepare import prepare

    if not is_task_file(args.dataset) and args.dataset not in DATASET_NAMES:
        print(
            f"error: unknown dataset '{args.dataset}': one of {', '.join(DATASET_NAMES)} or a task file",
            file=sys.stderr,
        )
        return 2
    if not is_task_file(args.dataset) and not args.raw:
        print("error: --raw DIR is required for a built-in dataset", file=sys.stderr)
        return 2
    try:
        dataset = args.dataset
        if is_task_file(dataset):
            custom = load_task_file(dataset)
            dataset = custom.dataset
            args.size = custom.spec.size if args.size is None else args.size
        if args.size is None:
            args.size = 224
        report = prepare(
            dataset,
            args.raw,
            args.out,
            size=args.size,
            workers=args.workers,
            progress=not args.quiet,
            splits=args.splits,
        )
    except OutputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = report.manifest
    print(f"prepared {report.manifest['dataset']} -> {report.out_dir}")
    print(
        f"  images: {report.prepared} prepared now, {report.resumed} already done; subsets: "
        + ", ".join(f"{k}={v}" for k, v in m["subsets"].items())
    )
    print(f"  split: {m['split_scheme']}; hash {m['split_hash']}")
    for k, v in m.get("split_info", {}).items():
        if k in ("validation_rows_left_out", "raw_images_not_listed", "patients_in_several_splits") and v:
            print(f"  note: {k.replace('_', ' ')}: {v}")
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
