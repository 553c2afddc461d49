"""Protocol geometry: pad to a centred square, resize (bilinear images, nearest masks), scale boxes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Geometry:
    """How an original image maps onto the prepared square.

    A point (x, y) of the original lands at ((x + left) * scale, (y + top) * scale).
    """

    height: int
    width: int
    size: int

    @property
    def side(self) -> int:
        return max(self.height, self.width)

    @property
    def top(self) -> int:
        return (self.side - self.height) // 2

    @property
    def left(self) -> int:
        return (self.side - self.width) // 2

    @property
    def scale(self) -> float:
        return self.size / self.side

    def boxes(self, boxes_xywh: np.ndarray) -> np.ndarray:
        """Map (x, y, w, h) boxes of the original onto the prepared image, clipped to it."""
        b = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
        x1 = np.clip((b[:, 0] + self.left) * self.scale, 0, self.size)
        y1 = np.clip((b[:, 1] + self.top) * self.scale, 0, self.size)
        x2 = np.clip((b[:, 0] + b[:, 2] + self.left) * self.scale, 0, self.size)
        y2 = np.clip((b[:, 1] + b[:, 3] + self.top) * self.scale, 0, self.size)
        return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)


def pad_to_square(arr: np.ndarray, geometry: Geometry, value: float = 0) -> np.ndarray:
    """Zero-pad an (H, W) or (C, H, W) array to the centred square of ``geometry``."""
    side, top, left = geometry.side, geometry.top, geometry.left
    shape = arr.shape[:-2] + (side, side)
    out = np.full(shape, value, dtype=arr.dtype)
    out[..., top : top + arr.shape[-2], left : left + arr.shape[-1]] = arr
    return out


def equalize(pixels: np.ndarray) -> np.ndarray:
    """Histogram equalisation as the protocol does it (scikit-image ``exposure.equalize_hist``), in float64
    as the reference code (its images are ``np.array(..., dtype=float) / 255.``): equalising in float32
    puts some grey levels into neighbouring bins (the statistics moved by up to 7e-6)."""
    from skimage import exposure

    return exposure.equalize_hist(np.asarray(pixels, dtype=np.float64))


# The padded square goes to Pillow as it is while it costs at most this many times the image's own pixels
# (every ordinary X-ray: aspect ratios up to 4:1); beyond that (a 20000 x 64 strip, a 1 x 70000 line) the
# same resampling is computed from the image alone, without the square (see ``_resize_padded_exact``).
PAD_BUDGET = 4


def prepare_image(pixels: np.ndarray, size: int) -> np.ndarray:
    """[0, 1] grey levels of the original -> padded, bilinearly resized uint8 square.

    Memory is bounded by the image's real size: the zero-padded square is never built for an image much
    longer than wide (or the reverse); the result is bit-for-bit what Pillow gives on that square.
    """
    g = Geometry(*pixels.shape, size)
    if g.side * g.side <= PAD_BUDGET * g.height * g.width:
        square = pad_to_square(pixels.astype(np.float32), g)
        resized = np.asarray(Image.fromarray(square, mode="F").resize((size, size), Image.Resampling.BILINEAR))
    else:
        resized = _resize_padded_exact(pixels.astype(np.float32), g)
    return np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)


def _bilinear_coeffs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's bilinear resampling coefficients (``precompute_coeffs`` in libImaging/Resample.c), with
    the same double-precision operations in the same order: per output index the first input index, the
    number of taps and the normalised weights (zero beyond the taps)."""
    scale = float(in_size) / out_size  # (double)(in1 - in0) / outSize with in0 = 0, in1 = in_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = 0.0 + (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    ss = 1.0 / filterscale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)  # C casts truncate towards zero
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    weights = np.zeros((out_size, ksize), dtype=np.float64)
    total = np.zeros(out_size, dtype=np.float64)
    for x in range(ksize):
        t = np.abs(((x + xmin).astype(np.float64) - center + 0.5) * ss)
        w = np.where((x < xmax) & (t < 1.0), 1.0 - t, 0.0)
        weights[:, x] = w
        total = total + w  # ww += w, in tap order
    nonzero = total != 0.0
    weights[nonzero] = weights[nonzero] / total[nonzero, None]
    return xmin, xmax, weights


def _resample_axis(values: np.ndarray, first: int, pad_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """One Pillow resampling pass along axis 0 of ``values`` placed at ``first`` in a zero line of
    ``pad_size``: the float32 result for the output indices that see any of ``values`` (the others are
    exactly 0), and those indices. Zeros add nothing to Pillow's sums (all terms are >= 0), so leaving
    them out keeps every sum bit-for-bit."""
    xmin, xmax, weights = _bilinear_coeffs(pad_size, out_size)
    n = values.shape[0]
    touched = np.flatnonzero((xmin < first + n) & (xmin + xmax > first))
    acc = np.zeros((len(touched),) + values.shape[1:], dtype=np.float64)
    for x in range(weights.shape[1]):
        src = xmin[touched] + x - first
        ok = (x < xmax[touched]) & (src >= 0) & (src < n)
        if ok.any():
            rows = np.flatnonzero(ok)
            acc[rows] = acc[rows] + values[src[rows]].astype(np.float64) * weights[touched[rows], x][:, None]
    return acc.astype(np.float32), touched


def _resize_padded_exact(pixels: np.ndarray, g: Geometry) -> np.ndarray:
    """``Image.resize`` (bilinear, mode F) of the zero-padded square, from the image alone: Pillow's two
    passes (horizontal into a float32 temporary, then vertical), restricted to what the image reaches.
    Memory ~ (height + size) x (the output columns the image reaches) instead of side^2."""
    size = g.size
    out = np.zeros((size, size), dtype=np.float32)
    if g.side == size:  # Pillow copies an image already of the requested size
        out[g.top : g.top + g.height, g.left : g.left + g.width] = pixels
        return out
    temp, cols = _resample_axis(pixels.T, g.left, g.side, size)  # horizontal pass: (cols, height)
    vert, rows = _resample_axis(temp.T, g.top, g.side, size)  # vertical pass: (rows, cols)
    out[np.ix_(rows, cols)] = vert
    return out


def _nearest_index(in_size: int, out_size: int) -> np.ndarray:
    """The source index Pillow's nearest-neighbour resize picks for each output index along one axis,
    read from Pillow itself (a one-line image of the indices; its scale is separable per axis)."""
    line = Image.fromarray(np.arange(in_size, dtype=np.int32)[None, :], mode="I")
    return np.asarray(line.resize((out_size, 1), Image.Resampling.NEAREST))[0].astype(np.int64)


def prepare_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Class-index mask (H, W), or stacked binary masks (C, H, W), -> padded, nearest-resized uint8.

    Bit-for-bit Pillow's nearest resize of the zero-padded square, without building it: Pillow picks one
    source row and column per output row and column, and those picks are taken from Pillow.
    """
    g = Geometry(mask.shape[-2], mask.shape[-1], size)
    mask = np.asarray(mask).astype(np.uint8, copy=False)
    index = _nearest_index(g.side, size) if g.side != size else np.arange(size)
    rows = np.flatnonzero((index >= g.top) & (index < g.top + g.height))
    cols = np.flatnonzero((index >= g.left) & (index < g.left + g.width))
    out = np.zeros(mask.shape[:-2] + (size, size), dtype=np.uint8)
    picked = mask[..., index[rows] - g.top, :][..., index[cols] - g.left]
    out[..., rows[:, None], cols[None, :]] = picked
    return out
