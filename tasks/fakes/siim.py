"""Fake SIIM-ACR Pneumothorax download (the ``siim-train-test`` re-upload), in the official layout.

``train-rle.csv`` with the original header ``ImageId, EncodedPixels`` (leading space), ``-1`` for images
without pneumothorax, and several rows for images with several regions (some regions overlap, so only
their UNION is the right mask); the RLE is SIIM's relative, column-major encoding. DICOMs are nested
``dicom-images-train/<StudyInstanceUID>/<SeriesInstanceUID>/<ImageId>.dcm``; most are 8-bit JPEG
baseline like the real release, some are 12-bit uncompressed MONOCHROME1 with a modality LUT and some
12-bit JPEG 2000, so that every DICOM rule is exercised. Every region is a bright blob (the signal).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from tasks.fakes.common import add_blob, chest_background, to_uint, write_dicom
from tasks.rasterize import ellipse_to_mask
from tasks.rle import encode_siim_rle

ORG_ROOT = "1.2.276.0.7230010.3.1"  # the UID root of the real release


def _region(rng: np.random.Generator, size: int, lung: int) -> tuple[float, float, float, float]:
    w = float(rng.integers(int(0.12 * size), int(0.25 * size)))
    h = float(rng.integers(int(0.15 * size), int(0.3 * size)))
    cx = (0.3 if lung == 0 else 0.7) * size + rng.normal(0, 0.03 * size)
    cy = rng.uniform(0.3, 0.6) * size
    return (
        float(np.clip(round(cx - w / 2), 0, size - w)),
        float(np.clip(round(cy - h / 2), 0, size - h)),
        w,
        h,
    )


def make_fake_siim(
    root: str | os.PathLike,
    n_patients: int = 40,
    seed: int = 0,
    size: int = 1024,
    positive_fraction: float = 0.5,
    label_file: str = "train-rle.csv",
) -> Path:
    """Write a fake SIIM-ACR download under ``root`` and return ``root``.

    Args:
        n_patients: patients; every 7th has a second image (so splits are tested by patient).
        size: image side (the real release: 1024).
        positive_fraction: share of images with pneumothorax; a third of those have 2-3 regions, the
            second overlapping the first.
        label_file: ``train-rle.csv`` or the mirror name ``stage_2_train.csv``.
    """
    rng = np.random.default_rng(seed)  # labels and layout
    noise = np.random.default_rng([seed, 1])  # pixels: the labels do not depend on the image size
    root = Path(root)
    images_dir = root / "dicom-images-train"
    images_dir.mkdir(parents=True, exist_ok=True)
    rows: list[str] = []
    i = 0
    for p in range(n_patients):
        patient_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        for _ in range(2 if p % 7 == 6 else 1):
            stamp = f"1517875{int(rng.integers(100, 260))}.{int(rng.integers(100000, 999999))}"
            image_id = f"{ORG_ROOT}.4.8323329.{1000 + i}.{stamp}"
            study = f"{ORG_ROOT}.2.8323329.{1000 + i}.{stamp}"
            series = f"{ORG_ROOT}.3.8323329.{1000 + i}.{stamp}"
            img = chest_background(noise, size, size)
            if rng.random() < positive_fraction:
                n_regions = 1 if rng.random() < 2 / 3 else int(rng.integers(2, 4))
                first = _region(rng, size, int(rng.integers(0, 2)))
                regions = [first]
                for k in range(1, n_regions):
                    if k == 1:  # overlaps the first: the union is smaller than the sum
                        x, y, w, h = first
                        regions.append((x + w / 2, y + h / 3, w, h * 0.8))
                    else:
                        regions.append(_region(rng, size, 1 - int(first[0] > size / 2)))
                for x, y, w, h in regions:
                    w, h = min(w, size - x), min(h, size - y)
                    add_blob(img, x, y, w, h)
                    region = ellipse_to_mask(x, y, x + w, y + h, size, size)
                    rows.append(f"{image_id}, {encode_siim_rle(region)}")
            else:
                rows.append(f"{image_id}, -1")
            kind = i % 8
            path = images_dir / study / series / f"{image_id}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            common = {
                "view_position": "PA" if i % 3 else "AP",
                "seed": seed * 100003 + i,
                "uids": (study, series, image_id),
            }
            if kind == 3:  # 12-bit, uncompressed, inverted grey levels, with a modality LUT
                write_dicom(
                    path,
                    to_uint(1.0 - img, 12),
                    patient_id,
                    bits_stored=12,
                    photometric="MONOCHROME1",
                    rescale=(1.0, -1024.0),
                    **common,
                )
            elif kind == 5:  # 12-bit JPEG 2000 (lossless)
                write_dicom(
                    path, to_uint(img, 12), patient_id, bits_stored=12, compression="jpeg2000", **common
                )
            else:  # the real release: 8-bit JPEG baseline
                write_dicom(path, to_uint(img, 8), patient_id, compression="jpeg", **common)
            i += 1
    order = rng.permutation(len(rows))
    text = "ImageId, EncodedPixels\n" + "".join(rows[j] + "\n" for j in order)
    (root / label_file).write_text(text)
    return root
