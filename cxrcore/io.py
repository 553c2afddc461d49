"""How does cxrbench write a file so that a reader never sees it half-written? The one implementation of
atomic writes (temp file in the same folder + rename) of bytes, text, JSON and PNG, used for run records,
prepared datasets, leaderboards, feature-cache manifests and pretraining's exports and history.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write a file so that a reader never sees it half-written (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN/inf; readers see null
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _jsonable(obj.item())
    return obj


def write_json_atomic(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    """``obj`` as JSON (non-finite floats as null, numpy / torch scalars as numbers, paths as strings) + a
    final newline, written atomically."""
    write_text_atomic(path, json.dumps(_jsonable(obj), indent=indent, sort_keys=False) + "\n")


def save_png_atomic(path: str | os.PathLike, array) -> None:
    """Write a uint8 array as PNG (grey-scale) atomically."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())
