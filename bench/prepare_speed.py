"""How fast is ``prepare``, and how much does preparing once save per read?

Prints images/s of ``prepare`` with 1 and 2 worker processes, and - measured side by side on the same
images in this run - the time to read one prepared 224 px PNG versus decoding and resizing its raw file
(the work every epoch would repeat without a prepared dataset). Goal: reading prepared >= 20x faster.

    .venv/bin/python bench/prepare_speed.py                       # fake SIIM, 1024 px JPEG DICOMs
    .venv/bin/python bench/prepare_speed.py --dataset rsna --n 60
    .venv/bin/python bench/prepare_speed.py --dataset siim --raw ~/data/siim-train-test --n 200
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.datasets import get_dataset
from tasks.image import equalize, prepare_image
from tasks.prepare import prepare


def _subset_raw(args, tmp: Path) -> Path:
    if args.raw:
        return Path(args.raw)
    from tasks.fakes import FAKES

    kwargs = {"size": args.size} if args.dataset in ("rsna", "siim", "nih") and args.size else {}
    return FAKES[args.dataset](tmp / "raw", n_patients=args.n, seed=0, **kwargs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="siim", choices=["rsna", "siim", "object_cxr", "nih", "covid_rural"])
    p.add_argument("--raw", default=None, help="a real download (default: a fake one in a temporary folder)")
    p.add_argument("--n", type=int, default=40, help="fake patients (default 40)")
    p.add_argument("--size", type=int, default=None, help="fake image side (default: the real size)")
    p.add_argument("--reads", type=int, default=20, help="images timed for the read ratio (default 20)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        raw = _subset_raw(args, tmp)
        ds = get_dataset(args.dataset)(raw)
        rates = {}
        for workers in (1, 2):
            start = time.perf_counter()
            report = prepare(args.dataset, raw, tmp / f"out{workers}", workers=workers, progress=False)
            seconds = time.perf_counter() - start
            n = report.prepared
            rates[workers] = n / seconds
            print(
                f"prepare {args.dataset}, {workers} worker(s): {n} images in {seconds:.2f} s = {rates[workers]:.1f} images/s"
            )
        print(f"speed-up with 2 workers: {rates[2] / rates[1]:.2f}x")

        out = report.out_dir
        samples = ds.parse().samples.to_dict("records")[: args.reads]
        raw_times, read_times = [], []
        for s in samples:  # side by side, image by image, so both see the same disk cache and CPU load
            t0 = time.perf_counter()
            pixels = ds.load_pixels(s)
            if ds.equalize:
                pixels = equalize(pixels)
            prepare_image(pixels, 224)
            t1 = time.perf_counter()
            with Image.open(out / "images" / f"{s['image_id']}.png") as img:
                np.asarray(img)
            t2 = time.perf_counter()
            raw_times.append(t1 - t0)
            read_times.append(t2 - t1)
        raw_ms, read_ms = statistics.median(raw_times) * 1e3, statistics.median(read_times) * 1e3
        shape = ds.load_pixels(samples[0]).shape
        print(
            f"per image (median of {len(samples)}): decode + resize the raw {shape[1]}x{shape[0]} file "
            f"{raw_ms:.2f} ms, read the prepared 224 px PNG {read_ms:.3f} ms -> prepared is "
            f"{raw_ms / read_ms:.0f}x faster (goal >= 20x)"
        )


if __name__ == "__main__":
    main()
