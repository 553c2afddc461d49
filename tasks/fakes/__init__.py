"""Seeded generators of fake raw datasets in the exact official layouts, with a learnable signal.

Used by the tests and by ``cxrbench demo``. Fake images are chest-like grey backgrounds with bright blobs
where the labels are, so an end-to-end run shows learning rather than only that nothing crashed.
"""

from __future__ import annotations

from tasks.fakes.rsna import make_fake_rsna

FAKES = {"rsna": make_fake_rsna}

__all__ = ["FAKES", "make_fake_rsna"]
