"""Small file helpers: atomic writes (a reader never sees a half-written file).

They live in the neutral package (:mod:`cxrcore.io`, shared with ``benchmark`` and ``pretrain``); this module
keeps the names importable from ``tasks.io`` for the code that imports them from here.
"""

from __future__ import annotations

from cxrcore.io import save_png_atomic, write_bytes_atomic, write_json_atomic, write_text_atomic

__all__ = ["save_png_atomic", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]
