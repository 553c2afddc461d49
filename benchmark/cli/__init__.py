"""The ``cxrbench`` command line: a thin face over ``tasks``, ``benchmark`` (and later ``pretrain``)."""

from __future__ import annotations

import argparse
import dataclasses
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


# The datasets `prepare` and `fake` accept (tasks.datasets.DATASETS; listed here so that building the
# parser imports nothing heavy - a test checks that the two agree).
DATASET_NAMES = ("rsna", "siim", "object_cxr", "nih", "covid_rural")


def _cmd_fake(args) -> int:
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


def _cmd_datasets(args) -> int:
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


def _cmd_prepare(args) -> int:
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


def _cmd_evaluate(args) -> int:
    from benchmark.backbones import BackboneError
    from benchmark.runs import RunOptions, default_num_workers, evaluate
    from tasks.custom import resolve_tasks
    from tasks.errors import DatasetError
    from tasks.prepare import prepare

    try:
        tasks, custom = resolve_tasks(args.tasks)
        if args.size is not None:
            tasks = [dataclasses.replace(t, size=args.size) for t in tasks]
        for c in custom:  # task files are prepared like built-in datasets (resumable: a second call is quick)
            size = c.spec.size if args.size is None else args.size
            report = prepare(c.dataset, None, args.data, size=size, workers=2, progress=not args.quiet)
            for f in report.failures:
                print(f"warning: {c.path.name}: {f}", file=sys.stderr)
            if not report.manifest["subsets"].get("train"):
                raise DatasetError(f"{c.path}: no usable training images after preparation")
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


def _cmd_backbones(args) -> int:
    from benchmark.backbones.catalog import catalog, format_catalog

    cat = catalog()
    print(json.dumps(cat, indent=2) if args.json else format_catalog(cat))
    return 0


def _cmd_inspect(args) -> int:
    from benchmark.backbones import BackboneError
    from benchmark.backbones.catalog import export_state, format_report, inspect_weights

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
        if report.get("encoder"):
            # a plain timm / transformers state dict loses what evaluate needs to read it back (heads,
            # training resolution, input convention), so no file evaluate would reject is written
            print(
                f"error: not exported: a {report['format']} transformer encoder is evaluated from its released "
                f"file as it is (spec {report['spec']}); --export writes plain ResNet and timm layouts",
                file=sys.stderr,
            )
            return 1
        timm_arch = report["arch"][len("timm:") :] if report["format"] == "timm" else None
        try:
            out = export_state(state, args.export, timm_arch)
        except BackboneError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        layout = "timm" if report["format"] == "timm" else "torchvision"
        print(f"exported {len(state)} tensors (plain {layout} layout) to {out}")
    return 0


