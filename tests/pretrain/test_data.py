"""Pretraining data: MIMIC-CXR layout reader (zip and unpacked), manifest, text rules, synthetic pairs, collation."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pretrain.config import AugmentConfig
from pretrain.data.dataset import PairCollator, PairDataset, load_image, swap_sentences
from pretrain.data.fake_mimic import SPECIAL, make_fake_mimic
from pretrain.data.manifest import read_manifest
from pretrain.data.mimic import read_mimic
from pretrain.data.records import PairDataError
from pretrain.data.synthetic import ZONES, make_pair, vocabulary, write_synthetic_dataset
from pretrain.text import (
    count_tokens,
    findings_and_impression,
    parse_sections,
    split_sentences,
)

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ year old woman with cough.

 COMPARISON:  Chest radiograph from ___.

 FINDINGS:

 PA and lateral views of the chest were provided. There is a 1.5 cm nodule in the
 right upper lobe, e.g. near the apex.  No pleural effusion or pneumothorax. Heart size is
 normal. Dr. Smith was notified at 10:00 a.m.

 IMPRESSION:

 1. Right upper lobe nodule measuring 1.5 cm.
 2. No acute process.
"""


def test_sections_and_sentences():
    sections = parse_sections(REPORT)
    assert [n for n, _ in sections] == [
        "preamble", "examination", "indication", "comparison", "findings", "impression"
    ]
    assert sections[0][1] == "                                 FINAL REPORT\n "  # LoVT: text[0:start(1)]
    parts = findings_and_impression(REPORT)
    assert parts["findings"].startswith("PA and lateral") and parts["impression"].startswith("1. Right")
    assert split_sentences(parts["findings"]) == [
        "PA and lateral views of the chest were provided.",
        "There is a 1.5 cm nodule in the right upper lobe, e.g. near the apex.",
        "No pleural effusion or pneumothorax.",
        "Heart size is normal.",
        "Dr. Smith was notified at 10:00 a.m.",
    ]
    assert split_sentences(parts["impression"]) == [
        "Right upper lobe nodule measuring 1.5 cm.",
        "No acute process.",
    ]
    assert count_tokens(["No acute process."]) == 3 and count_tokens(["1.5 cm"]) == 3
    # text without headers has neither section
    assert findings_and_impression("Clear lungs, no effusion.") == {"findings": "", "impression": ""}


@pytest.fixture(scope="module")
def fake_mimic(tmp_path_factory):
    return make_fake_mimic(tmp_path_factory.mktemp("mimic"), n_patients=10, seed=1)


def test_mimic_reader_on_the_official_layout(fake_mimic):
    pairs = read_mimic(fake_mimic)
    split = pd.read_csv(fake_mimic / "mimic-cxr-2.0.0-split.csv.gz", dtype=str)
    meta = pd.read_csv(fake_mimic / "mimic-cxr-2.0.0-metadata.csv.gz", dtype=str)
    table = split.merge(meta, on=["dicom_id", "subject_id", "study_id"])
    special_subjects = {str(19000001 + j): kind for j, kind in enumerate(SPECIAL)}
    ordinary = table[~table.subject_id.isin(special_subjects)]
    kept_special = {"two_frontal", "impression_only", "findings_only"}
    assert len(pairs.records) == ordinary.study_id.nunique() + len(kept_special)
    assert pairs.skipped == {
        "image not a frontal view": int((table.ViewPosition == "LATERAL").sum()),
        "no findings / impression section": 1,
        "fewer than 3 tokens in findings + impression": 1,
        "study without a frontal image": 1,
        "image file missing": 1,
        "study without an existing image file": 1,
        "report missing": 1,
    }
    by_kind = {special_subjects[r.patient_id]: r for r in pairs.records if r.patient_id in special_subjects}
    assert set(by_kind) == kept_special
    assert len(by_kind["two_frontal"].images) == 2
    assert (
        by_kind["impression_only"].sentences[0].startswith("Abnormalit")
        and len(by_kind["impression_only"].sentences) == 1
    )
    assert not any(s.startswith("Abnormalit") for s in by_kind["findings_only"].sentences)
    # splits come from the official file; every kept image exists and is frontal
    split_of = dict(zip(split.study_id, split.split))
    frontal = set(table[table.ViewPosition.isin(["PA", "AP"])].dicom_id)
    for r in pairs.records:
        assert r.split == split_of[r.study_id]
        for p in r.images:
            assert p.endswith(".jpg") and (fake_mimic / "files").as_posix() in p
            assert p.rsplit("/", 1)[-1][:-4] in frontal
    assert {r.split for r in pairs.records} == {"train", "validate", "test"}
    assert pairs.summary()["hash"] == read_mimic(fake_mimic).summary()["hash"]


