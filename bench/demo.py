"""The whole ``cxrbench demo``: today's settings vs the previous ones, side by side, with a profile.

    python -m bench.demo [--configs before,now] [--tasks all] [--work DIR]

Each configuration runs the complete demo (fakes, prepare, 18 tasks trained and tested untrained and
trained, leaderboard) from an empty folder in its own process, one after the other on this machine, so the
ratio compares like with like under the same load. Printed per configuration: the demo's own per-step
breakdown, where each task's runs spent their time (data loading, forward, backward, validation,
checkpoint writes, test, the rest: building the runner, the feature cache), the tasks that learned, the
wall time and the load average before and after; then the ratio.

``before`` is the demo as it was before the speed work (128 px, 15 + 15 epochs, protocol U-Net widths
around the ResNet-18, no loader workers); ``now`` is today's ``DemoSettings()``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import PHASES, PhaseProfile, machine, today

CONFIGS = ("before", "now")


def settings(config: str, tasks: str = "all"):
    from benchmark.demo import DemoSettings

    if config == "now":
        return DemoSettings(tasks=tasks)
    if config == "before":  # the demo of 2026-11-28 (docs/demo.md: 6.3 min on the CI machine)
        return DemoSettings(
            size=128,
            epochs=15,
            finetune_epochs=15,
            batch_size=8,
            num_workers=0,
            unet_widths="protocol",
            tasks=tasks,
        )
    raise ValueError(f"unknown configuration {config!r}: one of {CONFIGS}")


def run_one(config: str, out: Path, result: Path, tasks: str = "all") -> None:
    """Run the demo once in this process with the phase profile installed; write a JSON summary."""
    from benchmark.demo import run_demo

    profile = PhaseProfile().install()
    load_before = os.getloadavg()
    demo = run_demo(out, settings(config, tasks), echo=print, progress=False)
    load_after = os.getloadavg()
    profile.uninstall()
    by_task: dict[str, dict[str, float]] = {}
    records = demo["records"] + demo["untrained"]
    for run in profile.runs:
        # experiment names are "<task>-<key>-<ms>" (benchmark/runs/execute.py: execute)
        rec = next((r for r in records if run["name"].startswith(f"{r['task']}-{r['key']}-")), None)
        if rec is None:
            continue
        phases = by_task.setdefault(rec["task"], {p: 0.0 for p in (*PHASES, "rest", "runs")})
        timed = profile.phases(run)
        for p in PHASES:
            phases[p] += timed[p]
        phases["rest"] += max(0.0, (rec.get("wall_time_s") or 0.0) - sum(timed.values()))
        phases["runs"] += 1
    summary = {
        "config": config,
        "settings": {k: str(v) for k, v in vars(settings(config, tasks)).items()},
        "seconds": demo["seconds"],
        "phases": demo["phases"],
        "profile": by_task,
        "learned": sum(r["learned"] for r in demo["rows"]),
        "tasks": len(demo["rows"]),
        "load": [load_before[0], load_after[0]],
    }
    result.write_text(json.dumps(summary, indent=1))


def report(s: dict) -> str:
    lines = [
        f"== {s['config']}: {s['seconds']:.0f} s ({s['seconds'] / 60:.1f} min), {s['learned']} of "
        f"{s['tasks']} tasks learned, load average {s['load'][0]:.1f} before / {s['load'][1]:.1f} after",
        f"   settings: {s['settings']}",
        f"   {'step / task':<28} {'s':>7}  " + " ".join(f"{p:>10}" for p in (*PHASES, "rest")),
    ]
    for name, seconds in s["phases"].items():
        prof = s["profile"].get(name)
        cols = " ".join(f"{prof[p]:10.1f}" for p in (*PHASES, "rest")) if prof else ""
        lines.append(f"   {name:<28} {seconds:7.1f}  {cols}")
    totals = {p: sum(t[p] for t in s["profile"].values()) for p in (*PHASES, "rest")}
    lines.append(f"   {'all runs':<28} {'':>7}  " + " ".join(f"{totals[p]:10.1f}" for p in totals))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated, run in this order")
    p.add_argument("--tasks", default="all", help="the demo's --tasks (default all: the whole demo)")
    p.add_argument("--work", default=None, help="keep the demo folders here (default: temporary)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one config here
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        run_one(args.one, Path(args.work), Path(args.result), args.tasks)
        return 0
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS:
            p.error(f"unknown configuration {c!r}: one of {CONFIGS}")
    work = Path(args.work or tempfile.mkdtemp(prefix="cxrbench-bench-demo-"))
    print(f"bench demo, {today()}: {machine()}")
    summaries = {}
    for c in configs:
        out, result = work / c, work / f"{c}.json"
        if result.exists():  # already measured in this work folder
            print(f"{c}: reusing {result}")
        else:
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "bench.demo", "--one", c, "--tasks", args.tasks]
                + ["--work", str(out), "--result", str(result)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            print(f"{c}: {time.perf_counter() - started:.0f} s (process wall time)")
        summaries[c] = json.loads(result.read_text())
        print(report(summaries[c]), flush=True)
    if "before" in summaries and "now" in summaries:
        b, n = summaries["before"]["seconds"], summaries["now"]["seconds"]
        print(f"\nratio before / now: {b / n:.2f}x ({b:.0f} s -> {n:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
