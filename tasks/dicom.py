"""DICOM decoding shared by all datasets.

Rules (shared/spec/datasets.md): MONOCHROME1 is inverted so that bone is bright; the value range comes
from ``BitsStored`` (not ``BitsAllocated``); the modality LUT (RescaleSlope / Intercept or a Modality LUT
Sequence) is applied when present; VOI LUT / windowing only when asked; compressed transfer syntaxes are
decoded by pydicom's plugins (pylibjpeg-libjpeg for JPEG, pylibjpeg-openjpeg for JPEG 2000, or Pillow).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from tasks.errors import MissingPluginError, SampleError

PLUGIN_HINT = (
    "install a pydicom pixel-data plugin: `pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg` "
    "(JPEG baseline/extended/lossless and JPEG 2000; they come with cxrbench) or `pip install pillow`"
)


@dataclass
class DicomImage:
    """Decoded pixels scaled to [0, 1] (bright = dense), with the header fields the datasets use."""

    pixels: np.ndarray  # float32, (rows, cols)
    photometric: str
    bits_stored: int
    transfer_syntax: str
    view_position: str | None
    patient_id: str | None


def _decoder_available(transfer_syntax) -> bool:
    from pydicom.pixels import get_decoder

    try:
        return get_decoder(transfer_syntax).is_available
    except NotImplementedError:
        return False


def read_dicom(path: str | os.PathLike, image_id: str | None = None, apply_voi: bool = False) -> DicomImage:
    """Decode a DICOM file into grey levels in [0, 1].

    Raises:
        SampleError: unreadable or truncated file, or pixel data that does not decode (names the file).
        MissingPluginError: compressed pixel data and no plugin can decode it (says what to install).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = str(path)
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as e:
        raise SampleError(
            path, "file", f"not a readable DICOM file ({type(e).__name__}: {e})", image_id
        ) from e
    if "PixelData" not in ds:
        raise SampleError(
            path, "PixelData", "the DICOM file has no pixel data (truncated or not an image)", image_id
        )
    file_meta = getattr(ds, "file_meta", None)
    ts = getattr(file_meta, "TransferSyntaxUID", None)
    if ts is not None and ts.is_compressed and not _decoder_available(ts):
        raise MissingPluginError(
            path,
            "PixelData",
            f"pixel data is compressed ({ts.name}) and no installed plugin can decode it: {PLUGIN_HINT}",
            image_id,
        )
    try:
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises many types for broken pixel data
        raise SampleError(
            path, "PixelData", f"cannot decode pixel data ({type(e).__name__}: {e})", image_id
        ) from e

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    bits_allocated = int(ds.get("BitsAllocated", arr.dtype.itemsize * 8))
    bits = int(ds.get("BitsStored", bits_allocated) or bits_allocated)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    if arr.ndim == 3 and photometric not in ("MONOCHROME1", "MONOCHROME2"):
        # colour-encoded X-rays (rare): average the channels, range stays that of one sample
        arr = arr.astype(np.float32).mean(axis=-1)
    elif arr.ndim != 2:
        raise SampleError(
            path, "PixelData", f"expected one 2-D frame, got pixel array of shape {arr.shape}", image_id
        )
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    values = arr.astype(np.float32)
    if "RescaleSlope" in ds or "RescaleIntercept" in ds or "ModalityLUTSequence" in ds:
        values = np.asarray(apply_modality_lut(values, ds), dtype=np.float32)
        ends = np.asarray(apply_modality_lut(np.array([lo, hi], dtype=np.float32), ds), dtype=np.float32)
        lo, hi = float(ends.min()), float(ends.max())
    if apply_voi and ("WindowCenter" in ds or "VOILUTSequence" in ds):
        # The VOI stage maps onto a fixed output range (PS3.3 C.11.2), never onto the image's own
        # extremes: a LUT onto 0 .. 2**bits - 1 (3rd LUT Descriptor value); windowing onto the range the
        # modality stage outputs (pydicom's apply_windowing: the LUT depth with a Modality LUT Sequence,
        # else [lo, hi] computed above). pydicom prefers the LUT when both are present; so do we.
        voi = ds.get("VOILUTSequence")
        if voi and voi[0].get("LUTDescriptor") is not None and voi[0].get("LUTData") is not None:
            values = np.asarray(apply_voi_lut(np.rint(values).astype(np.int64), ds), dtype=np.float32)
            lo, hi = 0.0, float(2 ** int(voi[0].LUTDescriptor[2]) - 1)
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            values = np.asarray(apply_voi_lut(values, ds), dtype=np.float32)
            if ds.get("ModalityLUTSequence"):
                lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    if hi <= lo:
        raise SampleError(path, "BitsStored", f"degenerate value range [{lo}, {hi}]", image_id)
    pixels = np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    if photometric == "MONOCHROME1":
        pixels = 1.0 - pixels
    return DicomImage(
        pixels=pixels,
        photometric=photometric,
        bits_stored=bits,
        transfer_syntax=str(ts) if ts is not None else "",
        view_position=str(ds.get("ViewPosition", "")) or None,
        patient_id=str(ds.get("PatientID", "")) or None,
    )
