"""SIIM-ACR Pneumothorax Segmentation, in the Kaggle re-upload ``siim-train-test`` that papers used.

Layout: ``train-rle.csv`` (some mirrors: ``stage_2_train.csv``) with the header ``ImageId, EncodedPixels``
(note the space), one row per pneumothorax region and ``-1`` for images without one; the DICOMs in
``dicom-images-train/<StudyInstanceUID>/<SeriesInstanceUID>/<ImageId>.dcm`` (1024 x 1024, JPEG-baseline
compressed 8-bit: decoding needs pylibjpeg-libjpeg or Pillow).

The mask of an image is the UNION of all its rows (a widely used loader keeps only the last row and loses
part of the mask on 624 of 2,669 positive images). Patient ids come from the DICOM header (``PatientID``),
so that the split is by patient; a header without one falls back to the image id. The folder holding
``train-rle.csv`` or its parent (the Kaggle archive unpacks to ``siim/``) may be passed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.datasets.base import SAMPLE_COLUMNS, ParseResult, RawDataset
from tasks.datasets.common import index_files, read_csv_table
from tasks.dicom import read_dicom
from tasks.errors import DatasetLayoutError, Failure, SampleError
from tasks.rle import RLEError, decode_siim_rle, detect_siim_encoding, parse_rle

LABEL_FILES = ("train-rle.csv", "stage_2_train.csv")
IMAGES_DIR = "dicom-images-train"
HEADER = ["ImageId", "EncodedPixels"]


class SIIM(RawDataset):
    name = "siim"
    title = "SIIM-ACR Pneumothorax Segmentation"
    url = "https://www.kaggle.com/datasets/seesee/siim-train-test"
    classes = ("pneumothorax",)
    equalize = True
    expected = {"images": 12047, "positive_images": 2669}
    required = (IMAGES_DIR,)
    lovt_folders = ("siim-acr-pneumothorax-segmentation",)

    def __init__(self, root) -> None:
        super().__init__(root)
        nested = self.root / "siim"  # the Kaggle archive unpacks to siim/
        if not (self.root / IMAGES_DIR).is_dir() and (nested / IMAGES_DIR).is_dir():
            self.root = nested

    def label_file(self):
        for name in LABEL_FILES:
            if (self.root / name).is_file():
                return self.root / name
        return None

    def check_layout(self) -> None:
        super().check_layout()
        if self.label_file() is None:
            raise DatasetLayoutError(
                f"{self.title}: {self.root} has no label file ({' or '.join(LABEL_FILES)}). Point --raw at "
                f"the folder the download unpacks to ({self.url})."
            )

    def parse(self) -> ParseResult:
        self.check_layout()
        csv_path = self.label_file()
        rows = read_csv_table(csv_path, HEADER, "the SIIM-ACR train labels")
        failures: list[Failure] = []
        per_image: dict[str, dict] = {}
        for line, row in enumerate(rows, start=2):
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) != 2:
                failures.append(Failure(str(csv_path), f"row {line}", f"{len(row)} fields, expected 2"))
                continue
            image_id, rle = row[0].strip(), row[1].strip()
            if not image_id:
                failures.append(Failure(str(csv_path), f"row {line} ImageId", "empty image id"))
                continue
            entry = per_image.setdefault(image_id, {"rows": [], "pairs": [], "negative": False, "bad": False})
            try:
                pairs = parse_rle(rle)
            except RLEError as e:
                failures.append(
                    Failure(str(csv_path), f"row {line} EncodedPixels", f"malformed RLE: {e}", image_id)
                )
                entry["bad"] = True
                continue
            if rle == "-1":
                entry["negative"] = True
            elif not len(pairs):
                failures.append(
                    Failure(
                        str(csv_path),
                        f"row {line} EncodedPixels",
                        "empty; use -1 for no pneumothorax",
                        image_id,
                    )
                )
                entry["bad"] = True
            else:
                entry["rows"].append([line, rle])
                entry["pairs"].append(pairs)
        encoding = detect_siim_encoding([p for e in per_image.values() for p in e["pairs"]])

        images_dir = self.root / IMAGES_DIR
        on_disk, duplicates = index_files(images_dir, ".dcm")
        out = []
        for image_id, entry in per_image.items():
            if entry["bad"]:
                continue  # the failure is recorded; a partial mask would be wrong
            if entry["negative"] and entry["rows"]:
                failures.append(
                    Failure(
                        str(csv_path),
                        "EncodedPixels",
                        "the image has both a -1 row and RLE rows; fix the label file",
                        image_id,
                    )
                )
                continue
            path = on_disk.get(f"{image_id}.dcm")
            if path is None:
                failures.append(
                    Failure(
                        str(images_dir / "<study>" / "<series>" / f"{image_id}.dcm"),
                        "ImageId",
                        f"labelled in {csv_path.name} but the DICOM file is missing",
                        image_id,
                    )
                )
                continue
            out.append(
                {
                    "image_id": image_id,
                    "patient_id": None,
                    "file": str(path),
                    "boxes": [],
                    "labels": [],
                    "mask_source": {"file": str(csv_path), "rows": entry["rows"], "encoding": encoding},
                    "view": None,
                }
            )
        failures.extend(self._read_headers(out))
        out = [r for r in out if r["patient_id"] is not None]
        samples = pd.DataFrame(out, columns=list(SAMPLE_COLUMNS))
        n_regions = [len(r["mask_source"]["rows"]) for r in out]
        counts = {
            "label_rows": len(rows),
            "images": len(samples),
            "positive_images": int(sum(n > 0 for n in n_regions)),
            "rle_rows": int(sum(n_regions)),
            "images_with_several_regions": int(sum(n > 1 for n in n_regions)),
            "patients": int(samples["patient_id"].nunique()) if len(samples) else 0,
            "unlabelled_image_files": len({n[:-4] for n in on_disk} - set(per_image)),
            "duplicate_image_files": len(duplicates),
        }
        sources = {"labels": str(csv_path), "images": str(images_dir), "rle_encoding": encoding}
        return ParseResult(samples=samples, failures=failures, counts=counts, sources=sources)

    @staticmethod
    def _read_headers(rows: list[dict]) -> list[Failure]:
        """Fill ``patient_id`` and ``view`` from each DICOM header (pixel data is not read here)."""
        import pydicom

        failures = []
        for r in rows:
            try:
                ds = pydicom.dcmread(
                    r["file"], stop_before_pixels=True, specific_tags=["PatientID", "ViewPosition"]
                )
            except Exception as e:  # any unreadable header: the file is named, the run goes on
                failures.append(
                    Failure(
                        r["file"],
                        "header",
                        f"not a readable DICOM file ({type(e).__name__}: {e})",
                        r["image_id"],
                    )
                )
                continue
            r["patient_id"] = str(ds.get("PatientID", "") or "").strip() or r["image_id"]
            r["view"] = str(ds.get("ViewPosition", "") or "").strip() or None
        return failures

    def load_pixels(self, sample: dict) -> np.ndarray:
        return read_dicom(sample["file"], image_id=sample["image_id"]).pixels

    def load_mask(self, sample: dict, height: int, width: int) -> np.ndarray:
        """The union of all RLE rows of the image (class index 1 = pneumothorax)."""
        src = sample["mask_source"]
        mask = np.zeros((height, width), dtype=np.uint8)
        for line, rle in src["rows"]:
            try:
                mask |= decode_siim_rle(parse_rle(rle), height, width, src["encoding"])
            except RLEError as e:
                raise SampleError(
                    src["file"], f"row {line} EncodedPixels", f"malformed RLE: {e}", sample["image_id"]
                ) from e
        return mask
