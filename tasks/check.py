"""Check a raw download without preparing it (``cxrbench datasets --raw DIR``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tasks.datasets import DATASETS, get_dataset
from tasks.errors import DatasetError, Failure, SampleError
from tasks.image import Geometry


@dataclass
class CheckReport:
    dataset: str
    root: str
    counts: dict = field(default_factory=dict)
    expected: dict = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    decoded: int = 0
    split_scheme: str = ""
    split_sizes: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)

    @property
    def differs(self) -> dict:
        return {k: (self.counts.get(k), v) for k, v in self.expected.items() if self.counts.get(k) != v}


def detect_datasets(raw: str | os.PathLike) -> list[str]:
    """Names of the datasets whose official layout ``raw`` has (usually one)."""
    found = []
    for name, cls in DATASETS.items():
        try:
            cls(raw).check_layout()
        except DatasetError:
            continue
        found.append(name)
    return found


def check_raw(dataset: str, raw: str | os.PathLike, decode: int = 3) -> CheckReport:
    """Parse the label files, look for every image, compute the default split, and decode the first
    ``decode`` images with their masks (catches a missing DICOM plugin before a long ``prepare``).

    Raises:
        DatasetLayoutError: the folder is not the official layout.
    """
    ds = get_dataset(dataset)(raw)
    parsed = ds.parse()
    failures = list(parsed.failures)
    table, scheme = ds.split(parsed.samples)
    decoded = 0
    for sample in parsed.samples.head(max(decode, 0)).to_dict("records"):
        try:
            pixels = ds.load_pixels(sample)
            g = Geometry(*pixels.shape, 64)
            if ds.prepared_mask(sample, g) is None:
                mask = ds.load_mask(sample, *pixels.shape)
                if mask is not None and mask.shape[-2:] != pixels.shape:
                    raise SampleError(
                        sample.get("mask_file") or sample["file"], "mask", "size differs from the image"
                    )
            decoded += 1
        except SampleError as e:
            failures.append(e.failure)
    return CheckReport(
        dataset=dataset,
        root=str(ds.root),
        counts=dict(parsed.counts),
        expected=dict(ds.expected),
        failures=failures,
        decoded=decoded,
        split_scheme=scheme,
        split_sizes={s: int((table["split"] == s).sum()) for s in ("train", "val", "test")},
        sources=dict(parsed.sources),
    )
