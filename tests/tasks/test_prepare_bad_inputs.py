"""Bad input: each a clear error naming the file and the field, and ``prepare`` goes on with the rest."""

from __future__ import annotations

import shutil

import pytest

from tasks.datasets import DATASETS, get_dataset
from tasks.errors import DatasetLayoutError
from tasks.prepare import prepare


def copy(src, tmp_path, name="raw"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def run(name, raw, tmp_path):
    report = prepare(name, raw, tmp_path / "out", workers=1, progress=False)
    return report, [str(f) for f in report.failures]


@pytest.mark.parametrize("name", list(DATASETS))
def test_empty_folder(name, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"raw folder .*empty\. Download: http"):
        prepare(name, tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        get_dataset(name)(tmp_path / "missing").parse()


@pytest.mark.parametrize(
    "name, file, header",
    [
        ("siim", "train-rle.csv", "ImageId,Mask"),
        ("object_cxr", "dev.csv", "name,annotation"),
        ("nih", "BBox_List_2017.csv", "Image Index,Finding Label,x,y,w,h"),
        ("nih", "Data_Entry_2017_v2020.csv", "Image Index,Labels,Patient ID"),
    ],
)
def test_csv_with_a_wrong_header(name, file, header, fake_raw, tmp_path):
    raw = copy(fake_raw[name], tmp_path)
    lines = (raw / file).read_text().splitlines()
    (raw / file).write_text("\n".join([header, *lines[1:]]) + "\n")
    with pytest.raises(DatasetLayoutError) as e:
        prepare(name, raw, tmp_path / "out", progress=False)
    assert str(raw / file) in str(e.value) and f"header is {header}; expected" in str(e.value)


def test_missing_label_file_is_named(fake_raw, tmp_path):
    raw = copy(fake_raw["siim"], tmp_path)
    (raw / "train-rle.csv").unlink()
    with pytest.raises(DatasetLayoutError, match=r"no label file \(train-rle.csv or stage_2_train.csv\)"):
        get_dataset("siim")(raw).parse()
    raw = copy(fake_raw["object_cxr"], tmp_path, "ocxr")
    shutil.rmtree(raw / "dev")
    with pytest.raises(DatasetLayoutError, match=r"dev/ or dev.zip"):
        get_dataset("object_cxr")(raw).parse()


@pytest.mark.parametrize("name", ["siim", "object_cxr", "nih", "covid_rural"])
def test_label_row_whose_image_is_missing(name, fake_raw, tmp_path):
    raw = copy(fake_raw[name], tmp_path)
    ds = get_dataset(name)(raw)
    n = len(ds.parse().samples)
    victim = sorted(ds.parse().samples["file"])[1]
    image_id = next(s["image_id"] for s in ds.parse().samples.to_dict("records") if s["file"] == victim)
    __import__("os").unlink(victim)
    report, reasons = run(name, raw, tmp_path)
    hit = [r for r in reasons if image_id in r]
    assert len(hit) == 1, reasons
    if name == "covid_rural":  # the mask is left without its image
        assert "pngs_masks" in hit[0] and "mask without an image" in hit[0]
    else:
        assert "missing" in hit[0] or "no file of that name" in hit[0]
    assert report.manifest["counts"]["prepared_images"] == n - 1  # the rest is prepared


def test_malformed_rle_rows(fake_raw, tmp_path):
    raw = copy(fake_raw["siim"], tmp_path)
    rows = (raw / "train-rle.csv").read_text().splitlines()
    all_ids = sorted({r.split(",")[0] for r in rows[1:]})
    negative = sorted({r.split(",")[0] for r in rows[1:] if r.endswith(", -1")})
    ids = [i for i in all_ids if i not in negative]
    rows += [f"{ids[0]}, 12 4 x", f"{ids[1]}, 5 3 9", f"{ids[2]}, 4000 10 90000 4"]  # last: outside 64 x 64
    rows += [f"{negative[0]}, 10 5"]  # a -1 image that also has a region
    (raw / "train-rle.csv").write_text("\n".join(rows) + "\n")
    report, reasons = run("siim", raw, tmp_path)
    csv_path = str(raw / "train-rle.csv")
    n = len(rows) - 1  # 1-based line number of the last malformed row
    assert f"{csv_path}: row {n - 2} EncodedPixels: malformed RLE: not an integer: 'x' [{ids[0]}]" in reasons
    assert f"{csv_path}: row {n - 1} EncodedPixels: malformed RLE: odd number of values (3)" in " ".join(
        reasons
    )
    late = [r for r in reasons if ids[2] in r]
    assert len(late) == 1 and f"row {n} EncodedPixels" in late[0] and "64x64 image" in late[0]
    assert any(negative[0] in r and "both a -1 row and RLE rows" in r for r in reasons)
    assert len(reasons) == 4 and report.manifest["counts"]["prepared_images"] == len(all_ids) - 4


def test_malformed_annotation_string(fake_raw, tmp_path):
    raw = copy(fake_raw["object_cxr"], tmp_path)
    lines = (raw / "train.csv").read_text().splitlines()
    name = lines[3].split(",")[0]
    lines[3] = f"{name},0 10 10 40 40;5 1 2 3 4"
    (raw / "train.csv").write_text("\n".join(lines) + "\n")
    report, reasons = run("object_cxr", raw, tmp_path)
    assert any(
        r.startswith(f"{raw / 'train.csv'}: row 4 annotation: malformed annotation: object 2")
        and "type must be" in r
        for r in reasons
    ), reasons
    assert len(reasons) == 1 and report.manifest["counts"]["prepared_images"] == 39


def test_mask_of_the_wrong_size(fake_raw, tmp_path):
    from PIL import Image

    raw = copy(fake_raw["covid_rural"], tmp_path)
    mask = sorted((raw / "pngs_masks").glob("*.png"))[0]
    Image.new("L", (17, 11)).save(mask)
    report, reasons = run("covid_rural", raw, tmp_path)
    assert len(reasons) == 1 and reasons[0].startswith(f"{mask}: size: mask is 17x11 but the image")
    bad_values = sorted((raw / "pngs_masks").glob("*.png"))[1]
    w, h = Image.open(bad_values).size
    Image.new("L", (w, h), 7).save(bad_values)
    _, reasons = run("covid_rural", raw, tmp_path)  # a resumed run notices the changed mask
    assert any(r.startswith(f"{bad_values}: values: a binary mask holds 0/1") for r in reasons)


def test_truncated_dicom(fake_raw, tmp_path):
    raw = copy(fake_raw["siim"], tmp_path)
    files = sorted((raw / "dicom-images-train").rglob("*.dcm"))
    cut_pixels, cut_header = files[0], files[1]
    data = cut_pixels.read_bytes()
    cut_pixels.write_bytes(data[: len(data) - 300])  # the end of the pixel data is gone
    cut_header.write_bytes(cut_header.read_bytes()[:100])  # not even a header
    report, reasons = run("siim", raw, tmp_path)
    assert len(reasons) == 2, reasons
    assert any(r.startswith(f"{cut_header}: header: not a readable DICOM file") for r in reasons)
    assert any(r.startswith(str(cut_pixels)) and ("PixelData" in r or ": file:" in r) for r in reasons)
    assert report.manifest["counts"]["prepared_images"] == len(files) - 2


def test_compressed_dicom_without_a_plugin(fake_raw, tmp_path, monkeypatch):
    import pydicom

    import tasks.dicom

    monkeypatch.setattr(tasks.dicom, "_decoder_available", lambda ts: False)  # as if no plugin were installed
    raw = fake_raw["siim"]
    files = sorted((raw / "dicom-images-train").rglob("*.dcm"))
    compressed = {
        p
        for p in files
        if pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed
    }
    assert 0 < len(compressed) < len(files)
    report, reasons = run("siim", raw, tmp_path)
    assert len(reasons) == len(compressed)
    for r in reasons:
        assert r.split(": PixelData: ")[0] in {str(p) for p in compressed}
        assert "no installed plugin can decode it" in r and "pip install pylibjpeg pylibjpeg-libjpeg" in r
    assert report.manifest["counts"]["prepared_images"] == len(files) - len(compressed)  # the others are done
