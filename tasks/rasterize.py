"""Shapes -> pixel masks, exactly: a pixel (row r, column c) covers [c, c+1) x [r, r+1) and is inside a
shape when its centre (c + 0.5, r + 0.5) is.

Edges follow one half-open rule everywhere, so that two shapes sharing an edge never both claim a pixel
centre lying on it: a centre on a left / top edge of a box or polygon is inside, one on a right / bottom
edge is outside. An ellipse is closed (a centre on its boundary is inside).

Every function takes shape coordinates in some frame and an optional ``transform`` (scale, dx, dy) mapping
a point (x, y) to ((x + dx) * scale, (y + dy) * scale) - the map from an original image onto the prepared
square (``tasks.image.Geometry``) - so one shape is rasterised exactly at any size.
"""

from __future__ import annotations

import numpy as np

Transform = tuple[float, float, float]  # (scale, dx, dy)
IDENTITY: Transform = (1.0, 0.0, 0.0)


def _apply(points: np.ndarray, transform: Transform) -> np.ndarray:
    scale, dx, dy = transform
    out = np.asarray(points, dtype=np.float64).reshape(-1, 2).copy()
    out[:, 0] = (out[:, 0] + dx) * scale
    out[:, 1] = (out[:, 1] + dy) * scale
    return out


def boxes_to_mask(
    boxes_xywh,
    height: int,
    width: int,
    mask: np.ndarray | None = None,
    value: int = 1,
    transform: Transform = IDENTITY,
) -> np.ndarray:
    """Fill (x, y, w, h) boxes; a pixel is inside when its centre is inside the box."""
    out = np.zeros((height, width), dtype=np.uint8) if mask is None else mask
    for x, y, w, h in np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4):
        (x, y), (x2, y2) = _apply(np.array([[x, y], [x + w, y + h]]), transform)
        c0 = max(int(np.ceil(x - 0.5)), 0)
        c1 = min(int(np.ceil(x2 - 0.5)), width)
        r0 = max(int(np.ceil(y - 0.5)), 0)
        r1 = min(int(np.ceil(y2 - 0.5)), height)
        if c1 > c0 and r1 > r0:
            out[r0:r1, c0:c1] = value
    return out


def ellipse_to_mask(
    x1: float,
    y1: float,
    x2: float,
    y2: float,
    height: int,
    width: int,
    mask: np.ndarray | None = None,
    value: int = 1,
    transform: Transform = IDENTITY,
) -> np.ndarray:
    """Fill the ellipse inscribed in the rectangle with corners (x1, y1) and (x2, y2).

    A pixel is inside when ((cx' - cx) / a)^2 + ((cy' - cy) / b)^2 <= 1 for its centre (cx', cy').
    """
    out = np.zeros((height, width), dtype=np.uint8) if mask is None else mask
    (x1, y1), (x2, y2) = _apply(np.array([[x1, y1], [x2, y2]]), transform)
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    a, b = (x2 - x1) / 2, (y2 - y1) / 2
    if a <= 0 or b <= 0:
        return out
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    c0, c1 = max(int(np.floor(x1)), 0), min(int(np.ceil(x2)), width)
    r0, r1 = max(int(np.floor(y1)), 0), min(int(np.ceil(y2)), height)
    if c1 <= c0 or r1 <= r0:
        return out
    xs = (np.arange(c0, c1) + 0.5 - cx) / a
    ys = (np.arange(r0, r1) + 0.5 - cy) / b
    inside = ys[:, None] ** 2 + xs[None, :] ** 2 <= 1.0
    out[r0:r1, c0:c1][inside] = value
    return out


def polygon_to_mask(
    points_xy,
    height: int,
    width: int,
    mask: np.ndarray | None = None,
    value: int = 1,
    transform: Transform = IDENTITY,
) -> np.ndarray:
    """Fill a simple or self-intersecting polygon (even-odd rule) given as (x, y) vertices in order.

    Scan-line fill at pixel centres: on row r (y = r + 0.5) every edge with y_min <= y < y_max crosses at
    some x; the crossings, sorted, pair up into spans [x_left, x_right) and a pixel is inside when its
    centre x lies in a span.
    """
    out = np.zeros((height, width), dtype=np.uint8) if mask is None else mask
    pts = _apply(points_xy, transform)
    if len(pts) < 3:
        return out
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    r_lo = max(int(np.ceil(pts[:, 1].min() - 0.5)), 0)
    r_hi = min(int(np.ceil(pts[:, 1].max() - 0.5)), height)
    for r in range(r_lo, r_hi):
        y = r + 0.5
        lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
        hit = (lo <= y) & (y < hi)
        if not hit.any():
            continue
        t = (y - y0[hit]) / (y1[hit] - y0[hit])
        xs = np.sort(x0[hit] + t * (x1[hit] - x0[hit]))
        for xl, xr in zip(xs[0::2], xs[1::2]):
            c0 = max(int(np.ceil(xl - 0.5)), 0)
            c1 = min(int(np.ceil(xr - 0.5)), width)
            if c1 > c0:
                out[r, c0:c1] = value
    return out


SHAPES = ("rectangle", "ellipse", "polygon")


def shape_bbox(kind: str, points) -> list[float]:
    """(x, y, w, h) bounding box of a shape given by its corner points (rectangle / ellipse: the two
    corners of the enclosing rectangle; polygon: its vertices)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x1, y1 = p.min(axis=0)
    x2, y2 = p.max(axis=0)
    return [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]


def shape_to_mask(
    kind: str,
    points,
    height: int,
    width: int,
    mask: np.ndarray | None = None,
    value: int = 1,
    transform: Transform = IDENTITY,
) -> np.ndarray:
    """Rasterise one shape (``rectangle``, ``ellipse`` inscribed in its rectangle, or ``polygon``)."""
    if kind == "rectangle":
        return boxes_to_mask([shape_bbox(kind, points)], height, width, mask, value, transform)
    if kind == "ellipse":
        (x1, y1), (x2, y2) = np.asarray(points, dtype=np.float64).reshape(2, 2)
        return ellipse_to_mask(x1, y1, x2, y2, height, width, mask, value, transform)
    if kind == "polygon":
        return polygon_to_mask(points, height, width, mask, value, transform)
    raise ValueError(f"unknown shape {kind!r}; expected one of {SHAPES}")
