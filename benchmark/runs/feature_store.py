"""A store of frozen-encoder features: computed once, memory-mapped, shared by every run that needs them.

A frozen task (encoder weights and BatchNorm statistics fixed, no augmentation in the protocol) sees the
same features for an image in every epoch, every learning-rate trial and every seed of a file or ImageNet
backbone; only the head trains. So the features are computed once per *entry* and the head is trained on
them (``benchmark/openmmlab/feature_cache_hook.py`` plugs the store into the mmengine Runner).

An entry is keyed by everything that determines the features (:func:`entry_key`): the digest of the
encoder's actual weights and BatchNorm buffers (so a random-init backbone, whose weights depend on the
run's seed, gets one entry per seed, and a changed weights file a new one), the architecture, the prepared
dataset (hash of its manifest, which holds the split hash), the subset and the hash of its annotation file,
the resolution, the input normalisation (the training split's mean / std), the feature levels, the
storage dtype, mixed precision and the cache format version. Any change gives a new key; old entries are
never used again.

Layout of an entry (``ROOT/<key>/``)::

    index.json      the key payload, image ids in row order, per-level shape, dtype, bytes, timings
    c3.npy ...      one array per feature level, shape (N, C, H, W), float16 by default (np.load mmap)

An entry is written into a temporary folder ``ROOT/.tmp-<key>-<pid>-<n>/`` and renamed to ``ROOT/<key>``
when complete, so a reader never sees a half-written entry; a process killed while building leaves only a
temporary folder, which is removed by the next build of the same key. Two processes that need the same
entry at once (parallel sweep workers, DDP ranks) do not both compute it: one holds the build claim
(``ROOT/<key>.lock``, see :mod:`benchmark.runs.claims`), the other waits for the entry to appear.

The default root is ``$CXRBENCH_FEATURE_CACHE`` if set, else ``OUT/feature_cache`` under the output folder
of ``cxrbench evaluate``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark.runs.claims import try_claim
from tasks.io import write_json_atomic

CACHE_FORMAT = 2  # 2: features are the backbone's levels (its input convention and resolution applied)
ENV_VAR = "CXRBENCH_FEATURE_CACHE"
DIR_NAME = "feature_cache"


def default_root(out_dir: str | os.PathLike) -> Path:
    """``$CXRBENCH_FEATURE_CACHE`` if set, else ``OUT/feature_cache``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path(out_dir) / DIR_NAME