def test_mimic_reader_unpacked_reports_equal_the_zip(fake_mimic, tmp_path):
    unpacked = make_fake_mimic(tmp_path / "unpacked", n_patients=10, seed=1, reports="dir")
    assert not (unpacked / "mimic-cxr-reports.zip").exists()
    a, b = read_mimic(fake_mimic), read_mimic(unpacked)
    assert [r.sentences for r in a.records] == [r.sentences for r in b.records]
    assert a.skipped == b.skipped and a.digest() == b.digest()
    # an explicit reports folder (the zip extracted elsewhere) works too
    import zipfile

    with zipfile.ZipFile(fake_mimic / "mimic-cxr-reports.zip") as zf:
        zf.extractall(tmp_path / "reports")
    c = read_mimic(unpacked, reports=tmp_path / "reports")
    assert [r.sentences for r in c.records] == [r.sentences for r in a.records]


def test_mimic_reader_errors(fake_mimic, tmp_path):
    with pytest.raises(PairDataError, match="files not found"):
        read_mimic(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(fake_mimic, broken)
    (broken / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(PairDataError, match=r"mimic-cxr-2.0.0-metadata.csv.gz not found"):
        read_mimic(broken)
    shutil.copy(fake_mimic / "mimic-cxr-2.0.0-metadata.csv.gz", broken)
    (broken / "mimic-cxr-reports.zip").unlink()
    with pytest.raises(PairDataError, match="no MIMIC-CXR reports found.*mimic-cxr-reports.zip"):
        read_mimic(broken)
    (broken / "mimic-cxr-reports.zip").write_bytes(b"not a zip")
    with pytest.raises(PairDataError, match="not a readable zip"):
        read_mimic(broken)
    pd.DataFrame({"dicom_id": ["x"], "split": ["train"]}).to_csv(
        broken / "mimic-cxr-2.0.0-split.csv.gz", index=False
    )
    with pytest.raises(PairDataError, match="missing column.*study_id"):
        read_mimic(broken)


def _write_manifest(tmp_path, fmt):
    from PIL import Image

    (tmp_path / "img").mkdir()
    for i in range(6):
        Image.fromarray(np.full((40, 30), 50 * (i % 5), np.uint8)).save(tmp_path / "img" / f"{i}.png")
    rows = [
        {
            "image": "img/0.png",
            "report": "FINDINGS: Left basal opacity. Heart normal.\nIMPRESSION: Pneumonia.",
            "patient_id": "a",
            "study_id": "s1",
        },
        {
            "image": "img/1.png",
            "report": "FINDINGS: Left basal opacity. Heart normal.\nIMPRESSION: Pneumonia.",
            "patient_id": "a",
            "study_id": "s1",
        },
        {"image": "img/2.png", "report": "No free text headers here. Lungs are clear.", "patient_id": "b"},
        {"image": "img/3.png", "report": "", "patient_id": "c"},
        {"image": "img/4.png", "report": "Ok.", "patient_id": "d"},
        {"image": "img/missing.png", "report": "Lungs are clear bilaterally.", "patient_id": "e"},
        {
            "image": str(tmp_path / "img" / "5.png"),
            "report": "Lungs are clear bilaterally.",
            "patient_id": "f",
        },
    ]
    if fmt == "csv":
        path = tmp_path / "pairs.csv"
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        path = tmp_path / "pairs.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_manifest(tmp_path, fmt):
    path = _write_manifest(tmp_path, fmt)
    pairs = read_manifest(path, val_fraction=0.5)
    assert pairs.skipped == {
        "report empty": 1,
        "fewer than 3 tokens in the report": 1,
        "image file missing": 1,
    }
    by_study = {r.study_id: r for r in pairs.records}
    assert len(pairs.records) == 3
    s1 = by_study["s1"]
    assert len(s1.images) == 2 and s1.sentences == ("Left basal opacity.", "Heart normal.", "Pneumonia.")
    headerless = next(r for r in pairs.records if r.patient_id == "b")
    assert headerless.sentences == ("No free text headers here.", "Lungs are clear.")
    assert all(r.split in ("train", "validate") for r in pairs.records)
    assert [r.split for r in read_manifest(path, val_fraction=0.5).records] == [
        r.split for r in pairs.records
    ]
    assert "no split column" in pairs.notes[0]


def test_manifest_errors(tmp_path):
    with pytest.raises(PairDataError, match="manifest not found"):
        read_manifest(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"file": ["a.png"], "report": ["x y z"]}).to_csv(bad, index=False)
    with pytest.raises(PairDataError, match="needs an image column.*found: file, report"):
        read_manifest(bad)
    split = tmp_path / "split.jsonl"
    (tmp_path / "a.png").write_bytes(b"")
    split.write_text(json.dumps({"image": "a.png", "report": "Lungs are clear.", "split": "holdout"}) + "\n")
    with pytest.raises(PairDataError, match="split 'holdout' is not one of"):
        read_manifest(split)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"image": "a.png"\n')
    with pytest.raises(PairDataError, match="line 1: not valid JSON"):
        read_manifest(broken)


def test_synthetic_pairs_carry_a_learnable_location_signal():
    """The zone a sentence names is brighter (smoothed maximum) than the mirrored zone without a finding."""
    from scipy.ndimage import uniform_filter

    rng = np.random.default_rng(0)
    size = 96
    for _ in range(20):
        pixels, sentences, findings = make_pair(rng, size)
        assert {f.sentence() for f in findings} <= set(sentences)
        smooth = uniform_filter(pixels.astype(float), size=3)

        def zone_max(row: int, image_x: float, smooth=smooth) -> float:
            y = 0.28 + 0.22 * row  # a box inside the lung field around the zone centre
            y0, y1 = int((y - 0.07) * size), int((y + 0.07) * size)
            x0, x1 = int((image_x - 0.07) * size), int((image_x + 0.07) * size)
            return smooth[y0:y1, x0:x1].max()

        zones = {f.zone for f in findings}
        for f in findings:
            assert f.zone in " ".join(sentences)
            row, side = ZONES[f.zone]
            mirror = f"{f.zone.split()[0]} {'left' if side == 'right' else 'right'}"
            if mirror in zones:
                continue
            x = 0.3 if side == "right" else 0.7  # the patient's right lung is on the image's left
            assert zone_max(row, x) > zone_max(row, 1 - x) + 15, f
    assert {"upper", "left", "opacity", "clear"} <= set(vocabulary())


def test_synthetic_dataset_is_a_manifest(tmp_path):
    manifest = write_synthetic_dataset(tmp_path, n=16, size=48, seed=3)
    pairs = read_manifest(manifest)
    assert len(pairs.records) == 16 and len(pairs.split("validate")) == 2 and not pairs.skipped
    assert all(any("zone" in s for s in r.sentences) for r in pairs.records)
    mtime = manifest.stat().st_mtime
    assert (
        write_synthetic_dataset(tmp_path, n=16, size=48, seed=3) == manifest
        and manifest.stat().st_mtime == mtime
    )


class WordTokenizer:
    """A stand-in tokenizer (one id per word) so collation is tested without transformers."""

    cls_token_id, sep_token_id, pad_token_id = 101, 102, 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[1000 + len(w) for w in t.split()] for t in texts]}


