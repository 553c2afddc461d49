"""Run-length encodings: the SIIM-ACR "relative" RLE (read and written exactly) and COCO RLE.

SIIM-ACR: ``EncodedPixels`` is a space-separated list of pairs (start, length) over the image flattened in
column-major (Fortran) order, i.e. decode into a flat array of H * W and read it as the transpose. In the
"relative" encoding of the challenge's ``train-rle.csv`` each start is an offset from the END of the
previous run (the first from 0); ``-1`` means no pneumothorax. Some mirrors re-encoded the labels with
the standard Kaggle RLE (absolute, 1-based starts); :func:`detect_siim_encoding` tells the two apart over
a whole file and the manifest records which one was read.
"""

from __future__ import annotations

import re

import numpy as np

RELATIVE = "relative"
ABSOLUTE = "absolute"


# The largest start or length accepted: far beyond any image (10^15 pixels), and small enough that sums of
# millions of values cannot wrap round in int64 (a value near 2^63 must not become a valid-looking run).
MAX_RLE_VALUE = 10**15
_INTEGER = re.compile(r"-?[0-9]+")


class RLEError(ValueError):
    """A malformed run-length encoding (the message says what is wrong)."""


def parse_rle(text: str) -> np.ndarray:
    """Parse an ``EncodedPixels`` string into an (n, 2) int64 array of (start, length) pairs.

    ``-1`` and the empty string give an empty array (no foreground).

    Raises:
        RLEError: not (ASCII decimal) integers, a value above :data:`MAX_RLE_VALUE`, an odd count, a
            negative start or a non-positive length.
    """
    text = str(text).strip()
    if text in ("", "-1"):
        return np.zeros((0, 2), dtype=np.int64)
    tokens = text.split()
    for v in tokens:
        if not _INTEGER.fullmatch(v):
            raise RLEError(f"not an integer: {v[:40]!r}")
        if len(v.lstrip("-")) > 16 or abs(int(v)) > MAX_RLE_VALUE:
            raise RLEError(f"value {v[:40]} is too large (at most {MAX_RLE_VALUE})")
    values = np.array([int(v) for v in tokens], dtype=np.int64)
    if len(values) % 2:
        raise RLEError(f"odd number of values ({len(values)}): expected (start, length) pairs")
    pairs = values.reshape(-1, 2)
    if (pairs[:, 0] < 0).any():
        raise RLEError(f"negative start {int(pairs[pairs[:, 0] < 0][0, 0])}")
    if (pairs[:, 1] <= 0).any():
        raise RLEError(f"run length must be positive, got {int(pairs[pairs[:, 1] <= 0][0, 1])}")
    return pairs


def _absolute_consistent(pairs: np.ndarray) -> bool:
    starts, lengths = pairs[:, 0], pairs[:, 1]
    return bool((starts[1:] >= starts[:-1] + lengths[:-1]).all())


def detect_siim_encoding(all_pairs: list[np.ndarray]) -> str:
    """``absolute`` only when every multi-run row of a file has increasing, non-overlapping starts (never
    the case for a real relative file, whose later starts are small offsets); else ``relative``."""
    multi = [p for p in all_pairs if len(p) >= 2]
    if multi and all(_absolute_consistent(p) for p in multi):
        return ABSOLUTE
    return RELATIVE


def decode_siim_rle(pairs: np.ndarray, height: int, width: int, encoding: str = RELATIVE) -> np.ndarray:
    """(start, length) pairs -> (height, width) uint8 mask (column-major runs).

    Raises:
        RLEError: a run that ends outside the image.
    """
    flat = np.zeros(height * width, dtype=np.uint8)
    if len(pairs):
        pairs = np.asarray(pairs, dtype=np.int64)
        if (pairs < 0).any() or (pairs > height * width).any():
            # any start or length beyond the pixel count ends outside the image; checked before the sums
            # so that they cannot wrap round
            big = int(pairs.max()) if (pairs >= 0).all() else int(pairs.min())
            raise RLEError(
                f"value {big} outside 0..{height * width}: a run would end outside the {width}x{height} "
                f"image ({encoding} encoding)"
            )
        if encoding == RELATIVE:
            # start_k = end of run k-1 + offset_k, end_k = start_k + length_k
            ends = np.cumsum(pairs[:, 0] + pairs[:, 1])
            starts = ends - pairs[:, 1]
        elif encoding == ABSOLUTE:
            starts = pairs[:, 0] - 1
            ends = starts + pairs[:, 1]
            if (starts < 0).any():
                raise RLEError("absolute (1-based) RLE with a start of 0")
        else:
            raise ValueError(f"unknown RLE encoding {encoding!r}")
        if ends[-1] > height * width or (ends > height * width).any():
            raise RLEError(
                f"run ends at pixel {int(ends.max())} but the {width}x{height} image has {height * width} "
                f"pixels ({encoding} encoding)"
            )
        for s, e in zip(starts, ends):
            flat[s:e] = 1
    return flat.reshape(width, height).T.copy()


def encode_siim_rle(mask: np.ndarray) -> str:
    """(H, W) binary mask -> SIIM relative RLE string (``-1`` when empty); the inverse of decoding."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    padded = np.concatenate([[False], flat, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    if not len(edges):
        return "-1"
    starts, ends = edges[0::2], edges[1::2]
    prev_end = np.concatenate([[0], ends[:-1]])
    return " ".join(f"{s - p} {e - s}" for s, e, p in zip(starts, ends, prev_end))


def coco_rle(mask: np.ndarray) -> dict:
    """(H, W) binary mask -> COCO compressed RLE with ``counts`` as str (JSON-serialisable)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
