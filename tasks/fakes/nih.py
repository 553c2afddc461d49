"""Fake NIH ChestX-ray14 download (bounding-box subset plus its surroundings) in the official layout.

``BBox_List_2017.csv`` with the real header ``Image Index,Finding Label,Bbox [x,y,w,h],,,`` and trailing
empty columns, ``Data_Entry_2017_v2020.csv`` with the real columns, ``test_list.txt`` /
``train_val_list.txt`` (split by patient), and PNGs under ``images_001/images/`` and
``images_002/images/`` (found by name). Patients have follow-ups in AP and PA views; annotated images
carry 1-3 boxes of the 8 findings, some overlapping across findings (the task is multi-label); every
finding has its own texture and brightness inside its box, so a per-class head can learn them apart.
Images are small (``size`` px; the real PNGs are 1024 x 1024).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.datasets.nih import CLASSES
from tasks.fakes.common import chest_background

LABEL_SPELLING = {"Infiltrate": "Infiltration"}  # Data_Entry spells it so; BBox_List says Infiltrate
OTHER_FINDINGS = ("Emphysema", "Fibrosis", "Hernia", "Consolidation", "Edema")


def _paint(img: np.ndarray, cls: int, box: list[float]) -> None:
    x, y, w, h = box
    r0, r1 = int(y), int(np.ceil(y + h))
    c0, c1 = int(x), int(np.ceil(x + w))
    yy, xx = np.mgrid[r0:r1, c0:c1]
    period = 2 + cls % 4
    stripes = ((xx // period + (yy // period) * (cls >= 4)) % 2).astype(np.float32)
    img[r0:r1, c0:c1] = np.clip(img[r0:r1, c0:c1] + 0.18 + 0.03 * cls + 0.12 * stripes, 0, 1)


def make_fake_nih(
    root: str | os.PathLike,
    n_patients: int = 30,
    seed: int = 0,
    size: int = 128,
    no_finding_per_patient: int = 1,
) -> Path:
    """Write a fake NIH ChestX-ray14 download under ``root`` and return ``root``.

    Args:
        n_patients: patients with 1-3 images each; about two thirds of the images get boxes (findings
            cycle through all 8 classes); the other patients' images are "No Finding" or other findings.
        size: image side (real: 1024).
        no_finding_per_patient: extra "No Finding" follow-ups per patient (the pool that the 100 "No
            Finding" test images are drawn from).
    """
    rng = np.random.default_rng(seed)  # labels and layout
    noise = np.random.default_rng([seed, 1])  # pixels: the labels do not depend on the image size
    root = Path(root)
    folders = [root / "images_001" / "images", root / "images_002" / "images"]
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)
    entry_lines = [
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
    ]
    bbox_lines = ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]
    test, train_val = [], []
    next_class = 0
    for p in range(n_patients):
        pid = 1 + 3 * p
        n_annotated = int(rng.integers(1, 4))
        names = []
        for f in range(n_annotated + no_finding_per_patient):
            name = f"{pid:08d}_{f:03d}.png"
            img = chest_background(noise, size, size)
            findings: list[str] = []
            if f < n_annotated:
                boxes = []
                for b in range(int(rng.integers(1, 3)) if f % 2 == 0 else 1):
                    cls = next_class % len(CLASSES)
                    next_class += 1
                    if b == 1 and boxes:  # overlaps the previous finding's box
                        px, py, pw, ph = boxes[-1][1]
                        box = [px + pw / 3, py + ph / 3, pw, ph]
                    else:
                        bw, bh = rng.uniform(0.15, 0.35, size=2) * size
                        box = [
                            rng.uniform(0.05, 0.9 - bw / size) * size,
                            rng.uniform(0.1, 0.9 - bh / size) * size,
                            bw,
                            bh,
                        ]
                    box = [
                        float(np.clip(box[0], 0, size - 4)),
                        float(np.clip(box[1], 0, size - 4)),
                        box[2],
                        box[3],
                    ]
                    box[2], box[3] = min(box[2], size - box[0]), min(box[3], size - box[1])
                    boxes.append((cls, box))
                for cls, box in boxes:
                    _paint(img, cls, box)
                    # The release's rows hold 6 fields under its 9-cell header (``head`` of the real file:
                    # ``00013118_008.png,Atelectasis,225.084745762712,547.019216763771,86.7796610169491,
                    # 79.1864406779661``); every other row here carries the header's 3 empty cells too, as
                    # re-saved copies do, so that readers are tested on both.
                    bbox_lines.append(
                        f"{name},{CLASSES[cls]},"
                        + ",".join(repr(round(float(v), 9)) for v in box)
                        + (",,," if len(bbox_lines) % 2 == 0 else "")
                    )
                    findings.append(LABEL_SPELLING.get(CLASSES[cls], CLASSES[cls]))
                if rng.random() < 0.3:
                    findings.append(OTHER_FINDINGS[int(rng.integers(len(OTHER_FINDINGS)))])
            labels = "|".join(dict.fromkeys(findings)) or "No Finding"
            view = "PA" if (p + f) % 3 else "AP"
            entry_lines.append(
                f"{name},{labels},{f},{pid},{int(rng.integers(18, 90))},{'MF'[p % 2]},{view},2500,2048,0.143,0.143"
            )
            grey = np.rint(img * 255).astype(np.uint8)
            Image.fromarray(grey, "L").save(folders[(p + f) % 2] / name)
            names.append(name)
        (test if p % 3 == 0 else train_val).extend(names)
    (root / "BBox_List_2017.csv").write_text("\n".join(bbox_lines) + "\n")
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(entry_lines) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    return root
