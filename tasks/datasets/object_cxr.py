"""Object-CXR (JF Healthcare, MIDL 2020 challenge "object-CXR"): foreign objects on chest X-rays.

Layout: ``train.csv`` and ``dev.csv`` (``image_name,annotation``) beside ``train/`` and ``dev/`` (JPGs of
varying size, ~2000-3000 px) - or the zips ``train.zip`` / ``dev.zip`` instead of the folders (read in
place, never unpacked). ``annotation`` is empty for images without foreign objects; otherwise objects
separated by ``;``, each ``TYPE x1 y1 x2 y2`` for TYPE 0 (rectangle) and 1 (ellipse inscribed in that
rectangle), or ``2 x1 y1 x2 y2 ... xn yn`` (polygon); (x, y) pixel coordinates, origin top-left.

Boxes are the shapes' bounding boxes (x, y, w, h) - the reference code stored (x, y, h, w) and transposed
its polygons; here both are right. The masks are the shapes themselves (ellipses and polygons filled,
not their boxes). Protocol: the train set split 80/20 into train / validation (there are no patient ids),
test = the official dev set.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.datasets.base import SAMPLE_COLUMNS, ParseResult, RawDataset
from tasks.datasets.common import index_files, read_csv_table, read_grey
from tasks.errors import DatasetLayoutError, Failure, SampleError
from tasks.image import Geometry
from tasks.rasterize import boxes_to_mask, shape_bbox, shape_to_mask
from tasks.rle import coco_rle

HEADER = ["image_name", "annotation"]
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
PARTS = ("train", "dev")
SHAPE_TYPES = {0: "rectangle", 1: "ellipse", 2: "polygon"}

_open_zips: dict[tuple[str, int], zipfile.ZipFile] = {}


def _zip(path: str) -> zipfile.ZipFile:
    # one handle per process: a handle inherited through fork would share its file offset
    key = (path, os.getpid())
    if key not in _open_zips:
        _open_zips[key] = zipfile.ZipFile(path)
    return _open_zips[key]


def parse_annotation(text: str) -> list[dict]:
    """Parse one ``annotation`` cell into shapes ``{"kind", "points"}`` (points as [x, y] lists).

    Raises:
        ValueError: malformed text; the message names the object (1-based) and what is wrong.
    """
    shapes = []
    for k, part in enumerate((p for p in text.split(";") if p.strip()), start=1):
        tokens = part.split()
        if tokens[0] not in ("0", "1", "2"):
            raise ValueError(f"object {k} ({part.strip()[:80]!r}): type must be 0, 1 or 2, got {tokens[0][:20]!r}")
        kind = SHAPE_TYPES[int(tokens[0])]
        bad = next((v for v in tokens[1:] if not _NUMBER.fullmatch(v)), None)
        if bad is not None:  # plain ASCII decimals only (float() would take '1_0', '١', 'nan', 'inf')
            raise ValueError(
                f"object {k} ({part.strip()[:80]!r}): coordinates must be numbers, got {bad[:20]!r}"
            )
        values = [float(v) for v in tokens[1:]]
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"object {k} ({part.strip()!r}): coordinates must be finite")
        if kind in ("rectangle", "ellipse") and len(values) != 4:
            raise ValueError(
                f"object {k} ({part.strip()!r}): a {kind} needs x1 y1 x2 y2, got {len(values)} numbers"
            )
        if kind == "polygon" and (len(values) % 2 or len(values) < 6):
            raise ValueError(
                f"object {k} ({part.strip()!r}): a polygon needs at least 3 (x, y) points, got {len(values)} numbers"
            )
        points = [[values[i], values[i + 1]] for i in range(0, len(values), 2)]
        x, y, w, h = shape_bbox(kind, points)
        if w <= 0 or h <= 0:
            raise ValueError(f"object {k} ({part.strip()!r}): the {kind} has zero width or height")
        shapes.append({"kind": kind, "points": points})
    return shapes


class ObjectCXR(RawDataset):
    name = "object_cxr"
    title = "Object-CXR (foreign objects on chest X-rays, MIDL 2020)"
    url = "https://github.com/hlk-1135/object-CXR (challenge: jfhealthcare.github.io/object-CXR)"
    classes = ("foreign_object",)
    equalize = True
    expected = {"train_images": 8000, "dev_images": 1000, "train_positive_images": 4000}
    required = ("train.csv", "dev.csv")
    split_ratios = (0.8, 0.2, 0.0)  # of the official train set; test = the dev set
    lovt_folders = ("object-CXR",)
    lovt_detection = True
    lovt_box_order = "xyhw"  # the reference code's files hold (x, y, h, w)

    def check_layout(self) -> None:
        super().check_layout()
        missing = [
            p for p in PARTS if not (self.root / p).is_dir() and not (self.root / f"{p}.zip").is_file()
        ]
        if missing:
            raise DatasetLayoutError(
                f"{self.title}: {self.root} has neither the folder nor the zip of: "
                + ", ".join(f"{p}/ or {p}.zip" for p in missing)
                + f". Point --raw at the folder holding train.csv, dev.csv and the images ({self.url})."
            )

    def _images(self, part: str) -> tuple[dict[str, tuple[str, str | None]], str]:
        """image name -> (file, zip member or None), and a description of the source."""
        folder = self.root / part
        if folder.is_dir():
            found, _ = index_files(folder, ".jpg")
            return {n: (str(p), None) for n, p in found.items()}, str(folder)
        archive = self.root / f"{part}.zip"
        try:
            with zipfile.ZipFile(archive) as z:
                names = [m for m in z.namelist() if m.lower().endswith(".jpg") and "__MACOSX" not in m]
        except (zipfile.BadZipFile, OSError) as e:
            raise DatasetLayoutError(f"{archive}: not a readable zip ({e}); re-download it") from e
        return {Path(m).name: (str(archive), m) for m in sorted(names)}, str(archive)

    def parse(self) -> ParseResult:
        self.check_layout()
        failures: list[Failure] = []
        out: list[dict] = []
        counts: dict[str, int] = {}
        sources: dict[str, str] = {}
        seen: dict[str, str] = {}
        for part in PARTS:
            csv_path = self.root / f"{part}.csv"
            rows = read_csv_table(csv_path, HEADER, f"the Object-CXR {part} labels")
            images, source = self._images(part)
            sources[f"{part}_labels"], sources[f"{part}_images"] = str(csv_path), source
            listed = set()
            n_ok = n_pos = 0
            for line, row in enumerate(rows, start=2):
                if not row or not any(c.strip() for c in row):
                    continue
                if len(row) != 2:
                    failures.append(Failure(str(csv_path), f"row {line}", f"{len(row)} fields, expected 2"))
                    continue
                name = row[0].strip()
                listed.add(name)
                image_id = Path(name).stem
                if not name.lower().endswith(".jpg"):
                    failures.append(
                        Failure(str(csv_path), f"row {line} image_name", f"not a .jpg name: {name!r}")
                    )
                    continue
                if image_id in seen:
                    failures.append(
                        Failure(
                            str(csv_path),
                            f"row {line} image_name",
                            f"already listed in {seen[image_id]}",
                            image_id,
                        )
                    )
                    continue
                seen[image_id] = csv_path.name
                try:
                    shapes = parse_annotation(row[1])
                except ValueError as e:
                    failures.append(
                        Failure(
                            str(csv_path), f"row {line} annotation", f"malformed annotation: {e}", image_id
                        )
                    )
                    continue
                if name not in images:
                    failures.append(
                        Failure(
                            f"{source}/{name}" if source.endswith(".zip") else str(Path(source) / name),
                            "image_name",
                            f"listed in {csv_path.name} but the image file is missing",
                            image_id,
                        )
                    )
                    continue
                file, member = images[name]
                out.append(
                    {
                        "image_id": image_id,
                        "patient_id": image_id,  # Object-CXR has no patient ids
                        "file": file,
                        "boxes": [shape_bbox(s["kind"], s["points"]) for s in shapes],
                        "labels": [0] * len(shapes),
                        "mask_source": {"shapes": shapes, "label_file": str(csv_path), "row": line},
                        "view": None,
                        "member": member,
                        "official_split": part,
                    }
                )
                n_ok += 1
                n_pos += bool(shapes)
            counts[f"{part}_label_rows"] = len(rows)
            counts[f"{part}_images"] = n_ok
            counts[f"{part}_positive_images"] = n_pos
            counts[f"{part}_unlabelled_image_files"] = len(set(images) - listed)
        samples = pd.DataFrame(out, columns=[*SAMPLE_COLUMNS, "member", "official_split"])
        kinds = [s["kind"] for r in out for s in r["mask_source"]["shapes"]]
        counts["images"] = len(samples)
        counts["objects"] = len(kinds)
        for kind in SHAPE_TYPES.values():
            counts[f"{kind}s"] = kinds.count(kind)
        return ParseResult(samples=samples, failures=failures, counts=counts, sources=sources)

    def split(self, samples: pd.DataFrame) -> tuple[pd.DataFrame, str]:
        from tasks.splits import SPLIT_COLUMNS, patient_split

        train = samples[samples["official_split"] == "train"]
        table = patient_split(train, ratios=self.split_ratios, fractions=self.fractions)
        dev = samples[samples["official_split"] == "dev"]
        test = pd.DataFrame(
            {
                "image_id": dev["image_id"].astype(str),
                "patient_id": dev["patient_id"].astype(str),
                "split": "test",
            }
        )
        test["fraction"] = pd.array([pd.NA] * len(test), dtype="Int64")
        table = pd.concat([table, test], ignore_index=True).sort_values("image_id").reset_index(drop=True)
        return table[
            SPLIT_COLUMNS
        ], "official train split 80/20 into train/val (hashed image ids), test = official dev"

    def load_pixels(self, sample: dict) -> np.ndarray:
        member = sample.get("member")
        if isinstance(member, str) and member:
            name = f"{sample['file']}:{member}"
            try:
                data = _zip(sample["file"]).read(member)
            except (KeyError, zipfile.BadZipFile, OSError, EOFError) as e:
                raise SampleError(name, "file", f"cannot read from the zip ({e})", sample["image_id"]) from e
            return read_grey(data, name, sample["image_id"])
        return read_grey(sample["file"], sample["file"], sample["image_id"])

    def load_mask(self, sample: dict, height: int, width: int) -> np.ndarray:
        """The union of the shapes at the original resolution (class index 1)."""
        mask = np.zeros((height, width), dtype=np.uint8)
        for s in sample["mask_source"]["shapes"]:
            shape_to_mask(s["kind"], s["points"], height, width, mask=mask)
        return mask

    def object_rasters(self, sample: dict, geometry: Geometry) -> list[tuple[dict, np.ndarray, list[float]]]:
        """Each object rasterised exactly at the prepared size, clipped to the image, with its clipped
        bounding box (x, y, w, h) in prepared pixels. An object too small to cover any pixel centre keeps
        the pixel under its box centre, so that a "centre inside the object" test can still hit it.

        Raises:
            SampleError: an object lies entirely outside the image (the annotation does not belong to it;
                dropping the object would count the image positive, or negative, wrongly).
        """
        g, size = geometry, geometry.size
        transform = (g.scale, float(g.left), float(g.top))
        region = [g.left * g.scale, g.top * g.scale, g.width * g.scale, g.height * g.scale]
        inside = boxes_to_mask([region], size, size)
        rx0, ry0, rx1, ry1 = region[0], region[1], region[0] + region[2], region[1] + region[3]
        out = []
        src = sample["mask_source"]
        for k, s in enumerate(src["shapes"], start=1):
            x, y, w, h = shape_bbox(s["kind"], s["points"])
            x0, y0 = max((x + g.left) * g.scale, rx0), max((y + g.top) * g.scale, ry0)
            x1, y1 = min((x + w + g.left) * g.scale, rx1), min((y + h + g.top) * g.scale, ry1)
            if x1 <= x0 or y1 <= y0:
                raise SampleError(
                    src.get("label_file", sample["file"]),
                    f"row {src['row']} annotation" if "row" in src else "annotation",
                    f"object {k} ({s['kind']} with bounding box x={x:g} y={y:g} w={w:g} h={h:g}) lies entirely "
                    f"outside the {g.width}x{g.height} image",
                    sample["image_id"],
                )
            raster = shape_to_mask(s["kind"], s["points"], size, size, transform=transform) & inside
            if not raster.any():
                raster[min(int((y0 + y1) / 2), size - 1), min(int((x0 + x1) / 2), size - 1)] = 1
            out.append((s, raster, [x0, y0, x1 - x0, y1 - y0]))
        return out

    def prepared_mask(self, sample: dict, geometry: Geometry) -> np.ndarray:
        mask = np.zeros((geometry.size, geometry.size), dtype=np.uint8)
        for _, raster, _ in self.object_rasters(sample, geometry):
            mask |= raster
        return mask

    def coco_annotations(self, sample: dict, geometry: Geometry) -> list[dict]:
        """Per object: the bounding box of its shape, and ``segmentation`` (COCO RLE of the true shape at
        the prepared size) with ``shape`` (rectangle / ellipse / polygon), for FROC on the real shape."""
        out = []
        for s, raster, box in self.object_rasters(sample, geometry):
            x, y, w, h = (round(float(v), 3) for v in box)
            out.append(
                {
                    "category_id": 1,
                    "bbox": [x, y, w, h],
                    "area": int(raster.sum()),
                    "iscrowd": 0,
                    "segmentation": coco_rle(raster),
                    "shape": s["kind"],
                }
            )
        return out
