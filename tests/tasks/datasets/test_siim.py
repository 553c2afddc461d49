"""SIIM-ACR: the official layout parsed exactly (leading-space header, -1, UNION of RLE rows, nested
DICOMs of every kind), prepared into masks, split by patient."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pydicom
from PIL import Image

from tasks.datasets.siim import SIIM
from tasks.dicom import read_dicom
from tasks.rle import decode_siim_rle, parse_rle


def label_rows(root) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with open(root / "train-rle.csv") as f:
        reader = csv.reader(f)
        assert next(reader) == ["ImageId", " EncodedPixels"]  # the real file's header, space included
        for image_id, rle in reader:
            out.setdefault(image_id, []).append(rle.strip())
    return out


def test_fake_layout_is_official(fake_siim):
    dicoms = sorted((fake_siim / "dicom-images-train").rglob("*.dcm"))
    rows = label_rows(fake_siim)
    assert len(dicoms) == len(rows)
    for path in dicoms[:4]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rel = path.relative_to(fake_siim / "dicom-images-train").parts
        assert rel == (ds.StudyInstanceUID, ds.SeriesInstanceUID, f"{ds.SOPInstanceUID}.dcm")
    syntaxes = {
        str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID.name) for p in dicoms
    }
    assert {"JPEG Baseline (Process 1)", "Explicit VR Little Endian"} <= syntaxes
    assert any("2000" in s for s in syntaxes)
    assert any(len(r) > 1 for r in rows.values()) and any(r == ["-1"] for r in rows.values())


def test_parse_counts_and_union_of_rows(fake_siim):
    result = SIIM(fake_siim).parse()
    rows = label_rows(fake_siim)
    assert not result.failures
    assert result.counts["images"] == len(rows)
    assert result.counts["positive_images"] == sum(r != ["-1"] for r in rows.values())
    assert result.counts["images_with_several_regions"] == sum(len(r) > 1 for r in rows.values())
    assert result.sources["rle_encoding"] == "relative"
    ds = SIIM(fake_siim)
    several = [s for s in result.samples.to_dict("records") if len(s["mask_source"]["rows"]) > 1]
    assert several
    for s in several:
        mask = ds.load_mask(s, 64, 64)
        decoded = [decode_siim_rle(parse_rle(r), 64, 64) for r in rows[s["image_id"]]]
        union = np.logical_or.reduce(decoded)
        assert (mask == union).all()
        assert mask.sum() > decoded[-1].sum()  # keeping only the last row would lose pixels
        assert mask.sum() < sum(d.sum() for d in decoded)  # the fake's regions overlap: a union, not a sum


def test_union_of_three_hand_written_rows(fake_siim, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(fake_siim, raw)
    image_id = sorted(label_rows(raw))[0]
    lines = [
        line for line in (raw / "train-rle.csv").read_text().splitlines() if not line.startswith(image_id)
    ]
    # flat (column-major) pixels: row 1 -> 10..14; row 2 -> 12..17 (overlaps 12..14); row 3 -> 100..102 and
    # 164..166 (103 + 61). Union: 10..17 (8) + 6 = 14 pixels; the last row alone has 6, the sum is 17.
    lines += [f"{image_id}, 10 5", f"{image_id}, 12 6", f"{image_id}, 100 3 61 3"]
    (raw / "train-rle.csv").write_text("\n".join(lines) + "\n")
    ds = SIIM(raw)
    sample = next(s for s in ds.parse().samples.to_dict("records") if s["image_id"] == image_id)
    mask = ds.load_mask(sample, 64, 64)
    assert mask.sum() == 14
    on = {(int(r), int(c)) for r, c in zip(*np.nonzero(mask))}
    # flat i -> (i % 64, i // 64)
    assert on == {(i % 64, i // 64) for i in [*range(10, 18), 100, 101, 102, 164, 165, 166]}


def test_every_dicom_variant_decodes_bone_bright(fake_siim):
    for path in sorted((fake_siim / "dicom-images-train").rglob("*.dcm")):
        img = read_dicom(path)
        assert img.pixels.shape == (64, 64) and 0.0 <= img.pixels.min() and img.pixels.max() <= 1.0
        # the fake's mediastinum (centre column) is brighter than the lung fields whatever the encoding
        assert img.pixels[20:44, 29:35].mean() > img.pixels[20:44, 14:24].mean(), (path, img.photometric)
    kinds = {
        (read_dicom(p).photometric, read_dicom(p).bits_stored)
        for p in (fake_siim / "dicom-images-train").rglob("*.dcm")
    }
    assert ("MONOCHROME1", 12) in kinds and ("MONOCHROME2", 8) in kinds


def test_prepared_masks_and_patient_split(prepared_all, fake_siim):
    out = prepared_all / "siim"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["pneumothorax"] and manifest["failures"] == []
    assert manifest["sources"]["rle_encoding"] == "relative"
    splits = {r["image_id"]: r for r in csv.DictReader(open(out / "splits.csv"))}
    per_patient: dict[str, set] = {}
    for r in splits.values():
        per_patient.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in per_patient.values())
    assert any(len([r for r in splits.values() if r["patient_id"] == p]) == 2 for p in per_patient)
    ds = SIIM(fake_siim)
    for s in ds.parse().samples.to_dict("records"):
        mask = np.asarray(Image.open(out / "masks" / f"{s['image_id']}.png"))
        assert mask.shape == (224, 224) and set(np.unique(mask)) <= {0, 1}
        assert (mask.sum() > 0) == bool(s["mask_source"]["rows"])
        full = ds.load_mask(s, 64, 64)
        # nearest upsampling 64 -> 224 (x 3.5): the area scales by 3.5^2 up to the border pixels
        assert abs(mask.sum() - 3.5**2 * full.sum()) <= 4 * 3.5 * (full.sum() ** 0.5 * 4 + 4)


def test_parent_of_the_unpacked_folder_is_accepted(fake_siim, tmp_path):
    shutil.copytree(fake_siim, tmp_path / "download" / "siim")
    ds = SIIM(tmp_path / "download")
    assert ds.root == (tmp_path / "download" / "siim").resolve()
    assert len(ds.parse().samples) == len(label_rows(fake_siim))