def test_collator_sentence_index_and_truncation():
    items = [
        {"image": torch.zeros(1, 8, 8), "sentences": ["a b c", "d e"]},
        {"image": torch.ones(1, 8, 8), "sentences": ["f g h i j k"]},
    ]
    batch = PairCollator(WordTokenizer(), max_tokens=16)(items)
    assert batch["images"].shape == (2, 1, 8, 8)
    assert batch["input_ids"][0].tolist()[:7] == [101, 1001, 1001, 1001, 1001, 1001, 102]
    assert batch["sentence_index"][0].tolist()[:7] == [-1, 0, 0, 0, 1, 1, -1]
    assert batch["sentence_index"][1].tolist() == [-1, 0, 0, 0, 0, 0, 0, -1]
    assert batch["attention_mask"].sum(1).tolist() == [7, 8]
    assert batch["sentence_mask"].tolist() == [[True, True], [True, False]]
    # the budget: a sentence that no longer fits is dropped, a too long first sentence is cut
    short = PairCollator(WordTokenizer(), max_tokens=6)(items)
    assert short["sentence_index"][0].tolist() == [-1, 0, 0, 0, -1, -1]
    assert short["sentence_index"][1].tolist() == [-1, 0, 0, 0, 0, -1]
    assert short["sentence_mask"].tolist() == [[True], [True]]


