"""Protocol geometry: pad to a centred square, resize (bilinear images, nearest masks), scale boxes."""

from __future__ import annotations

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


def prepare_image(pixels: np.ndarray, size: int) -> np.ndarray:
    """[0, 1] grey levels of the original -> padded, bilinearly resized uint8 square."""
    g = Geometry(*pixels.shape, size)
    square = pad_to_square(pixels.astype(np.float32), g)
    resized = np.asarray(Image.fromarray(square, mode="F").resize((size, size), Image.Resampling.BILINEAR))
    return np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)


def prepare_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Class-index mask (H, W), or stacked binary masks (C, H, W), -> padded, nearest-resized uint8."""
    g = Geometry(mask.shape[-2], mask.shape[-1], size)
    square = pad_to_square(mask.astype(np.uint8), g)
    if square.ndim == 2:
        return np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.NEAREST))
    return np.stack(
        [np.asarray(Image.fromarray(m).resize((size, size), Image.Resampling.NEAREST)) for m in square]
    )
