"""The pretraining commands: ``pretrain`` (image-text pretraining of an encoder), ``analyze`` (alignment /
uniformity / spread of its embeddings, or of any encoder's) and ``ablate`` (pretrain several presets, evaluate
each export, compare). The work is in :mod:`pretrain` (:mod:`pretrain.runs`: options -> a run,
:func:`pretrain.train.pretrain`, :func:`pretrain.analysis.analyze_backbone`) and :mod:`benchmark.ablate`;
``pretrain`` is imported lazily (only to build this parser: the preset names)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from pretrain.config import PRESETS  # pure Python: the preset names for --help

    pt = sub.add_parser(
        "pretrain", help="image-text pretraining of an encoder; exports OUT/backbone.safetensors"
    )
    pt.add_argument(
        "--preset", required=True, choices=list(PRESETS), help="the objective (see docs/pretraining.md)"
    )
    pt.add_argument("--out", required=True, help="run folder (a rerun resumes or reuses it)")
    pt.add_argument("--verbose", action="store_true", help="mmengine's INFO log on the console")
    add_pretrain_arguments(pt)
    pt.set_defaults(func=cmd_pretrain)

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
    add_pretrain_arguments(an, training=False)
    an.set_defaults(func=cmd_analyze)

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
    add_pretrain_arguments(ab)
    ab.set_defaults(func=cmd_ablate)


def add_pretrain_arguments(p: argparse.ArgumentParser, *, training: bool = True) -> None:
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


def cmd_pretrain(args) -> int:
    from pretrain.runs import DataOptions, RunOptions, build_config, load_pairs, user_errors
    from pretrain.train import pretrain

    try:
        data = DataOptions.from_args(args)
        options = RunOptions.from_args(args, args.preset)
        pairs, text_model = load_pairs(data, args.out)
        cfg = build_config(options, data.synthetic, text_model)
        result = pretrain(
            cfg, pairs, args.out, launcher=args.launcher, progress=not args.quiet, verbose=args.verbose
        )
    except user_errors() as e:
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


def cmd_analyze(args) -> int:
    return _analyze(
        args.backbone,
        args,
        json_path=args.json,
        split=args.split,
        image_only=args.image_only,
        image_size=args.image_size,
        batch_size=args.batch_size,
        max_samples=args.max_samples,
    )


def _analyze(backbone: str, args, *, json_path: str | None, **options) -> int:
    """``analyze`` on ``backbone`` with the data options of ``args``: the report on the console, the numbers
    to ``json_path`` (with the backbone); 2 on a usage error (printed)."""
    from benchmark.backbones import BackboneError, build_encoder
    from pretrain.analysis import analyze_backbone, format_report
    from pretrain.runs import DataOptions, user_errors

    try:
        result, title = analyze_backbone(
            backbone, DataOptions.from_args(args), build_encoder=build_encoder, device=args.device, **options
        )
    except (BackboneError, *user_errors()) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(result, title))
    if json_path:
        from tasks.io import write_json_atomic

        write_json_atomic(json_path, {"backbone": str(backbone), **result})
        print(f"written to {json_path}")
    return 0


def cmd_ablate(args) -> int:
    from benchmark.ablate import ablate, format_comparison, write_ablation_leaderboard
    from benchmark.runs import RunOptions, default_num_workers
    from pretrain.config import PRESETS
    from pretrain.runs import DataOptions, preset_runs, user_errors
    from pretrain.runs import RunOptions as PretrainOptions
    from tasks.registry import select_tasks

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = [p for p in presets if p not in PRESETS]
    if unknown or not presets:
        print(f"error: unknown preset(s) {', '.join(unknown)}; known: {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    try:
        tasks = select_tasks(args.tasks)
        data = DataOptions.from_args(args)
        options = PretrainOptions.from_args(args, presets[0])
    except (KeyError, *user_errors()) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    out = Path(args.out)

    def analyze_one(preset: str) -> dict[str, float]:
        """``cxrbench analyze`` on the preset's run (same pairs and options), its numbers flattened."""
        from pretrain.analysis import flat_local

        run = out / "pretrain" / preset
        target = run / "analysis.json"
        code = _analyze(
            str(run),
            args,
            json_path=str(target),
            split="validate",
            image_only=False,
            image_size=None,
            batch_size=32,
            max_samples=args.analysis_samples,
        )
        if code != 0:
            raise RuntimeError(f"cxrbench analyze failed on {run} (see above)")
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
            preset_runs(data, options, out, launcher=args.launcher, progress=not args.quiet),
            tasks,
            args.bench_data,
            out,
            seeds=seeds,
            lr=args.eval_lr,
            lr_search=not args.no_lr_search,
            eval_options=eval_options,
            analyze_one=analyze_one,
        )
    except (FileNotFoundError, *user_errors()) as e:
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
    from benchmark.leaderboard import LeaderboardError

    try:  # the presets side by side, with significance against the first preset
        board = write_ablation_leaderboard(records, presets, out, seeds=len(seeds), plots=not args.quiet)
        print("\n".join(board.summary))
        print(f"leaderboard written to {board.out_dir}")
    except LeaderboardError as e:
        print(f"leaderboard not written: {e}", file=sys.stderr)
    failed = sum(r["n_failed"] for r in rows)
    return 1 if failed else 0
