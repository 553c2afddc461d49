"""The data commands of the CLI: ``fake`` and ``prepare`` for all five datasets, ``datasets``."""

from __future__ import annotations

import json

from benchmark.cli import DATASET_NAMES, main


def test_datasets_lists_all(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in DATASET_NAMES:
        assert f"\n{name} " in f"\n{out}"
    assert "Infiltrate" in out and "26,684" in out


def test_fake_check_prepare_round_trip(tmp_path, capsys):
    raw = tmp_path / "covid"
    assert main(["fake", "covid_rural", "--out", str(raw), "--n", "6", "--seed", "1"]) == 0
    assert main(["datasets", "--raw", str(raw)]) == 0  # the dataset is detected from the layout
    out = capsys.readouterr().out
    assert "covid_rural:" in out
    assert "note: images = " in out and "221" in out and "ok: ready" in out
    assert (
        main(
            [
                "prepare",
                "covid_rural",
                "--raw",
                str(raw),
                "--out",
                str(tmp_path / "data"),
                "--workers",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    manifest = json.loads((tmp_path / "data" / "covid_rural" / "manifest.json").read_text())
    assert manifest["counts"]["prepared_images"] == manifest["counts"]["images"] > 6

    # a broken input: the check and prepare name it; prepare exits 1 unless --allow-failures
    victim = sorted((raw / "jpgs").glob("*.jpg"))[0]
    victim.unlink()
    capsys.readouterr()
    assert main(["datasets", "--raw", str(raw), "--dataset", "covid_rural"]) == 1
    assert f"pngs_masks/{victim.stem}.png: file name: mask without an image" in capsys.readouterr().out
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
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "1 input(s) could not be used" in captured.out and "--allow-failures" in captured.err
    assert main([*args, "--allow-failures"]) == 0


def test_prepare_with_lovt_splits_and_errors(tmp_path, capsys):
    from tasks.fakes import make_fake_lovt_splits

    raw = tmp_path / "ocxr"
    assert main(["fake", "object_cxr", "--out", str(raw), "--n", "9", "--zip"]) == 0
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
    assert main([*args, "--splits", f"lovt:{repo}"]) == 0
    manifest = json.loads((tmp_path / "data" / "object_cxr" / "manifest.json").read_text())
    assert manifest["split_info"]["boxes_differing_from_raw"] == 0 and "LoVT" in manifest["split_scheme"]
    assert main([*args, "--splits", f"lovt:{tmp_path / 'nowhere'}"]) == 2
    assert "no folder with train.csv" in capsys.readouterr().err
    assert main([*args, "--splits", "mine"]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["datasets", "--raw", str(tmp_path / "empty")]) == 2
    assert "cannot tell which dataset" in capsys.readouterr().err
    assert main(["fake", "covid_rural", "--out", str(tmp_path / "x"), "--size", "64"]) == 2
