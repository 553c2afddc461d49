"""Synthetic image-report pairs: phantom chest images whose report sentences say where things are.

Each phantom has a chest-like background and 1-3 findings, each in one of six lung zones (upper / middle /
lower x left / right), with a shape (round opacity, elongated opacity, ring), a brightness (bright /
faint) and a size. Every finding gets a sentence naming its attributes and zone; the other zones get
"clear" sentences at random, plus filler sentences about the heart and mediastinum. Radiological
convention: the patient's LEFT is on the image's RIGHT. Locations and attributes in the text are thus
learnable from the pixels, which is what the local losses need to align.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ZONES = {  # name -> (row, patient side): rows 0..2 top to bottom; side "right" = image left
    f"{row} {side}": (r, side)
    for r, row in enumerate(("upper", "middle", "lower"))
    for side in ("right", "left")
}
SHAPES = ("round opacity", "elongated opacity", "ring shadow")
BRIGHTNESS = ("bright", "faint")
SIZES = ("small", "large")
FILLERS = (
    "The heart size is normal.",
    "The mediastinal contours are unremarkable.",
    "There is no pneumothorax.",
    "No pleural effusion is seen.",
    "The osseous structures are intact.",
    "Lines and tubes are absent.",
)


@dataclass(frozen=True)
class Finding:
    zone: str
    shape: str
    brightness: str
    size: str

    def sentence(self) -> str:
        return f"There is a {self.size} {self.brightness} {self.shape} in the {self.zone} zone."


def vocabulary() -> list[str]:
    """Every word the synthetic reports use (for building a small local tokenizer)."""
    words: set[str] = set()
    texts = [f.sentence() for f in _all_findings()] + list(FILLERS) + [_clear(z) for z in ZONES]
    texts += ["Abnormality in the zone.", "Abnormalities in the zones, and ."]
    for t in texts:
        words.update(t.lower().replace(".", " . ").split())
    return sorted(words)


def _all_findings():
    for z in ZONES:
        for s in SHAPES:
            for b in BRIGHTNESS:
                for size in SIZES:
                    yield Finding(z, s, b, size)


def impression(findings: list[Finding]) -> str:
    """A one-sentence summary naming the abnormal zones."""
    zones = [f.zone for f in findings]
    if len(zones) == 1:
        return f"Abnormality in the {zones[0]} zone."
    return f"Abnormalities in the {', '.join(zones[:-1])} and {zones[-1]} zones."


def _clear(zone: str) -> str:
    return f"The {zone} zone is clear."


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = 0.55 + 0.15 * yy
    for cx in (0.3, 0.7):
        lung = ((xx - cx) / 0.17) ** 2 + ((yy - 0.5) / 0.33) ** 2
        img -= 0.25 * np.exp(-(lung**2))
    img += rng.normal(0.0, 0.03, size=(size, size)).astype(np.float32)
    return img


def _zone_center(zone: str, rng: np.random.Generator) -> tuple[float, float]:
    row, side = ZONES[zone]
    cy = 0.28 + 0.22 * row
    cx = 0.3 if side == "right" else 0.7  # patient's right lung is on the image's left
    return cy + rng.uniform(-0.04, 0.04), cx + rng.uniform(-0.04, 0.04)


def _draw(img: np.ndarray, f: Finding, rng: np.random.Generator) -> None:
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cy, cx = _zone_center(f.zone, rng)
    r = 0.09 if f.size == "large" else 0.06
    strength = 0.5 if f.brightness == "bright" else 0.3
    if f.shape == "round opacity":
        d = ((yy - cy) ** 2 + (xx - cx) ** 2) / r**2
        blob = np.clip(1.0 - d, 0, 1)
    elif f.shape == "elongated opacity":
        d = ((yy - cy) / (0.45 * r)) ** 2 + ((xx - cx) / (1.6 * r)) ** 2
        blob = np.clip(1.0 - d, 0, 1)
    else:  # ring: bright rim, dark centre
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / r
        blob = np.clip(1.0 - np.abs(d - 0.75) / 0.35, 0, 1)
    img += strength * blob


def make_pair(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, list[str], list[Finding]]:
    """One phantom image (uint8, ``size x size``) with its report sentences and findings."""
    img = _background(rng, size)
    zones = list(ZONES)
    chosen = rng.choice(len(zones), size=int(rng.integers(1, 4)), replace=False)
    findings = [
        Finding(
            zones[i],
            SHAPES[rng.integers(len(SHAPES))],
            BRIGHTNESS[rng.integers(len(BRIGHTNESS))],
            SIZES[rng.integers(len(SIZES))],
        )
        for i in chosen
    ]
    for f in findings:
        _draw(img, f, rng)
    sentences = [f.sentence() for f in findings]
    for i, z in enumerate(zones):
        if i not in chosen and rng.random() < 0.3:
            sentences.append(_clear(z))
    fillers = rng.choice(len(FILLERS), size=int(rng.integers(1, 3)), replace=False)
    sentences += [FILLERS[i] for i in fillers]
    order = rng.permutation(len(sentences))
    sentences = [sentences[i] for i in order]
    pixels = np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return pixels, sentences, findings


def write_synthetic_dataset(
    out: str | os.PathLike, n: int = 256, size: int = 128, seed: int = 0, val_fraction: float = 0.125
) -> Path:
    """Write ``n`` synthetic pairs as PNG images + ``manifest.jsonl`` (the generic manifest format).

    Each line: ``{"image": "images/<id>.png", "report": "FINDINGS: ... IMPRESSION: ...", "patient_id",
    "split"}``. Returns the manifest path. Idempotent for the same arguments.
    """
    from PIL import Image

    out = Path(out)
    manifest = out / "manifest.jsonl"
    stamp = out / "synthetic.json"
    params = {"n": n, "size": size, "seed": seed, "val_fraction": val_fraction}
    if manifest.exists() and stamp.exists() and json.loads(stamp.read_text()) == params:
        return manifest
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(n * val_fraction))) if n > 1 else 0
    lines = []
    for i in range(n):
        pixels, sentences, findings = make_pair(rng, size)
        name = f"images/synthetic_{i:05d}.png"
        Image.fromarray(pixels).save(out / name)
        report = f"FINDINGS: {' '.join(sentences)}\n\nIMPRESSION: {impression(findings)}"
        lines.append(
            json.dumps(
                {
                    "image": name,
                    "report": report,
                    "patient_id": f"synthetic{i:05d}",
                    "split": "validate" if i >= n - n_val else "train",
                }
            )
        )
    manifest.write_text("\n".join(lines) + "\n")
    stamp.write_text(json.dumps(params))
    return manifest
