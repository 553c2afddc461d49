"""Seeded generators of fake raw datasets in the exact official layouts, with a learnable signal.

Used by the tests and by ``cxrbench demo``. Fake images are chest-like grey backgrounds with bright blobs
or shapes where the labels are, so an end-to-end run shows learning rather than only that nothing
crashed. Every generator is called as ``FAKES[name](root, n_patients=N, seed=S)`` and returns ``root``;
the defaults are small enough that preparing each fake takes seconds.
"""

from __future__ import annotations

from tasks.fakes.covid_rural import make_fake_covid_rural
from tasks.fakes.lovt import make_fake_lovt_splits
from tasks.fakes.nih import make_fake_nih
from tasks.fakes.object_cxr import make_fake_object_cxr
from tasks.fakes.rsna import make_fake_rsna
from tasks.fakes.siim import make_fake_siim

FAKES = {
    "rsna": make_fake_rsna,
    "covid_rural": make_fake_covid_rural,
    "siim": make_fake_siim,
    "object_cxr": make_fake_object_cxr,
    "nih": make_fake_nih,
}

__all__ = [
    "FAKES",
    "make_fake_covid_rural",
    "make_fake_lovt_splits",
    "make_fake_nih",
    "make_fake_object_cxr",
    "make_fake_rsna",
    "make_fake_siim",
]
