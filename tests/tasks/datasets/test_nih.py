"""NIH ChestX-ray14 bounding-box subset: the BBox header quirk, images found by name anywhere, all views
and follow-ups, 'No Finding' images from test_list.txt, one binary mask per class."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
from PIL import Image

from tasks.datasets.nih import CLASSES, NIH


def bbox_rows(root) -> dict[str, list]:
    import pandas as pd

    df = pd.read_csv(root / "BBox_List_2017.csv")
    assert list(df.columns[:6]) == ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]  # the quirk
    out: dict[str, list] = {}
    for r in df.itertuples(index=False):
        out.setdefault(r[0], []).append((list(map(float, r[2:6])), CLASSES.index(r[1])))
    return out


def test_classes_in_protocol_order():
    assert NIH.classes == (
        "Atelectasis",
        "Cardiomegaly",
        "Effusion",
        "Infiltrate",
        "Mass",
        "Nodule",
        "Pneumonia",
        "Pneumothorax",
    )
    assert NIH.multi_label


def test_parse_boxes_equal_csv_and_views(fake_nih):
    result = NIH(fake_nih).parse()
    assert not result.failures
    rows = bbox_rows(fake_nih)
    samples = result.samples.to_dict("records")
    annotated = [s for s in samples if s["boxes"]]
    assert result.counts["annotated_images"] == len(annotated) == len(rows)
    assert result.counts["boxes"] == sum(len(v) for v in rows.values())
    for s in annotated:
        assert list(zip(s["boxes"], s["labels"])) == [(b, lab) for b, lab in rows[f"{s['image_id']}.png"]]
    # AP and PA and follow-ups are all kept; images come from two images_*/images/ folders
    assert {s["view"] for s in annotated} == {"AP", "PA"}
    assert any(not s["image_id"].endswith("_000") for s in annotated)
    assert {p.split("/")[-3] for p in (s["file"] for s in samples)} == {"images_001", "images_002"}


def test_no_finding_images_from_test_list(fake_nih, tmp_path):
    result = NIH(fake_nih).parse()
    test_list = set((fake_nih / "test_list.txt").read_text().split())
    entries = {r["Image Index"]: r for r in csv.DictReader(open(fake_nih / "Data_Entry_2017_v2020.csv"))}
    chosen = [s for s in result.samples.to_dict("records") if not s["boxes"]]
    assert chosen and result.counts["no_finding_images"] == len(chosen)
    for s in chosen:
        assert f"{s['image_id']}.png" in test_list
        assert entries[f"{s['image_id']}.png"]["Finding Labels"] == "No Finding"
    # the choice depends on names only: fewer wanted -> a prefix of the same hashed order
    few = NIH(fake_nih)
    few.n_no_finding = 2
    two = [s["image_id"] for s in few.parse().samples.to_dict("records") if not s["boxes"]]
    assert len(two) == 2 and set(two) <= {s["image_id"] for s in chosen}
    # a flat images/ layout works just as well
    flat = tmp_path / "flat"
    shutil.copytree(fake_nih, flat)
    (flat / "images").mkdir()
    for p in list(flat.glob("images_*/images/*.png")):
        p.rename(flat / "images" / p.name)
    again = NIH(flat).parse()
    assert not again.failures and len(again.samples) == len(result.samples)


def test_per_class_masks_hand_computed(fake_nih):
    ds = NIH(fake_nih)
    s = {
        "boxes": [[10.0, 20.0, 30.0, 40.0], [25.0, 30.0, 10.0, 10.0], [0.5, 0.5, 3.0, 2.0]],
        "labels": [2, 5, 2],
    }
    masks = ds.load_mask(s, 96, 96)
    assert masks.shape == (8, 96, 96) and masks.dtype == np.uint8
    # Effusion: 30 x 40 = 1200 plus 3 x 2 = 6 (centres in [0.5, 3.5) x [0.5, 2.5): columns 0-2, rows 0-1)
    assert masks[2].sum() == 1200 + 6 and masks[2][0:2, 0:3].all() and not masks[2][2, 0]
    assert masks[5].sum() == 100  # Nodule overlaps Effusion and keeps its own mask
    assert masks[2][30:40, 25:35].all() and masks[5][30:40, 25:35].all()
    assert masks[[0, 1, 3, 4, 6, 7]].sum() == 0


def test_prepared_per_class_masks_and_coco(prepared_all, fake_nih):
    from pycocotools.coco import COCO

    out = prepared_all / "nih"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["multi_label"] and manifest["classes"] == list(CLASSES)
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted(CLASSES)
    rows = bbox_rows(fake_nih)
    overlap_seen = False
    for image in (out / "images").iterdir():
        image_id = image.stem
        stacked = np.stack([np.asarray(Image.open(out / "masks" / c / f"{image_id}.png")) for c in CLASSES])
        assert stacked.shape == (8, 224, 224) and set(np.unique(stacked)) <= {0, 1}
        labels = {lab for _, lab in rows.get(f"{image_id}.png", [])}
        assert {c for c in range(8) if stacked[c].any()} == labels
        overlap_seen |= bool((stacked.sum(axis=0) > 1).any())
    assert overlap_seen  # boxes of different findings overlap: one class-index mask could not hold them
    coco = COCO(str(out / "annotations" / "train.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    for ann in coco.anns.values():
        image_id = coco.imgs[ann["image_id"]]["image_id"]
        labels = [lab for _, lab in rows[f"{image_id}.png"]]
        assert ann["category_id"] - 1 in labels
        box = next(b for b, lab in rows[f"{image_id}.png"] if lab == ann["category_id"] - 1)
        assert np.allclose(ann["bbox"], np.array(box) * 224 / 96, atol=2e-3)
