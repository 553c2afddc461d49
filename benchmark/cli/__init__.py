"""The ``cxrbench`` command line: a thin face over ``tasks``, ``benchmark`` and ``pretrain``.

This package builds the parser and dispatches; each command group is one module holding its argparse
definition (``add_parser`` / ``add_parsers``) and its thin command functions (``cmd_<command>``):

- :mod:`benchmark.cli.doctor`: ``doctor`` (is the installation complete?)
- :mod:`benchmark.cli.data`: ``tasks``, ``fake``, ``datasets``, ``prepare`` (the tasks and datasets)
- :mod:`benchmark.cli.evaluate`: ``evaluate`` (heads on a backbone -> records; with its scaling options)
- :mod:`benchmark.cli.leaderboard`: ``leaderboard`` (records -> tables, HTML, plots, significance)
- :mod:`benchmark.cli.backbones`: ``backbones``, ``inspect`` (backbone specs, weights files)
- :mod:`benchmark.cli.demo`: ``demo`` (the whole suite on generated data)
- :mod:`benchmark.cli.pretrain`: ``pretrain``, ``analyze``, ``ablate`` (image-text pretraining)
- :mod:`benchmark.cli.args`: the argument types the commands share (checked numbers)

Building the parser imports nothing heavy: the commands import what they run when they run.
"""

from __future__ import annotations

import argparse
import os
import sys

from benchmark.cli import backbones, data, demo, doctor, evaluate, leaderboard, pretrain
from benchmark.cli.args import COUNT, POSITIVE_INT
from benchmark.cli.data import DATASET_NAMES
from benchmark.cli.evaluate import print_summary

__all__ = ["COUNT", "DATASET_NAMES", "POSITIVE_INT", "build_parser", "main", "print_summary"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cxrbench", description="Localized downstream benchmark for chest X-ray encoders."
    )
    sub = p.add_subparsers(dest="command", required=True)
    doctor.add_parser(sub)
    data.add_parsers(sub)  # tasks, fake, datasets, prepare
    evaluate.add_parser(sub)
    leaderboard.add_parser(sub)
    backbones.add_parsers(sub)  # backbones, inspect
    demo.add_parser(sub)
    pretrain.add_parsers(sub)  # pretrain, analyze, ablate
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
