"""Fake COVID Rural download (``covid_rural_annot``) in the official layout.

``jpgs/COVID-19-AR-<patient>_<MM-DD-YYYY>-XR.jpg`` (several dates per patient, varying sizes, some saved
as RGB like part of the real release) and ``pngs_masks/<same stem>.png`` with values 0/1 and the image's
size; opacities are bright blobs exactly where the mask is 1. Like the real folder, a few JPGs have no
mask, and ``jsons/`` plus the two CSVs exist but are not needed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.fakes.common import add_blob, chest_background
from tasks.rasterize import ellipse_to_mask


def make_fake_covid_rural(
    root: str | os.PathLike,
    n_patients: int = 20,
    seed: int = 0,
    min_size: int = 160,
    max_size: int = 256,
    images_without_mask: int = 2,
) -> Path:
    """Write a fake ``covid_rural_annot`` folder at ``root`` and return ``root``.

    Args:
        n_patients: patients, with 1-3 radiographs each (on different dates).
        min_size, max_size: range of image heights and widths.
        images_without_mask: extra JPGs without a mask (not part of the annotated set).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    for d in ("jpgs", "pngs_masks", "jsons"):
        (root / d).mkdir(parents=True, exist_ok=True)
    info = ["patient_id,age,sex"]
    i = 0
    for p in range(n_patients):
        patient = f"COVID-19-AR-{16406488 + 17 * p}"
        info.append(f"{patient},{int(rng.integers(20, 90))},{'FM'[p % 2]}")
        days = sorted(rng.choice(np.arange(1, 28), size=int(rng.integers(1, 4)), replace=False))
        for day in days:
            stem = f"{patient}_01-{int(day):02d}-2012-XR"
            h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
            img = chest_background(rng, h, w)
            mask = np.zeros((h, w), dtype=np.uint8)
            if i % 5 != 4:  # most radiographs of these COVID patients show opacities
                for lung in rng.permutation([0.3, 0.7])[: int(rng.integers(1, 3))]:
                    bw, bh = rng.uniform(0.18, 0.3) * w, rng.uniform(0.25, 0.4) * h
                    x = float(np.clip(lung * w - bw / 2 + rng.normal(0, 0.02 * w), 0, w - bw))
                    y = float(np.clip(rng.uniform(0.35, 0.65) * h - bh / 2, 0, h - bh))
                    add_blob(img, x, y, bw, bh, strength=0.3)
                    ellipse_to_mask(x, y, x + bw, y + bh, h, w, mask=mask)
            grey = np.rint(img * 255).astype(np.uint8)
            pil = (
                Image.fromarray(np.stack([grey] * 3, axis=-1), "RGB")
                if i % 4 == 1
                else Image.fromarray(grey, "L")
            )
            pil.save(root / "jpgs" / f"{stem}.jpg", quality=95)
            Image.fromarray(mask, "L").save(root / "pngs_masks" / f"{stem}.png")
            (root / "jsons" / f"{stem}.json").write_text('{"shapes": []}\n')
            i += 1
    for k in range(images_without_mask):
        stem = f"COVID-19-AR-{16406488 + 17 * k}_02-{k + 1:02d}-2012-XR"
        grey = np.rint(chest_background(rng, min_size, min_size) * 255).astype(np.uint8)
        Image.fromarray(grey, "L").save(root / "jpgs" / f"{stem}.jpg", quality=95)
    (root / "covid_rural_patient_info.csv").write_text("\n".join(info) + "\n")
    (root / "covid_rural_radiologist_notes.csv").write_text("patient_id,notes\n")
    return root
