"""Shapes -> pixel masks, exactly: a pixel (row r, column c) covers [c, c+1) x [r, r+1) and is inside a
shape when its centre (c + 0.5, r + 0.5) is."""

from __future__ import annotations

import numpy as np


def boxes_to_mask(
    boxes_xywh, height: int, width: int, mask: np.ndarray | None = None, value: int = 1
) -> np.ndarray:
    """Fill (x, y, w, h) boxes; a pixel is inside when its centre is inside the box."""
    out = np.zeros((height, width), dtype=np.uint8) if mask is None else mask
    for x, y, w, h in np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4):
        c0 = max(int(np.ceil(x - 0.5)), 0)
        c1 = min(int(np.ceil(x + w - 0.5)), width)
        r0 = max(int(np.ceil(y - 0.5)), 0)
        r1 = min(int(np.ceil(y + h - 0.5)), height)
        if c1 > c0 and r1 > r0:
            out[r0:r1, c0:c1] = value
    return out
