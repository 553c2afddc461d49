"""Fake Object-CXR download in the official layout: ``train.csv`` / ``dev.csv`` (``image_name,annotation``)
beside ``train/`` and ``dev/`` JPGs of varying size - or ``train.zip`` / ``dev.zip`` instead of the folders.

Half of the images carry 1-3 foreign objects of all three annotation types (0 rectangle, 1 ellipse, 2
polygon), each drawn as a bright radiopaque shape exactly where its annotation says (the signal). Images
are small (``min_size``-``max_size`` px, the real ones ~2000-3000 px) so that preparing them is fast.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.fakes.common import chest_background
from tasks.rasterize import shape_to_mask


def _shape(rng: np.random.Generator, kind: int, h: int, w: int) -> tuple[str, list[list[int]]]:
    side = int(rng.integers(max(6, min(h, w) // 10), max(10, min(h, w) // 4)))
    cx = int(rng.integers(side, w - side))
    cy = int(rng.integers(side, h - side))
    if kind in (0, 1):
        a = int(rng.integers(side // 2 + 2, side + 2))
        b = int(rng.integers(side // 2 + 2, side + 2))
        return ("rectangle" if kind == 0 else "ellipse"), [
            [cx - a // 2, cy - b // 2],
            [cx + a // 2 + 1, cy + b // 2 + 1],
        ]
    n = int(rng.integers(5, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.45, 1.0, n) * side * 0.6
    pts = [[int(round(cx + r * np.cos(t))), int(round(cy + r * np.sin(t)))] for r, t in zip(radii, angles)]
    return "polygon", pts


def _annotation(objects: list[tuple[int, list[list[int]]]]) -> str:
    return ";".join(f"{kind} " + " ".join(f"{x} {y}" for x, y in pts) for kind, pts in objects)


def make_fake_object_cxr(
    root: str | os.PathLike,
    n_patients: int = 40,
    seed: int = 0,
    n_dev: int | None = None,
    min_size: int = 160,
    max_size: int = 256,
    as_zip: bool = False,
) -> Path:
    """Write a fake Object-CXR download under ``root`` and return ``root``.

    Args:
        n_patients: training images (Object-CXR has no patients; one image each); half with objects.
        n_dev: dev (= test) images (default: a third of ``n_patients``, at least 6).
        min_size, max_size: range of image heights and widths (varying, like the real release).
        as_zip: write ``train.zip`` / ``dev.zip`` (members ``train/<name>.jpg``) instead of folders.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n_dev = max(6, n_patients // 3) if n_dev is None else n_dev
    number = 1
    for part, n in (("train", n_patients), ("dev", n_dev)):
        files: dict[str, bytes] = {}
        lines = ["image_name,annotation"]
        for i in range(n):
            h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
            img = chest_background(rng, h, w)
            objects = []
            if i % 2 == 0:
                kinds = rng.permutation([0, 1, 2])[: int(rng.integers(1, 4))]
                for kind in kinds:
                    shape, pts = _shape(rng, int(kind), h, w)
                    inside = shape_to_mask(shape, pts, h, w).astype(bool)
                    img[inside] = np.clip(0.92 + rng.normal(0, 0.02, int(inside.sum())), 0, 1)
                    objects.append((int(kind), pts))
            name = f"{number:05d}.jpg"
            number += 1
            buf = __import__("io").BytesIO()
            Image.fromarray(np.rint(img * 255).astype(np.uint8), mode="L").save(
                buf, format="JPEG", quality=95
            )
            files[name] = buf.getvalue()
            lines.append(f"{name},{_annotation(objects)}")
        if as_zip:
            with zipfile.ZipFile(root / f"{part}.zip", "w", compression=zipfile.ZIP_STORED) as z:
                for name, data in files.items():
                    z.writestr(f"{part}/{name}", data)
        else:
            (root / part).mkdir(exist_ok=True)
            for name, data in files.items():
                (root / part / name).write_bytes(data)
        (root / f"{part}.csv").write_text("\n".join(lines) + "\n")
    return root