def entry_key(payload: Mapping) -> str:
    """The entry name: a hash of the payload (24 hex digits)."""
    text = json.dumps({**payload, "format": CACHE_FORMAT}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@dataclass
class CacheEntry:
    """A complete entry, opened read-only with its arrays memory-mapped."""

    path: Path
    key: str
    index: dict
    arrays: dict[int, np.ndarray] = field(repr=False, default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return self.index["ids"]

    @property
    def levels(self) -> list[int]:
        return [int(level) for level in self.index["levels"]]

    @property
    def nbytes(self) -> int:
        return int(self.index["bytes"])

    def rows(self) -> dict[str, int]:
        return {image_id: row for row, image_id in enumerate(self.ids)}


def _array_file(level: int) -> str:
    return f"c{level}.npy"


def open_entry(path: Path) -> CacheEntry | None:
    """Open a finished entry; None if it is missing or not complete and consistent."""
    try:
        index = json.loads((path / "index.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not index.get("complete") or index.get("format") != CACHE_FORMAT:
        return None
    arrays = {}
    n = len(index["ids"])
    for level, shape in index["shapes"].items():
        try:
            arr = np.load(path / _array_file(int(level)), mmap_mode="r")
        except (OSError, ValueError):
            return None
        if arr.shape != (n, *shape) or arr.dtype != np.dtype(index["dtype"]):
            return None
        arrays[int(level)] = arr
    return CacheEntry(path, path.name, index, arrays)


class EntryWriter:
    """Fills the arrays of an entry being built (the shapes come from ``shapes`` or the first write)."""

    def __init__(
        self, tmp: Path, ids: Sequence[str], shapes: Mapping[int, Sequence[int]] | None, dtype
    ) -> None:
        self.tmp = tmp
        self.ids = list(ids)
        self.dtype = np.dtype(dtype)
        self.arrays: dict[int, np.ndarray] = {}
        self.shapes: dict[int, tuple[int, ...]] = {}
        if shapes:
            self._create({int(k): tuple(v) for k, v in shapes.items()})
        self.filled = np.zeros(len(self.ids), dtype=bool)
        self.row_of = {image_id: row for row, image_id in enumerate(self.ids)}
        if len(self.row_of) != len(self.ids):
            raise ValueError("feature cache: image ids are not unique")

    def _create(self, shapes: dict[int, tuple[int, ...]]) -> None:
        self.shapes = shapes
        self.arrays = {
            level: np.lib.format.open_memmap(
                self.tmp / _array_file(level), mode="w+", dtype=self.dtype, shape=(len(self.ids), *shape)
            )
            for level, shape in shapes.items()
        }

    def write(self, image_ids: Sequence[str], features: Mapping[int, np.ndarray]) -> None:
        """Store the features of some images (any order; each ``features[level]`` is (B, C, H, W))."""
        if not self.arrays:
            self._create({int(k): tuple(np.shape(v)[1:]) for k, v in features.items()})
        rows = np.array([self.row_of[i] for i in image_ids])
        for level, arr in self.arrays.items():
            value = np.asarray(features[level])
            if value.shape[1:] != arr.shape[1:]:
                raise ValueError(
                    f"level C{level}: features of shape {value.shape[1:]}, expected {arr.shape[1:]}"
                )
            stored = value.astype(self.dtype, copy=False)
            if not np.isfinite(stored).all() and np.isfinite(value).all():
                raise OverflowError(
                    f"level C{level}: features beyond the range of {self.dtype.name} "
                    f"(max |x| = {float(np.abs(value).max()):.3g}); use --feature-cache-dtype float32"
                )
            arr[rows] = stored
        self.filled[rows] = True

    def finish(self) -> int:
        missing = [self.ids[i] for i in np.flatnonzero(~self.filled)[:5]]
        if missing or not self.arrays:
            raise RuntimeError(f"feature cache: no features written for {missing or 'any image'}")
        total = 0
        for arr in self.arrays.values():
            arr.flush()
            total += arr.nbytes
        self.arrays = {}
        return total


class FeatureStore:
    """The feature cache under one root folder (see the module docstring)."""

    def __init__(
        self, root: str | os.PathLike, wait_timeout_s: float = 6 * 3600, poll_s: float = 1.0
    ) -> None:
        self.root = Path(root)
        self.wait_timeout_s = wait_timeout_s
        self.poll_s = poll_s

    def path(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str) -> CacheEntry | None:
        return open_entry(self.path(key))

    def _cleanup_tmp(self, key: str) -> None:
        """Remove temporary folders of this key left by killed builders (we hold its build claim)."""
        for tmp in self.root.glob(f".tmp-{key}-*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def get_or_build(
        self,
        key: str,
        payload: Mapping,
        ids: Sequence[str] | Callable[[], Sequence[str]],
        shapes: Mapping[int, Sequence[int]] | None,
        fill: Callable[[EntryWriter], None],
        dtype: str = "float16",
        provenance: Mapping | None = None,
    ) -> tuple[CacheEntry, dict]:
        """The entry ``key``, built by ``fill(writer)`` if it does not exist yet.

        ``ids`` (the images, in row order) may be a callable, evaluated only when the entry is built;
        ``shapes`` (per level, without the batch dimension) may be None: taken from the first write.
        ``provenance`` is stored in the index for people reading the cache (not part of the key).

        Returns:
            The entry and a report: ``built`` (whether this call computed it), ``seconds`` (computing or
            waiting for it), ``bytes``, ``path``.
        """
        started = time.time()
        waited = False
        while True:
            entry = self.get(key)
            if entry is not None:
                return entry, self._report(entry, built=False, waited=waited, started=started)
            self.root.mkdir(parents=True, exist_ok=True)
            claim = try_claim(self.root / f"{key}.lock", purpose="feature cache build")
            if claim is None:  # someone else is computing it: wait for the entry to appear
                if time.time() - started > self.wait_timeout_s:
                    raise TimeoutError(
                        f"feature cache: waited {self.wait_timeout_s:.0f} s for {self.path(key)} to be built "
                        f"by another process (claim {self.root / (key + '.lock')}); remove the claim if "
                        "that process is gone"
                    )
                waited = True
                time.sleep(self.poll_s)
                continue
            with claim:
                entry = self.get(key)  # finished while we were acquiring the claim
                if entry is not None:
                    return entry, self._report(entry, built=False, waited=waited, started=started)
                self._cleanup_tmp(key)
                broken = self.path(key)
                if broken.exists():  # an entry that exists but does not open: rebuild it
                    shutil.rmtree(broken, ignore_errors=True)
                tmp = self.root / f".tmp-{key}-{os.getpid()}-{time.monotonic_ns()}"
                tmp.mkdir(parents=True)
                try:
                    ids = list(ids() if callable(ids) else ids)
                    writer = EntryWriter(tmp, ids, shapes, dtype)
                    fill(writer)
                    nbytes = writer.finish()
                    index = {
                        "format": CACHE_FORMAT,
                        "key": key,
                        "payload": dict(payload),
                        "ids": list(ids),
                        "provenance": dict(provenance or {}),
                        "levels": sorted(writer.shapes),
                        "shapes": {str(k): list(v) for k, v in sorted(writer.shapes.items())},
                        "dtype": np.dtype(dtype).name,
                        "bytes": nbytes,
                        "build_seconds": round(time.time() - started, 3),
                        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                        "complete": True,
                    }
                    write_json_atomic(tmp / "index.json", index)
                    os.rename(tmp, self.path(key))  # the entry appears complete, or not at all
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
            entry = self.get(key)
            if entry is None:
                raise RuntimeError(f"feature cache: {self.path(key)} was written but does not open")
            return entry, self._report(entry, built=True, waited=False, started=started)

    @staticmethod
    def _report(entry: CacheEntry, built: bool, waited: bool, started: float) -> dict:
        return {
            "key": entry.key,
            "path": str(entry.path),
            "built": built,
            "waited_for_other_process": waited,
            "seconds": round(time.time() - started, 3),
            "bytes": entry.nbytes,
            "n_images": len(entry.ids),
            "levels": entry.levels,
            "dtype": entry.index["dtype"],
        }

    def entries(self) -> list[CacheEntry]:
        """All complete entries under the root."""
        if not self.root.is_dir():
            return []
        found = (
            open_entry(p) for p in sorted(self.root.iterdir()) if p.is_dir() and not p.name.startswith(".")
        )
        return [e for e in found if e is not None]

    def total_bytes(self) -> int:
        return sum(e.nbytes for e in self.entries())
