"""Image-report pairs as read from a source, with the count of what was skipped and why."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

SPLITS = ("train", "validate", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validate": "validate",
    "val": "validate",
    "valid": "validate",
    "validation": "validate",
    "test": "test",
}


class PairDataError(ValueError):
    """A pretraining data source is missing, malformed or empty (the message names the file and field)."""


@dataclass(frozen=True)
class PairRecord:
    """One study: its image file(s) and its report sentences.

    Attributes:
        images: image paths; when a study has several (frontal) images one is drawn at random per step.
        sentences: the report sentences (findings + impression for MIMIC-CXR).
        split: ``train``, ``validate`` or ``test``.
    """

    images: tuple[str, ...]
    sentences: tuple[str, ...]
    split: str
    patient_id: str = ""
    study_id: str = ""


@dataclass
class PairSet:
    """The pairs of a source, what was skipped (reason -> count, with a few examples) and provenance."""

    records: list[PairRecord]
    source: dict
    skipped: Counter = field(default_factory=Counter)
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, example: str, n: int = 1) -> None:
        self.skipped[reason] += n
        examples = self.skipped_examples.setdefault(reason, [])
        if len(examples) < 5:
            examples.append(example)

    def skip_many(self, reason: str, count: int, examples) -> None:
        if count:
            self.skipped[reason] += int(count)
            self.skipped_examples.setdefault(reason, []).extend(list(examples)[:5])

    def split(self, name: str) -> list[PairRecord]:
        return [r for r in self.records if r.split == name]

    def digest(self) -> str:
        """A hash of the pairs (image file names, sentences, splits): identical data gives identical hashes."""
        h = hashlib.sha256()
        for r in sorted(self.records, key=lambda r: (r.split, r.images)):
            h.update(repr((r.split, tuple(p.rsplit("/", 1)[-1] for p in r.images), r.sentences)).encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        return {
            **self.source,
            "pairs": {s: sum(r.split == s for r in self.records) for s in SPLITS},
            "images": sum(len(r.images) for r in self.records),
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_examples": self.skipped_examples,
            "notes": self.notes,
            "hash": self.digest(),
        }

    def describe(self) -> str:
        """A few human-readable lines: pairs per split and the skipped counts with their reasons."""
        s = self.summary()
        lines = [
            f"{s.get('kind', 'data')}: {sum(s['pairs'].values())} pairs ("
            + ", ".join(f"{k} {v}" for k, v in s["pairs"].items())
            + f"), {s['images']} images"
        ]
        for reason, n in s["skipped"].items():
            ex = "; ".join(self.skipped_examples.get(reason, [])[:2])
            lines.append(f"  skipped {n}: {reason}" + (f" (e.g. {ex})" if ex else ""))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)
