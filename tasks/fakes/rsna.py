"""Fake RSNA Pneumonia Detection Challenge download (stage 2 train part), in the official layout.

``stage_2_train_labels.csv`` with the real header, one row per box, negatives as one row with empty
coordinates and ``Target=0``, coordinates written like the real file (``264.0``); 1024 x 1024 8-bit
MONOCHROME2 DICOMs ``stage_2_train_images/<patientId>.dcm`` with PA and AP views, most JPEG-baseline
compressed like the real release, some uncompressed. Positive patients have 1-3 boxes, each marked by a
bright blob.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from tasks.fakes.common import add_blob, chest_background, to_uint, write_dicom


def make_fake_rsna(
    root: str | os.PathLike,
    n_patients: int = 40,
    seed: int = 0,
    size: int = 1024,
    positive_fraction: float = 0.5,
) -> Path:
    """Write a fake RSNA download under ``root`` and return ``root``.

    Args:
        n_patients: images (RSNA has one per patient).
        size: image side in pixels (the real release: 1024).
        positive_fraction: share of patients with boxes.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    images = root / "stage_2_train_images"
    images.mkdir(parents=True, exist_ok=True)
    rows: list[str] = []
    n_pos = round(positive_fraction * n_patients)
    for i in range(n_patients):
        pid = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        img = chest_background(rng, size, size)
        if i < n_pos:
            n_boxes = int(rng.integers(1, 4))
            sides = rng.permutation([0, 1])  # at most one box per lung, plus one more anywhere
            for b in range(n_boxes):
                w = float(rng.integers(int(0.12 * size), int(0.3 * size)))
                h = float(rng.integers(int(0.12 * size), int(0.3 * size)))
                if b < 2:
                    cx = (0.3 if sides[b] == 0 else 0.7) * size
                    x = float(np.clip(round(cx - w / 2 + rng.normal(0, 0.03 * size)), 0, size - w))
                    y = float(np.clip(round(rng.uniform(0.2, 0.8) * size - h / 2), 0, size - h))
                else:
                    x = float(rng.integers(0, int(size - w)))
                    y = float(rng.integers(0, int(size - h)))
                add_blob(img, x, y, w, h)
                rows.append(f"{pid},{x:.1f},{y:.1f},{w:.1f},{h:.1f},1")
        else:
            rows.append(f"{pid},,,,,0")
        write_dicom(
            images / f"{pid}.dcm",
            to_uint(img, 8),
            pid,
            compression=None if i % 3 == 2 else "jpeg",
            view_position="PA" if i % 2 else "AP",
            seed=seed * 100003 + i,
        )
    order = rng.permutation(len(rows))  # the real file is not sorted by patient
    text = "patientId,x,y,width,height,Target\n" + "".join(rows[j] + "\n" for j in order)
    (root / "stage_2_train_labels.csv").write_text(text)
    return root
