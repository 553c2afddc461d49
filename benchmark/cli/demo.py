"""``cxrbench demo``: the whole suite on generated data - fakes -> prepare -> tasks -> leaderboard
(the work is :func:`benchmark.demo.run_demo`)."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    dm.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
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