def test_dataset_augmentation_sentences_and_broken_images(tmp_path, caplog):
    manifest = write_synthetic_dataset(tmp_path, n=6, size=64, seed=0)
    pairs = read_manifest(manifest)
    records = pairs.split("train")
    plain = PairDataset(records, 48, mean=0.5, std=0.25)
    a = plain[0]
    assert a["image"].shape == (1, 48, 48) and list(a["sentences"]) == list(records[0].sentences)
    assert torch.equal(a["image"], plain[0]["image"])  # no augmentation: deterministic
    expected = (load_image(records[0].images[0], 48).float() / 255 - 0.5) / 0.25
    assert torch.allclose(a["image"], expected)
    aug = PairDataset(records, 48, 0.5, 0.25, AugmentConfig(), sentences="one_random")
    torch.manual_seed(0)
    b = aug[0]
    assert b["image"].shape == (1, 48, 48) and not torch.equal(b["image"], a["image"])
    assert len(b["sentences"]) == 1 and b["sentences"][0] in records[0].sentences
    # a broken file: warned by name, the next pair is used
    Path(records[0].images[0]).write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="pretrain"):
        c = plain[0]
    assert records[0].images[0] in caplog.text and c["sentences"] == list(records[1].sentences)


def test_sentence_swaps_keep_the_sentences():
    s = [f"s{i}" for i in range(6)]
    g = torch.Generator().manual_seed(0)
    seen_change = False
    for _ in range(20):
        out = swap_sentences(s, 0.4, g)
        assert sorted(out) == sorted(s)
        seen_change |= out != s
    assert seen_change
    assert swap_sentences(["only"], 0.4) == ["only"]


def test_one_random_sentence_depends_on_the_split_not_on_augmentation(tmp_path):
    from pretrain.config import TrainConfig, preset_config
    from pretrain.train import _datasets

    manifest = write_synthetic_dataset(tmp_path, n=12, size=64, seed=0)
    pairs = read_manifest(manifest)
    record = max(pairs.split("train"), key=lambda r: len(r.sentences))
    assert len(record.sentences) >= 3
    # convirt without augmentation (as --synthetic / --no-augment): training still draws sentences
    cfg = preset_config("convirt", augment=AugmentConfig(enabled=False), train=TrainConfig(image_size=48))
    assert cfg.sentences == "one_random" and not cfg.augment.enabled
    train, val = _datasets(cfg, pairs, 0.5, 0.25)
    i = train.records.index(record)
    torch.manual_seed(0)
    drawn = {train[i]["sentences"][0] for _ in range(40)}
    assert len(drawn) >= 2 and drawn <= set(record.sentences)
    # validation: always the same (first) sentence
    j = next(k for k, r in enumerate(val.records) if len(r.sentences) >= 2)
    assert {val[j]["sentences"][0] for _ in range(20)} == {val.records[j].sentences[0]}
