"""``cxrbench leaderboard``: records -> per-task CSVs, the wide table, Markdown, HTML, plots, significance
(the work is :func:`benchmark.leaderboard.write_leaderboard`)."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    lb.set_defaults(func=cmd_leaderboard)


def cmd_leaderboard(args) -> int:
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
