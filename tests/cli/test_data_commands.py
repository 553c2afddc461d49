"""The data commands of the CLI: ``fake`` and ``prepare`` for all five datasets, ``datasets``."""

from __future__ import annotations

import json

from benchmark.cli import DATASET_NAMES


def test_datasets_lists_all(cli):
    listing = cli("datasets")
    assert listing.code == 0
    out = listing.out
    for name in DATASET_NAMES:
        assert f"\n{name} " in f"\n{out}"
    assert "Infiltrate" in out and "26,684" in out


def test_fake_check_prepare_round_trip(tmp_path, cli):
    raw = tmp_path / "covid"
    assert cli("fake", "covid_rural", "--out", raw, "--n", "6", "--seed", "1").code == 0
    check = cli("datasets", "--raw", raw)  # the dataset is detected from the layout
    assert check.code == 0
    out = check.out
    assert "covid_rural:" in out
    assert "note: images = " in out and "221" in out and "ok: ready" in out
    data = tmp_path / "data"
    prepared = cli("prepare", "covid_rural", "--raw", raw, "--out", data, "--workers", "1", "--quiet")
    assert prepared.code == 0
    manifest = json.loads((tmp_path / "data" / "covid_rural" / "manifest.json").read_text())
    assert manifest["counts"]["prepared_images"] == manifest["counts"]["images"] > 6

    # a broken input: the check and prepare name it; prepare exits 1 unless --allow-failures
    victim = sorted((raw / "jpgs").glob("*.jpg"))[0]
    victim.unlink()
    check = cli("datasets", "--raw", raw, "--dataset", "covid_rural")
    assert check.code == 1
    assert f"pngs_masks/{victim.stem}.png: file name: mask without an image" in check.out
    args = [
        "prepare",
        "covid_rural",
        "--raw",
        str(raw),
        "--out",
        str(tmp_path / "d2"),
        "--workers",
        "1",
        "--quiet",
    ]
    captured = cli(*args)
    assert captured.code == 1
    assert "1 input(s) could not be used" in captured.out and "--allow-failures" in captured.err
    assert cli(*args, "--allow-failures").code == 0


def test_prepare_with_lovt_splits_and_errors(tmp_path, cli):
    from tasks.fakes import make_fake_lovt_splits

    raw = tmp_path / "ocxr"
    assert cli("fake", "object_cxr", "--out", raw, "--n", "9", "--zip").code == 0
    assert (raw / "train.zip").is_file()
    repo = make_fake_lovt_splits("object_cxr", raw, tmp_path / "lovt")
    args = [
        "prepare",
        "object_cxr",
        "--raw",
        str(raw),
        "--out",
        str(tmp_path / "data"),
        "--workers",
        "2",
        "--quiet",
    ]
    assert cli(*args, "--splits", f"lovt:{repo}").code == 0
    manifest = json.loads((tmp_path / "data" / "object_cxr" / "manifest.json").read_text())
    assert manifest["split_info"]["boxes_differing_from_raw"] == 0 and "LoVT" in manifest["split_scheme"]
    nowhere = cli(*args, "--splits", f"lovt:{tmp_path / 'nowhere'}")
    assert nowhere.code == 2
    assert "no folder with train.csv" in nowhere.err
    assert cli(*args, "--splits", "mine").code == 2
    (tmp_path / "empty").mkdir()
    empty = cli("datasets", "--raw", tmp_path / "empty")
    assert empty.code == 2
    assert "cannot tell which dataset" in empty.err
    assert cli("fake", "covid_rural", "--out", tmp_path / "x", "--size", "64").code == 2
