"""Readers of the raw datasets in their official layouts."""

from __future__ import annotations

from tasks.datasets.base import ParseResult, RawDataset
from tasks.datasets.rsna import RSNA

DATASETS: dict[str, type[RawDataset]] = {cls.name: cls for cls in (RSNA,)}


def get_dataset(name: str) -> type[RawDataset]:
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset '{name}'. Known datasets: {', '.join(DATASETS)}") from None


__all__ = ["DATASETS", "ParseResult", "RawDataset", "get_dataset"]
