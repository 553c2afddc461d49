"""Building blocks of the fake datasets: chest-like backgrounds, blobs, DICOM writing."""

from __future__ import annotations

import io
import os

import numpy as np


def chest_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth chest-like image in [0, 1]: bright mediastinum and borders, darker lung fields, noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy /= height
    xx /= width
    img = 0.55 + 0.15 * yy
    for cx in (0.3, 0.7):
        lung = ((xx - cx) / 0.17) ** 2 + ((yy - 0.5) / 0.33) ** 2
        img -= 0.25 * np.exp(-(lung**2))
    img += rng.normal(0.0, 0.04, size=(height, width)).astype(np.float32)
    return np.clip(img, 0, 1)


def add_blob(img: np.ndarray, x: float, y: float, w: float, h: float, strength: float = 0.35) -> None:
    """Brighten an elliptical blob filling the box (x, y, w, h) in place: the learnable signal."""
    height, width = img.shape
    y0, y1 = max(int(y), 0), min(int(np.ceil(y + h)), height)
    x0, x1 = max(int(x), 0), min(int(np.ceil(x + w)), width)
    if y1 <= y0 or x1 <= x0:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = ((xx + 0.5 - (x + w / 2)) / (w / 2)) ** 2 + ((yy + 0.5 - (y + h / 2)) / (h / 2)) ** 2
    img[y0:y1, x0:x1] += strength * np.clip(1.2 - d, 0, 1)
    np.clip(img, 0, 1, out=img)


def to_uint(img: np.ndarray, bits: int = 8) -> np.ndarray:
    top = 2**bits - 1
    arr = np.rint(np.clip(img, 0, 1) * top)
    return arr.astype(np.uint8 if bits <= 8 else np.uint16)


def write_dicom(
    path: str | os.PathLike,
    pixels: np.ndarray,
    patient_id: str,
    *,
    bits_stored: int = 8,
    photometric: str = "MONOCHROME2",
    compression: str | None = None,
    view_position: str | None = None,
    rescale: tuple[float, float] | None = None,
    seed: int = 0,
    uids: tuple[str, str, str] | None = None,
) -> None:
    """Write a single-frame grey-scale DICOM (CR) the way the challenge releases look.

    Args:
        pixels: stored values (uint8 for 8 bits, uint16 for more); MONOCHROME1 callers pass inverted values.
        compression: None (explicit VR little endian), ``jpeg`` (JPEG baseline, 8-bit, encoded with Pillow)
            or ``jpeg2000`` (lossless, encoded by pylibjpeg-openjpeg through pydicom).
        rescale: optional (slope, intercept) modality LUT.
        uids: optional (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID); derived from the patient
            id and seed by default.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        ExplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        generate_uid,
    )

    rng = np.random.default_rng(seed)
    sop_class = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
    sop_uid = uids[2] if uids else generate_uid(entropy_srcs=[patient_id, "sop", str(seed)])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = uids[0] if uids else generate_uid(entropy_srcs=[patient_id, "study", str(seed)])
    ds.SeriesInstanceUID = uids[1] if uids else generate_uid(entropy_srcs=[patient_id, "series", str(seed)])
    ds.PatientID = patient_id
    ds.PatientName = patient_id
    ds.PatientSex = "F" if rng.random() < 0.5 else "M"
    ds.PatientAge = f"{int(rng.integers(18, 90)):03d}Y"
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    if view_position:
        ds.ViewPosition = view_position
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.14, 0.14]
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = (f"{v:g}" for v in rescale)
        ds.RescaleType = "US"
    if compression == "jpeg":
        if pixels.dtype != np.uint8:
            raise ValueError("JPEG baseline holds 8-bit pixels only")
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buf, format="JPEG", quality=92)
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
    else:
        ds.PixelData = pixels.tobytes()
        ds["PixelData"].VR = "OB" if ds.BitsAllocated == 8 else "OW"
        if compression == "jpeg2000":
            ds.compress(JPEG2000Lossless)
        elif compression is not None:
            raise ValueError(f"unknown compression {compression!r}")
    ds.save_as(path, enforce_file_format=True)
