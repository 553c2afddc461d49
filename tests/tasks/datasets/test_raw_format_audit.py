"""Format details of the raw datasets checked against the spec and the reference code (audit)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.splits import patient_split


def test_split_sizes_follow_the_published_counts():
    """The reference code cut test = round(20 %), val = round(20 %) and train = the rest
    (philip-mueller/lovt src/data/datasets/processing_utils.py: random_split_indices), which gives the
    published training sizes of tasks.md: SIIM 7229 of 12,047 (round(60 %) would give 7228), RSNA 16010,
    COVID Rural 133 / 44 / 44, NIH 588 / 196 / 196."""
    for n, want in (
        (12047, (7229, 2409, 2409)),
        (26684, (16010, 5337, 5337)),
        (221, (133, 44, 44)),
        (980, (588, 196, 196)),
    ):
        ids = [f"i{k:05d}" for k in range(n)]
        table = patient_split(pd.DataFrame({"image_id": ids, "patient_id": ids}))
        got = tuple(int((table.split == s).sum()) for s in ("train", "val", "test"))
        assert got == want, (n, got)
    ids = [f"i{k:04d}" for k in range(8000)]  # Object-CXR: 80/20 of the official train set
    table = patient_split(pd.DataFrame({"image_id": ids, "patient_id": ids}), ratios=(0.8, 0.2, 0.0))
    assert int((table.split == "train").sum()) == 6400 and not (table.split == "test").any()


def _windowed_dicom(path, values, **tags):
    import pydicom

    from tasks.fakes.common import write_dicom

    write_dicom(path, np.array(values, dtype=np.uint16).reshape(1, -1), "p", bits_stored=12)
    ds = pydicom.dcmread(path)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(path)
    return path


def test_voi_windowing_maps_the_window_not_the_image_extremes(tmp_path):
    """Windowing (DICOM PS3.3 C.11.2.1.2) maps the window onto the output range; an image whose values
    stay inside the window must keep its contrast, not be stretched to [0, 1] by its own min / max."""
    from tasks.dicom import read_dicom

    path = _windowed_dicom(tmp_path / "w.dcm", [990, 1000, 1010], WindowCenter="1000", WindowWidth="200")
    got = read_dicom(path, apply_voi=True).pixels[0]
    c, w = 1000 - 0.5, 200 - 1  # the LINEAR function of the standard
    want = np.clip((np.array([990, 1000, 1010]) - c) / w + 0.5, 0, 1)
    assert np.allclose(got, want, atol=1e-4), got
    # a window as wide as the 12-bit range leaves the grey levels (almost) as they are
    path = _windowed_dicom(tmp_path / "f.dcm", [1000, 3000], WindowCenter="2048", WindowWidth="4096")
    assert np.allclose(read_dicom(path, apply_voi=True).pixels, read_dicom(path).pixels, atol=2e-3)
    assert np.allclose(read_dicom(path).pixels[0], np.array([1000, 3000]) / 4095)


def test_voi_lut_sequence_output_range_is_the_lut_depth(tmp_path):
    from pydicom.dataset import Dataset

    from tasks.dicom import read_dicom

    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 16])  # LUTDescriptor: 4096 entries from 0, 16 bits out
    item.add_new(0x00283006, "US", [v * 4 for v in range(4096)])  # LUTData: the 12-bit input times 4
    path = _windowed_dicom(tmp_path / "lut.dcm", [0, 1024, 2048], VOILUTSequence=[item])
    got = read_dicom(path, apply_voi=True).pixels[0]
    assert np.allclose(got, np.array([0, 4096, 8192]) / 65535, atol=1e-6), got


def test_covid_mask_with_an_alpha_channel(fake_covid_rural, tmp_path):
    """A 0/1 mask saved as grey + alpha (LA) must not read its opaque alpha channel as foreground."""
    import shutil

    from PIL import Image

    from tasks.datasets.covid_rural import CovidRural

    raw = tmp_path / "raw"
    shutil.copytree(fake_covid_rural, raw)
    ds = CovidRural(raw)
    sample = ds.parse().samples.to_dict("records")[0]
    grey = np.asarray(Image.open(sample["mask_file"]))
    la = np.stack([grey, np.full_like(grey, 255)], axis=-1)
    Image.fromarray(la, "LA").save(sample["mask_file"])
    h, w = grey.shape
    assert grey.any() and not grey.all()
    assert np.array_equal(ds.load_mask(sample, h, w), (grey > 0).astype(np.uint8))


def test_nih_bbox_rows_with_and_without_the_trailing_empty_cells(fake_nih):
    """The release's rows have 6 fields under a 9-cell header; re-saved copies have 9: both are read."""
    import csv

    from tasks.datasets.nih import NIH

    with open(fake_nih / "BBox_List_2017.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows[0]) == 9 and {len(r) for r in rows[1:]} == {6, 9}
    result = NIH(fake_nih).parse()
    assert not result.failures and result.counts["boxes"] == len(rows) - 1


def test_rsna_labels_saved_with_a_byte_order_mark(fake_rsna, tmp_path):
    """A label CSV re-saved by a spreadsheet starts with a UTF-8 BOM; the other readers accept it
    (``read_csv_table``: utf-8-sig), so RSNA must too."""
    import shutil

    from tasks.datasets.rsna import RSNA

    raw = tmp_path / "raw"
    shutil.copytree(fake_rsna, raw)
    path = raw / "stage_2_train_labels.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert RSNA(raw).parse().counts == RSNA(fake_rsna).parse().counts
