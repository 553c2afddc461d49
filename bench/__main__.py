"""Run every bench script in turn: ``python -m bench [--work DIR]`` (about 10 minutes on 2 CPU cores)."""

from __future__ import annotations

import argparse
import time

from bench import ddp, feature_cache, workers


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--work", default=None, help="keep the generated data and outputs here (default: temporary)"
    )
    args = p.parse_args(argv)
    started = time.perf_counter()
    extra = ["--work", args.work] if args.work else []
    for module in (feature_cache, workers, ddp):
        module.main(extra)
        print(flush=True)
    print(f"all benches: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
