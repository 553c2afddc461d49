"""``cxrbench doctor``: is the installation complete (versions, NMS provider, CUDA, DICOM plugins)?"""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("doctor", help="check the installation (versions, NMS provider, CUDA, DICOM plugins)")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.set_defaults(func=cmd_doctor)


def cmd_doctor(args) -> int:
    from benchmark.doctor import collect, format_report

    report = collect()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["ok"] else 1
