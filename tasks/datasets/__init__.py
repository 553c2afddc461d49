"""Readers of the raw datasets in their official layouts."""

from __future__ import annotations

from tasks.datasets.base import ParseResult, RawDataset
from tasks.datasets.covid_rural import CovidRural
from tasks.datasets.nih import NIH
from tasks.datasets.object_cxr import ObjectCXR
from tasks.datasets.rsna import RSNA
from tasks.datasets.siim import SIIM

# In the order of the task table.
DATASETS: dict[str, type[RawDataset]] = {cls.name: cls for cls in (RSNA, CovidRural, SIIM, ObjectCXR, NIH)}


def get_dataset(name: str) -> type[RawDataset]:
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset '{name}'. Known datasets: {', '.join(DATASETS)}") from None


__all__ = [
    "DATASETS",
    "NIH",
    "RSNA",
    "SIIM",
    "CovidRural",
    "ObjectCXR",
    "ParseResult",
    "RawDataset",
    "get_dataset",
]