def _cmd_demo(args) -> int:
    from benchmark.demo import DemoSettings, run_demo

    settings = DemoSettings(
        backbone=args.backbone,
        size=args.size,
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        batch_size=args.batch_size,
        device=args.device,
        num_workers=args.loader_workers,
        tasks=args.tasks,
        unet_widths=args.unet_widths,
    )
    from benchmark.backbones.weights import BackboneError
    from tasks.errors import DatasetError

    try:
        result = run_demo(args.out, settings, progress=not args.quiet)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    except (BackboneError, DatasetError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = [r for r in result["records"] if r["status"] != "ok"]
    return 1 if failed else 0


# ---------------------------------------------------------------- pretraining (imports pretrain lazily)


def _pretrain_data(args):
    from pretrain.runs import DataOptions

    return DataOptions(
        mimic=args.data,
        reports=args.reports,
        manifest=args.manifest,
        synthetic=args.synthetic,
        synthetic_n=args.synthetic_n,
        synthetic_size=args.synthetic_size,
        seed=args.seed,
    )


def _pretrain_options(args, preset: str):
    from pretrain.config import parse_weight_overrides
    from pretrain.runs import RunOptions as PretrainOptions

    return PretrainOptions(
        preset=preset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        accumulate=args.accumulate,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_iters=args.warmup_iters,
        patience=args.patience,
        image_arch=args.image_arch,
        image_init=args.image_init,
        image_size=args.image_size,
        text_model=args.text_model,
        text_frozen_layers=args.text_frozen_layers,
        weights=parse_weight_overrides(args.weight),
        augment=args.augment,
        hflip=args.hflip,
        workers=args.workers,
        amp=args.amp,
        seed=args.seed,
    )


def _pretrain_errors() -> tuple[type[Exception], ...]:
    from pretrain.data.records import PairDataError
    from pretrain.model import ImageWeightsUnavailableError
    from pretrain.text import TextModelUnavailableError
    from pretrain.train import PretrainError

    return (PairDataError, PretrainError, TextModelUnavailableError, ImageWeightsUnavailableError, ValueError)


def _cmd_pretrain(args) -> int:
    from pretrain.runs import build_config, load_pairs
    from pretrain.train import pretrain

    try:
        data = _pretrain_data(args)
        options = _pretrain_options(args, args.preset)
        pairs, text_model = load_pairs(data, args.out)
        cfg = build_config(options, data.synthetic, text_model)
        result = pretrain(
            cfg, pairs, args.out, launcher=args.launcher, progress=not args.quiet, verbose=args.verbose
        )
    except _pretrain_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\n{'epoch':>5} {'train loss':>11} {'val loss':>9}")
    for e in result.history:
        val = e.get("val", {}).get("loss")
        print(
            f"{e['epoch']:>5} {e['train'].get('loss', float('nan')):>11.4f} {'-' if val is None else f'{val:.4f}':>9}"
        )
    print(f"\n{result.epochs_run} epoch(s); best epoch {result.best_epoch}; backbone {result.backbone}")
    print(
        f"evaluate it with: cxrbench evaluate --backbone {result.backbone} --tasks ... --data ... --out ..."
    )
    return 0


def _cmd_analyze(args) -> int:
    import tempfile

    import torch

    from pretrain import analysis
    from pretrain.data.dataset import PairCollator, PairDataset, image_statistics
    from pretrain.runs import load_pairs
    from pretrain.train import find_run, load_run

    run = None if args.image_only else find_run(args.backbone)
    try:
        with tempfile.TemporaryDirectory(prefix="cxrbench-analyze-") as tmp:
            pairs, _ = load_pairs(_pretrain_data(args), tmp, with_text_model=False)
            records = pairs.split(args.split) or pairs.records
            if not pairs.split(args.split):
                print(f"note: no '{args.split}' pairs; analysing all {len(records)} pairs", file=sys.stderr)
            if run is not None:
                given = Path(args.backbone)
                net, tokenizer, cfg, norm = load_run(run, given if given.suffix == ".pth" else None)
                ds = PairDataset(records, norm["image_size"], norm["mean"], norm["std"], None, cfg.sentences)
                loader = torch.utils.data.DataLoader(
                    ds, batch_size=args.batch_size, collate_fn=PairCollator(tokenizer, cfg.model.max_tokens)
                )
                result = analysis.analyze_model(net, loader, args.device, args.max_samples)
                title = f"{run} (preset {cfg.preset}, both modalities)"
            else:
                from benchmark.backbones import BackboneError, build_encoder

                spec = args.backbone
                if Path(spec).is_dir() and (Path(spec) / "backbone.safetensors").is_file():
                    spec = str(Path(spec) / "backbone.safetensors")  # a run folder with --image-only
                try:
                    encoder, info = build_encoder(spec)
                except BackboneError as e:
                    print(f"error: {e}", file=sys.stderr)
                    return 2
                sidecar = Path(spec).with_suffix(".json")
                norm = json.loads(sidecar.read_text()).get("normalization") if sidecar.is_file() else None
                size = args.image_size or (norm or {}).get("image_size", 224)
                if norm is None:
                    mean, std = image_statistics(records, size)
                else:
                    mean, std = norm["mean"], norm["std"]
                ds = PairDataset(records, size, mean, std)
                loader = torch.utils.data.DataLoader(
                    ds, batch_size=args.batch_size, collate_fn=lambda b: torch.stack([x["image"] for x in b])
                )
                encoder = encoder.to(args.device).eval()
                result = analysis.analyze_image_features(
                    lambda x: encoder(x.expand(-1, 3, -1, -1))[5], loader, args.device, args.max_samples
                )
                title = f"{info.name} (image side)"
    except _pretrain_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(analysis.format_report(result, title))
    if args.json:
        from tasks.io import write_json_atomic

        write_json_atomic(args.json, {"backbone": str(args.backbone), **result})
        print(f"written to {args.json}")
    return 0


def _cmd_ablate(args) -> int:
    from dataclasses import replace

    from benchmark.ablate import ablate, format_comparison
    from benchmark.runs import RunOptions, default_num_workers
    from pretrain.config import PRESETS
    from pretrain.runs import build_config, load_pairs
    from pretrain.train import pretrain
    from tasks.registry import select_tasks

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = [p for p in presets if p not in PRESETS]
    if unknown or not presets:
        print(f"error: unknown preset(s) {', '.join(unknown)}; known: {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    try:
        tasks = select_tasks(args.tasks)
        data = _pretrain_data(args)
        options = _pretrain_options(args, presets[0])
    except (KeyError, *_pretrain_errors()) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    loaded = {}

    def pretrain_one(preset: str) -> Path:
        if not loaded:  # read the pairs once, after the task check, for all presets
            loaded["pairs"], loaded["text_model"] = load_pairs(data, out)
        cfg = build_config(replace(options, preset=preset), data.synthetic, loaded["text_model"])
        run = pretrain(
            cfg, loaded["pairs"], out / "pretrain" / preset, launcher=args.launcher, progress=not args.quiet
        )
        return run.backbone

    def analyze_one(preset: str) -> dict[str, float]:
        """``cxrbench analyze`` on the preset's run (same pairs and options), its numbers flattened."""
        from pretrain.analysis import flat_local

        target = out / "pretrain" / preset / "analysis.json"
        a = argparse.Namespace(**vars(args))
        a.backbone, a.json, a.image_only = str(out / "pretrain" / preset), str(target), False
        a.split, a.max_samples, a.batch_size, a.image_size = "validate", args.analysis_samples, 32, None
        if _cmd_analyze(a) != 0:
            raise RuntimeError(f"cxrbench analyze failed on {out / 'pretrain' / preset} (see above)")
        result = json.loads(target.read_text())
        return {"global.alignment": result["global"]["alignment"], **flat_local(result)}

    eval_options = RunOptions(
        max_epochs=args.max_epochs,
        batch_size=args.eval_batch_size,
        device=args.device,
        num_workers=default_num_workers(args.device),
        amp=args.amp,
        progress=not args.quiet,
    )
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    try:
        records, rows, joined = ablate(
            presets,
            pretrain_one,
            tasks,
            args.bench_data,
            out,
            seeds=seeds,
            lr=args.eval_lr,
            lr_search=not args.no_lr_search,
            eval_options=eval_options,
            analyze_one=analyze_one,
        )
    except (FileNotFoundError, *_pretrain_errors()) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"\ntest {', '.join(sorted({r['metric'] for r in rows if r['metric']}))} (mean +- std over {len(seeds)} seed(s)):"
    )
    print(format_comparison(rows))
    print(f"\ntable written to {out / 'ablation.csv'}")
    if joined:
        from benchmark.ablate import joined_markdown

        print("\nanalysis (local: per-sample uniformity and alignment, lower = better) beside the test metric:")
        print(joined_markdown(joined), end="")
        print(f"joined table and plot: {out / 'ablation-joined.csv'}, .md, .png")
    from benchmark.leaderboard import LeaderboardError, write_leaderboard

    try:  # the presets side by side, with significance against the first preset
        baseline = next(
            (r["backbone"]["name"] for r in records.get(presets[0], []) if r.get("backbone")), None
        )
        board = write_leaderboard(
            [out / "eval"], out / "leaderboard", seeds=len(seeds), baseline=baseline, plots=not args.quiet
        )
        print("\n".join(board.summary))
        print(f"leaderboard written to {board.out_dir}")
    except LeaderboardError as e:
        print(f"leaderboard not written: {e}", file=sys.stderr)
    failed = sum(r["n_failed"] for r in rows)
    return 1 if failed else 0


def _add_pretrain_arguments(p: argparse.ArgumentParser, *, training: bool = True) -> None:
    """Data source and pretraining options shared by pretrain, analyze and ablate."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="MIMIC-CXR-JPG 2.0.0 folder (files/, mimic-cxr-2.0.0-*.csv.gz)")
    src.add_argument("--manifest", help="CSV / JSONL with image, report[, patient_id, study_id, split]")
    src.add_argument(
        "--synthetic", action="store_true", help="generated phantom image-report pairs (CPU demo)"
    )
    p.add_argument("--reports", help="mimic-cxr-reports.zip or its unpacked folder (default: next to --data)")
    p.add_argument("--synthetic-n", type=int, default=256, help="number of synthetic pairs (default 256)")
    p.add_argument("--synthetic-size", type=int, default=128, help="synthetic image side in px (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if not training:  # analyze: the data options only
        return
    p.add_argument("--epochs", type=int, help="default 100 (synthetic: 5)")
    p.add_argument(
        "--batch-size",
        type=int,
        help="pairs per forward pass = in-batch negatives (default 32; synthetic 16)",
    )
    p.add_argument("--accumulate", type=int, help="gradient accumulation steps (default 16; synthetic 1)")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 1e-4; synthetic 1e-3)")
    p.add_argument("--weight-decay", type=float, help="default 1e-6")
    p.add_argument("--warmup-iters", type=int, help="linear learning-rate warm-up iterations (default 0)")
    p.add_argument(
        "--patience", type=int, help="early stopping on the validation loss, epochs (default 10; 0 = off)"
    )
    p.add_argument(
        "--image-arch",
        choices=["resnet18", "resnet34", "resnet50"],
        help="default resnet50 (synthetic: resnet18)",
    )
    p.add_argument(
        "--image-init",
        help="imagenet | random | PATH to torchvision weights (default imagenet; synthetic random)",
    )
    p.add_argument("--image-size", type=int, help="input side in px (default 224; synthetic 128)")
    p.add_argument(
        "--text-model",
        help="Hugging Face BERT name or local folder (default emilyalsentzer/Bio_ClinicalBERT)",
    )
    p.add_argument(
        "--text-frozen-layers", type=int, help="BERT layers frozen after the embeddings (default 6)"
    )
    p.add_argument(
        "--weight", action="append", metavar="TERM=VALUE", help="override a loss weight (repeatable)"
    )
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="image / text augmentation (default on; synthetic: off)",
    )
    p.add_argument(
        "--hflip",
        type=float,
        help="horizontal-flip probability (default 0.5 as LoVT; synthetic 0: sides matter)",
    )
    p.add_argument("--workers", type=int, default=0, help="data-loading processes (default 0)")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    p.add_argument(
        "--launcher",
        choices=["none", "pytorch", "slurm", "mpi"],
        default="none",
        help="DDP launcher (with torchrun: pytorch)",
    )


def _number(kind: type, low: float, high: float | None = None, low_open: bool = False):
    """An argparse ``type``: an int / a finite float within [low, high] ((low, high] if ``low_open``);
    anything else is a usage error (exit 2) that names the option and the value."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if (value <= low) if low_open else (value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low:g}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


POSITIVE_INT = _number(int, 1)
COUNT = _number(int, 0)


def build_parser() -> argparse.ArgumentParser:
    from tasks.registry import MAX_SIZE

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
    f.add_argument("dataset", choices=DATASET_NAMES)
    f.add_argument("--out", required=True, help="folder to create")
    f.add_argument(
        "--n", type=int, default=None, help="patients (Object-CXR: training images); default: small and fast"
    )
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--size", type=int, default=None, help="image side for rsna / siim (1024) and nih (128)")
    f.add_argument("--zip", action="store_true", help="object_cxr: train.zip / dev.zip instead of folders")
    f.set_defaults(func=_cmd_fake)

    ds = sub.add_parser(
        "datasets", help="list the datasets; with --raw, check a download without preparing it"
    )
    ds.add_argument("--raw", default=None, help="a raw download folder to check")
    ds.add_argument(
        "--dataset", choices=DATASET_NAMES, default=None, help="which dataset (default: detected)"
    )
    ds.add_argument("--decode", type=int, default=3, help="decode the first N images and masks (default 3)")
    ds.set_defaults(func=_cmd_datasets)

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
        type=_number(int, 1, 4096),
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
    pr.set_defaults(func=_cmd_prepare)

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
        type=_number(float, 0.0, 10.0, low_open=True),
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
        type=_number(int, 32, MAX_SIZE),
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
        choices=["protocol", "lovt"],
        default="protocol",
        help="training loss: the protocol's (mmdet's YOLOv3 loss, mean of per-class Dice losses) or LoVT's own "
        "(its YOLOv3Loss, Dice pooled over classes); recorded in the record's overrides (default protocol)",
    )
    e.add_argument("--keep-checkpoints", action="store_true", help="keep the .pth files of each run")
    e.add_argument("--verbose", action="store_true", help="mmengine's INFO log on the console")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    from benchmark.executors.scale import add_arguments

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
    dm = sub.add_parser(
        "demo",
        help="the whole suite on generated data: fakes -> prepare -> 18 tasks -> leaderboard (CPU, minutes)",
    )
    dm.add_argument(
        "--out", default="cxrbench-demo", help="output folder (default ./cxrbench-demo; resumable)"
    )
    from benchmark.demo import UNET_WIDTH_CHOICES, DemoSettings

    demo = DemoSettings()
    dm.add_argument(
        "--backbone", default=demo.backbone, help=f"backbone spec (default {demo.backbone})"
    )
    dm.add_argument(
        "--size",
        type=int,
        default=demo.size,
        help=f"image side of the generated data (default {demo.size}; protocol 224)",
    )
    dm.add_argument(
        "--epochs", type=int, default=demo.epochs, help=f"epochs of frozen tasks (default {demo.epochs})"
    )
    dm.add_argument(
        "--finetune-epochs",
        type=int,
        default=demo.finetune_epochs,
        help=f"epochs of finetuned tasks (default {demo.finetune_epochs})",
    )
    dm.add_argument("--batch-size", type=int, default=demo.batch_size)
    dm.add_argument(
        "--loader-workers",
        type=int,
        default=demo.num_workers,
        help=f"data-loader worker processes (default {demo.num_workers})",
    )
    dm.add_argument(
        "--unet-widths",
        choices=UNET_WIDTH_CHOICES,
        default=demo.unet_widths,
        help="U-Net decoder widths: the protocol's 1024/512/256/128/64 scaled by the encoder's conv5 "
        f"channels / 2048 (256/128/64/32/16 around a ResNet-18), or the protocol's (default {demo.unet_widths})",
    )
    dm.add_argument(
        "--tasks",
        default="all",
        help="task ids, dataset names, prefixes of ids (covid, rsna_linear) or 'all'",
    )
    dm.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    dm.add_argument("--quiet", action="store_true", help="no progress bars")
    dm.set_defaults(func=_cmd_demo)

    from pretrain.config import PRESETS  # pure Python: the preset names for --help

    pt = sub.add_parser(
        "pretrain", help="image-text pretraining of an encoder; exports OUT/backbone.safetensors"
    )
    pt.add_argument(
        "--preset", required=True, choices=list(PRESETS), help="the objective (see README: Pretraining)"
    )
    pt.add_argument("--out", required=True, help="run folder (a rerun resumes or reuses it)")
    pt.add_argument("--verbose", action="store_true", help="mmengine's INFO log on the console")
    _add_pretrain_arguments(pt)
    pt.set_defaults(func=_cmd_pretrain)

    an = sub.add_parser(
        "analyze", help="alignment / uniformity / spread of embeddings (pretraining run or any encoder)"
    )
    an.add_argument(
        "--backbone",
        required=True,
        help="pretraining run folder, its backbone.safetensors or a checkpoint OUT/work/*.pth | any backbone spec",
    )
    an.add_argument("--split", default="validate", help="which pairs (default validate; all when absent)")
    an.add_argument("--max-samples", type=int, default=512)
    an.add_argument("--batch-size", type=int, default=32)
    an.add_argument("--image-size", type=int, help="for plain encoders (default: the sidecar's, else 224)")
    an.add_argument("--image-only", action="store_true", help="measure the image encoder's feature map only")
    an.add_argument("--json", help="also write the numbers to this JSON file")
    _add_pretrain_arguments(an, training=False)
    an.set_defaults(func=_cmd_analyze)

    ab = sub.add_parser("ablate", help="pretrain several presets, evaluate each export, print the comparison")
    ab.add_argument("--presets", required=True, help=f"comma-separated, from: {', '.join(PRESETS)}")
    ab.add_argument(
        "--tasks", required=True, help="benchmark tasks (comma-separated ids, dataset names, 'all')"
    )
    ab.add_argument("--bench-data", required=True, help="data root with the prepared benchmark datasets")
    ab.add_argument("--out", required=True, help="OUT/pretrain/<preset>, OUT/eval, OUT/ablation.csv")
    ab.add_argument("--seeds", type=int, default=1, help="evaluation seeds per task (default 1)")
    ab.add_argument("--first-seed", type=int, default=0)
    ab.add_argument("--max-epochs", type=int, default=None, help="override the tasks' epoch budget")
    ab.add_argument(
        "--no-lr-search", action="store_true", help="each task's default lr instead of its grid search"
    )
    ab.add_argument("--eval-batch-size", type=int, default=None, help="override the tasks' batch size")
    ab.add_argument(
        "--eval-lr", type=float, default=None, help="learning rate for every task (default: each task's)"
    )
    ab.add_argument(
        "--analysis-samples", type=int, default=512, help="validation pairs `analyze` measures per preset"
    )
    _add_pretrain_arguments(ab)
    ab.set_defaults(func=_cmd_ablate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "executor", None) == "slurm":
        # the device is the jobs' business, not the submitting (login) node's; see benchmark/executors/scale.py
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
    code = int(args.func(args) or 0)
    if getattr(args, "launcher", None) == "pytorch":
        from benchmark.executors.scale import finish_distributed

        finish_distributed()  # all ranks leave together (on an exception, atexit destroys without waiting)
    return code


if __name__ == "__main__":
    sys.exit(main())
