"""RSNA: the official layout parsed exactly, prepared into stock-readable files, split deterministically."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks.datasets.rsna import RSNA
from tasks.dicom import read_dicom
from tasks.errors import DatasetLayoutError
from tasks.image import Geometry
from tasks.prepare import prepare
from tasks.splits import patient_split, split_hash, subset


def csv_boxes(root) -> dict[str, list[list[float]]]:
    df = pd.read_csv(root / "stage_2_train_labels.csv")
    out: dict[str, list] = {}
    for row in df.itertuples():
        out.setdefault(row.patientId, [])
        if row.Target == 1:
            out[row.patientId].append([row.x, row.y, row.width, row.height])
    return out


def test_fake_layout_is_official(fake_rsna):
    text = (fake_rsna / "stage_2_train_labels.csv").read_text().splitlines()
    assert text[0] == "patientId,x,y,width,height,Target"
    negatives = [line for line in text[1:] if line.endswith(",,,,,0")]
    positives = [line for line in text[1:] if line.endswith(",1")]
    assert len(negatives) == 20 and len(positives) > 20  # several boxes per positive patient
    assert all(len(line.split(",")[1].split(".")[1]) == 1 for line in positives)  # written as "264.0"
    dcm = read_dicom(next((fake_rsna / "stage_2_train_images").glob("*.dcm")))
    assert dcm.pixels.shape == (1024, 1024) and dcm.photometric == "MONOCHROME2" and dcm.bits_stored == 8
    views = {
        read_dicom(p).view_position for p in list((fake_rsna / "stage_2_train_images").glob("*.dcm"))[:6]
    }
    assert views == {"PA", "AP"}


def test_parse_counts_and_boxes(fake_rsna):
    result = RSNA(fake_rsna).parse()
    assert not result.failures
    assert result.counts["images"] == 40 and result.counts["positive_images"] == 20
    expected = csv_boxes(fake_rsna)
    assert result.counts["boxes"] == sum(len(b) for b in expected.values())
    for row in result.samples.itertuples():
        assert row.boxes == expected[row.image_id]  # exactly as in the CSV
        assert row.labels == [0] * len(row.boxes)
        assert row.patient_id == row.image_id


def test_jpeg_and_uncompressed_dicoms_decode(fake_rsna):
    import pydicom

    syntaxes = {
        str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID.name)
        for p in (fake_rsna / "stage_2_train_images").glob("*.dcm")
    }
    assert syntaxes == {"JPEG Baseline (Process 1)", "Explicit VR Little Endian"}


def test_prepare_outputs(data_root, fake_rsna):
    out = data_root / "rsna"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["prepared_images"] == 40 and manifest["failures"] == []
    assert manifest["differs_from_release"]["images"] == {"found": 40, "expected": 26684}
    assert sum(manifest["subsets"][s] for s in ("train", "val", "test")) == 40
    assert (manifest["subsets"]["train"], manifest["subsets"]["val"], manifest["subsets"]["test"]) == (
        24,
        8,
        8,
    )
    img = np.asarray(Image.open(out / "images" / f"{next(iter(csv_boxes(fake_rsna)))}.png"))
    assert img.shape == (224, 224) and img.dtype == np.uint8
    stats = json.loads((out / "stats.json").read_text())
    assert 0 < stats["train"]["mean"] < 1 and 0 < stats["train"]["std"] < 1
    assert set(stats) == {"train", "train_1pct", "train_10pct"}


def test_coco_files_valid_and_boxes_scaled(data_root, fake_rsna):
    from pycocotools.coco import COCO

    expected = csv_boxes(fake_rsna)
    for name in ("train", "val", "test", "train_10pct", "train_1pct"):
        coco = COCO(str(data_root / "rsna" / "annotations" / f"{name}.json"))
        ids = (data_root / "rsna" / "annotations" / f"{name}.txt").read_text().split()
        assert [coco.imgs[i]["file_name"] for i in sorted(coco.imgs)] == [f"{i}.png" for i in ids]
        for img_id, img in coco.imgs.items():
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
            want = (
                Geometry(1024, 1024, 224).boxes(np.array(expected[img["image_id"]])).round(3)
                if expected[img["image_id"]]
                else np.zeros((0, 4))
            )
            assert np.allclose([a["bbox"] for a in anns] or np.zeros((0, 4)), want, atol=1e-3)


def test_masks_are_rasterised_boxes(data_root, fake_rsna):
    expected = csv_boxes(fake_rsna)
    pid = next(p for p, b in expected.items() if len(b) == 1)
    mask = np.asarray(Image.open(data_root / "rsna" / "masks" / f"{pid}.png"))
    x, y, w, h = Geometry(1024, 1024, 224).boxes(np.array(expected[pid]))[0]
    assert set(np.unique(mask)) == {0, 1}
    assert abs(mask.sum() - w * h) <= 2 * (w + h) + 4  # nearest resize: exact up to the border pixels


def test_split_deterministic_and_patient_level(fake_rsna):
    samples = RSNA(fake_rsna).parse().samples
    a = patient_split(samples, fractions=(1, 10, 100))
    b = patient_split(samples.sample(frac=1.0, random_state=3), fractions=(1, 10, 100))  # other file order
    assert a.equals(b) and split_hash(a) == split_hash(b)
    by_split = {s: set(a.loc[a.split == s, "patient_id"]) for s in ("train", "val", "test")}
    assert not (
        by_split["train"] & by_split["val"]
        or by_split["train"] & by_split["test"]
        or by_split["val"] & by_split["test"]
    )
    one, ten, full = (set(subset(a, "train", f)) for f in (1, 10, 100))
    assert one <= ten <= full and len(full) == 24 and len(ten) == 2 and len(one) == 1


def test_prepare_resumes_and_never_writes_into_raw(fake_rsna, tmp_path):
    before = sorted(p.name for p in fake_rsna.rglob("*"))
    r1 = prepare("rsna", fake_rsna, tmp_path, workers=1, progress=False)
    r2 = prepare("rsna", fake_rsna, tmp_path, workers=1, progress=False)
    assert r1.prepared == 40 and r2.prepared == 0 and r2.resumed == 40
    assert r1.manifest["split_hash"] == r2.manifest["split_hash"]
    assert sorted(p.name for p in fake_rsna.rglob("*")) == before
    with pytest.raises(Exception, match="refusing to write into the raw"):
        prepare("rsna", fake_rsna, fake_rsna / "prepared", progress=False)


def test_missing_image_and_bad_rows_reported(fake_rsna, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(fake_rsna, raw)
    victim = sorted((raw / "stage_2_train_images").glob("*.dcm"))[0]
    victim.unlink()
    with open(raw / "stage_2_train_labels.csv", "a") as f:
        f.write("badpatient,1.0,2.0,x,4.0,1\n")
    report = prepare("rsna", raw, tmp_path / "out", progress=False)
    reasons = [str(f) for f in report.failures]
    assert any(victim.name in r and "image file is missing" in r for r in reasons)
    assert any("row" in r and "x/y/width/height" in r and "badpatient" in r for r in reasons)
    assert report.manifest["counts"]["prepared_images"] == 39


def test_layout_errors(tmp_path):
    with pytest.raises(DatasetLayoutError, match="empty"):
        (tmp_path / "empty").mkdir()
        RSNA(tmp_path / "empty").parse()
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / "stage_2_train_images").mkdir()
    (tmp_path / "wrong" / "stage_2_train_labels.csv").write_text("id,x,y,w,h,label\n")
    with pytest.raises(DatasetLayoutError, match="header is id,x,y,w,h,label; expected patientId"):
        RSNA(tmp_path / "wrong").parse()
