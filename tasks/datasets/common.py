"""Helpers shared by the dataset readers: reading grey-scale PNG / JPEG files, finding files by name,
reading label CSVs with an exact header check."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from tasks.errors import DatasetLayoutError, SampleError


def read_grey(source: str | os.PathLike | bytes, name: str, image_id: str | None = None) -> np.ndarray:
    """Decode a PNG / JPEG into grey levels in [0, 1] (float32, (H, W)).

    Colour images are averaged over their channels (some COVID Rural JPGs are RGB; a few NIH PNGs are
    RGBA, whose alpha channel is dropped); 16-bit images use their full range.

    Args:
        source: a path, or the file's bytes (a member of a zip).
        name: what error messages call the file.

    Raises:
        SampleError: the file is missing, truncated or not an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img.load()
            mode = img.mode
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                mode = img.mode
            arr = np.asarray(img)
    except FileNotFoundError as e:
        raise SampleError(name, "file", "image file not found", image_id) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise SampleError(
            name, "file", f"not a readable image ({type(e).__name__}: {e}); re-download it", image_id
        ) from e
    if arr.ndim == 3:
        channels = 3 if arr.shape[2] >= 3 else 1  # RGB(A) -> RGB, LA -> L
        arr = arr[..., :channels].astype(np.float32).mean(axis=-1)
        top = 255.0
    elif mode in ("I;16", "I;16B", "I;16L", "I"):
        top = 65535.0
    elif mode == "1":
        top = 1.0
    else:
        top = 255.0
    if arr.ndim != 2 or min(arr.shape) == 0:
        raise SampleError(name, "file", f"expected a 2-D image, got shape {arr.shape}", image_id)
    return np.clip(arr.astype(np.float32) / top, 0.0, 1.0)


def index_files(root: Path, suffix: str, skip: Path | None = None) -> tuple[dict[str, Path], list[str]]:
    """All files ``*<suffix>`` under ``root`` by file name (sorted walk, so the first of duplicates is
    stable). Returns the index and the names found more than once."""
    found: dict[str, Path] = {}
    duplicates: list[str] = []
    suffix = suffix.lower()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if skip is not None and Path(dirpath) == skip:
            dirnames[:] = []
            continue
        for f in sorted(filenames):
            if f.lower().endswith(suffix) and not f.startswith("._"):
                if f in found:
                    duplicates.append(f)
                else:
                    found[f] = Path(dirpath) / f
    return found, duplicates


def read_csv_table(
    path: Path,
    expected: list[str],
    what: str,
    strip_header: bool = True,
    exact: bool = False,
    require_rows: bool = True,
) -> list[list[str]]:
    """Rows (after the header) of a CSV whose header must start with ``expected`` (be it, if ``exact``).

    Header cells are compared after stripping spaces when ``strip_header`` (the SIIM file writes
    ``ImageId, EncodedPixels``). Trailing empty header cells are ignored (NIH's ``Bbox [x,y,w,h],,,``).

    Raises:
        DatasetLayoutError: unreadable file, wrong header (names the file, what was found and expected), or
            (``require_rows``) a header and no rows: a label file without labels is never a release.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetLayoutError(f"{path}: cannot read CSV ({type(e).__name__}: {e})") from e
    if not rows:
        raise DatasetLayoutError(
            f"{path}: the file is empty; expected the header {','.join(expected)} ({what})"
        )
    header = [c.strip() if strip_header else c for c in rows[0]]
    while header and header[-1] == "" and len(header) > len(expected):
        header.pop()
    if (header if exact else header[: len(expected)]) != expected:
        raise DatasetLayoutError(
            f"{path}: header is {','.join(rows[0])!s}; expected {','.join(expected)} ({what})"
        )
    if require_rows and not any(any(c.strip() for c in row) for row in rows[1:]):
        raise DatasetLayoutError(
            f"{path}: the header is there but no rows follow ({what}); the file is cut short: re-download it"
        )
    return rows[1:]
