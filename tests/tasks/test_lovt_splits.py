"""``--splits lovt:DIR``: the published split CSVs of the reference code, on fake split files written in
their format (incl. Object-CXR's (x, y, h, w) boxes)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from tasks.datasets import DATASETS, get_dataset
from tasks.errors import DatasetLayoutError
from tasks.fakes import make_fake_lovt_splits
from tasks.lovt import find_split_dir, import_lovt_splits, parse_boxes
from tasks.prepare import prepare
from tasks.splits import subset


def read_ids(path) -> list[str]:
    with open(path) as f:
        return [row[0] for row in list(csv.reader(f))[1:]]


@pytest.mark.parametrize("name", list(DATASETS))
def test_import_matches_the_files(name, fake_raw, tmp_path):
    repo = make_fake_lovt_splits(name, fake_raw[name], tmp_path / "lovt", seed=1)
    ds = get_dataset(name)(fake_raw[name])
    folder = repo / "datasets" / ds.lovt_folders[0]
    for where in (repo, repo / "datasets", folder):  # the repository, its datasets/, the split folder
        assert find_split_dir(where, ds) == folder
    imported = import_lovt_splits(repo, ds, ds.parse().samples)
    assert imported.failures == []
    train, val, test = (read_ids(folder / f"{s}.csv") for s in ("train", "validation", "test"))
    table = imported.table
    assert subset(table, "train") == sorted(train) and subset(table, "test") == sorted(test)
    if name == "rsna":  # the reference code validated on the first 10 % of validation.csv
        assert subset(table, "val") == sorted(val[: round(0.1 * len(val))])
        assert imported.info["validation_rows_left_out"] == len(val) - round(0.1 * len(val))
    else:
        assert subset(table, "val") == sorted(val)
    for f in ds.fractions:  # label fractions are the first rows of train.csv
        if f < 100:
            assert subset(table, "train", f) == sorted(train[: max(1, round(f / 100 * len(train)))])
    assert imported.info["boxes_differing_from_raw"] == 0


def test_object_cxr_box_order_is_checked(fake_object_cxr, tmp_path):
    ds = get_dataset("object_cxr")(fake_object_cxr)
    samples = ds.parse().samples
    swapped = make_fake_lovt_splits("object_cxr", fake_object_cxr, tmp_path / "ref", seed=0)
    text = (swapped / "datasets" / "object-CXR" / "train.csv").read_text()
    positive = next(line for line in text.splitlines()[1:] if line.split(",")[1])
    image_id, boxes, _ = positive.split(",")
    x, y, a, b = (float(v) for v in boxes.split("|")[0].split(";"))
    raw_box = samples.set_index("image_id").loc[image_id, "boxes"][0]
    assert [x, y, b, a] == raw_box  # the file holds (x, y, h, w), like the reference files
    assert parse_boxes("1;2;3;4|5;6;7;8", "1|1", "xyhw") == ([[1, 2, 4, 3], [5, 6, 8, 7]], [1, 1])
    assert import_lovt_splits(swapped, ds, samples).failures == []
    # a file that wrote (x, y, w, h) does not match once read the reference way: every box is reported
    plain = make_fake_lovt_splits(
        "object_cxr", fake_object_cxr, tmp_path / "plain", seed=0, swap_object_cxr=False
    )
    failures = import_lovt_splits(plain, ds, samples).failures
    square = sum(all(w == h for _, _, w, h in b) for b in samples["boxes"] if b)
    assert len(failures) == sum(bool(b) for b in samples["boxes"]) - square > 0
    assert all(
        f.field.endswith(" boxes") and "read as xyhw" in f.reason and f.file.endswith(".csv")
        for f in failures
    )


def test_prepare_with_lovt_splits(fake_rsna, data_root, tmp_path):
    repo = make_fake_lovt_splits("rsna", fake_rsna, tmp_path / "ref", seed=2)
    report = prepare("rsna", fake_rsna, tmp_path / "out", splits=f"lovt:{repo}", progress=False)
    assert not report.failures
    m = report.manifest
    assert m["split_scheme"].startswith("published LoVT split files") and "first 10 %" in m["split_scheme"]
    folder = repo / "datasets" / "RSNA-Pneunomia-Detection"
    train = read_ids(folder / "train.csv")
    assert m["subsets"]["train"] == len(train) and m["subsets"]["val"] == max(
        1, round(0.1 * len(read_ids(folder / "validation.csv")))
    )
    assert (tmp_path / "out" / "rsna" / "annotations" / "train_10pct.txt").read_text().split() == sorted(
        train[: round(0.1 * len(train))]
    )
    default = json.loads((data_root / "rsna" / "manifest.json").read_text())
    assert m["split_hash"] != default["split_hash"]
    left_out = m["split_info"]["validation_rows_left_out"]
    assert (
        m["counts"]["prepared_images"]
        == len(read_ids(folder / "train.csv")) + len(read_ids(folder / "test.csv")) + m["subsets"]["val"]
    )
    assert left_out > 0


def test_bad_split_files(fake_covid_rural, tmp_path):
    ds = get_dataset("covid_rural")(fake_covid_rural)
    samples = ds.parse().samples
    with pytest.raises(DatasetLayoutError, match="no folder with train.csv, validation.csv, test.csv.*Tried"):
        import_lovt_splits(tmp_path / "nowhere", ds, samples)
    repo = make_fake_lovt_splits("covid_rural", fake_covid_rural, tmp_path / "ref")
    folder = find_split_dir(repo, ds)
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "test.csv").write_text("ID,boxes,classes\nCOVID-19-AR-1_01-01-2012-XR,,\n")
    with pytest.raises(DatasetLayoutError, match=r"test.csv: header is ID,boxes,classes; expected ID"):
        import_lovt_splits(broken, ds, samples)
    (broken / "test.csv").write_text(
        (folder / "test.csv").read_text() + "COVID-19-AR-99999999_01-01-2012-XR\n"
    )
    imported = import_lovt_splits(broken, ds, samples)
    assert len(imported.failures) == 1
    f = imported.failures[0]
    assert f.file.endswith("test.csv") and f.field.endswith(" ID") and "not in the raw download" in f.reason
    assert len(imported.table) == len(samples)  # the rest is imported
