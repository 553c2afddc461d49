"""The backbone commands: ``backbones`` (the accepted specs and checkpoint formats) and ``inspect`` (a
weights file's format, mapped / ignored keys, parameters and sha256; ``--export`` converts it)."""

from __future__ import annotations

import argparse
import json
import sys


def add_parsers(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("backbones", help="list the accepted backbone specs and checkpoint formats")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.set_defaults(func=cmd_backbones)

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
    i.set_defaults(func=cmd_inspect)


def cmd_backbones(args) -> int:
    from benchmark.backbones.catalog import catalog, format_catalog

    cat = catalog()
    print(json.dumps(cat, indent=2) if args.json else format_catalog(cat))
    return 0


def cmd_inspect(args) -> int:
    from benchmark.backbones import BackboneError
    from benchmark.backbones.catalog import export_inspected, format_report, inspect_weights

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
        try:
            out = export_inspected(report, state, args.export)
        except BackboneError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        layout = "timm" if report["format"] == "timm" else "torchvision"
        print(f"exported {len(state)} tensors (plain {layout} layout) to {out}")
    return 0
