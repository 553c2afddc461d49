"""Object-CXR: the annotation grammar read exactly (boxes (x, y, w, h), true ellipse and polygon fills),
folders and zips, the 80/20 + dev split, and COCO annotations carrying each object's true shape."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tasks.datasets.object_cxr import ObjectCXR, parse_annotation
from tasks.image import Geometry
from tasks.prepare import prepare
from tasks.rasterize import shape_to_mask


def csv_rows(root, part="train") -> dict[str, str]:
    with open(root / f"{part}.csv") as f:
        reader = csv.reader(f)
        assert next(reader) == ["image_name", "annotation"]
        return {name[:-4]: ann for name, ann in reader}


def expected_boxes(annotation: str) -> list[list[float]]:
    """Independent reading of the grammar: (x1, y1, x2 - x1, y2 - y1); polygons by their extremes."""
    out = []
    for obj in filter(None, annotation.split(";")):
        kind, *v = (int(t) for t in obj.split())
        xs, ys = v[0::2], v[1::2]
        out.append([min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)])
    return out


def test_grammar():
    shapes = parse_annotation("0 10 10 20 30;1 40 40 50 50;2 60 60 70 60 60 70")
    assert [s["kind"] for s in shapes] == ["rectangle", "ellipse", "polygon"]
    assert shapes[2]["points"] == [[60, 60], [70, 60], [60, 70]]
    assert parse_annotation("") == []
    for bad, msg in [
        ("3 1 2 3 4", "type must be 0, 1 or 2"),
        ("0 1 2 3", "needs x1 y1 x2 y2"),
        ("2 1 2 3 4", "at least 3"),
        ("1 a 2 3 4", "numbers"),
        ("0 5 5 5 9", "zero width"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_annotation(bad)


def test_parse_counts_and_boxes_equal_csv(fake_object_cxr):
    result = ObjectCXR(fake_object_cxr).parse()
    assert not result.failures
    train, dev = csv_rows(fake_object_cxr, "train"), csv_rows(fake_object_cxr, "dev")
    assert result.counts["train_images"] == len(train) == 30 and result.counts["dev_images"] == len(dev) == 10
    assert result.counts["train_positive_images"] == sum(bool(a) for a in train.values())
    kinds = {k: result.counts[f"{k}s"] for k in ("rectangle", "ellipse", "polygon")}
    assert all(v > 0 for v in kinds.values())
    rows = {**train, **dev}
    for s in result.samples.to_dict("records"):
        assert s["boxes"] == expected_boxes(rows[s["image_id"]])
        assert s["labels"] == [0] * len(s["boxes"]) and s["patient_id"] == s["image_id"]


def test_mask_fills_true_shapes_hand_computed(fake_object_cxr, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(fake_object_cxr, raw)
    text = (raw / "train.csv").read_text().splitlines()
    name = text[2].split(",")[0]  # an image without objects
    # rectangle 10 x 20 = 200 px; circle inscribed in 10 x 10 = 80 px; triangle with legs 10 = 45 px
    text[2] = f"{name},0 10 10 20 30;1 40 40 50 50;2 60 60 70 60 60 70"
    (raw / "train.csv").write_text("\n".join(text) + "\n")
    ds = ObjectCXR(raw)
    s = next(r for r in ds.parse().samples.to_dict("records") if r["image_id"] == name[:-4])
    assert s["boxes"] == [[10, 10, 10, 20], [40, 40, 10, 10], [60, 60, 10, 10]]
    h, w = np.asarray(Image.open(raw / "train" / name)).shape
    mask = ds.load_mask(s, h, w)
    assert mask.sum() == 200 + 80 + 45
    assert mask[10:30, 10:20].all() and not mask[40, 40] and mask[45, 45]
    assert mask[60, 60:69].all() and not mask[69, 61]  # the triangle, not its transpose or its box


def test_folders_and_zips_prepare_identically(fake_object_cxr, prepared_all, tmp_path):
    from tasks.fakes import make_fake_object_cxr

    zipped = make_fake_object_cxr(tmp_path / "zipped", n_patients=30, seed=0, n_dev=10, as_zip=True)
    assert (zipped / "train.zip").is_file() and not (zipped / "train").exists()
    report = prepare("object_cxr", zipped, tmp_path / "out", workers=2, progress=False)
    assert not report.failures
    a, b = prepared_all / "object_cxr", tmp_path / "out" / "object_cxr"
    for sub in ("images", "masks"):
        names = sorted(p.name for p in (a / sub).iterdir())
        assert names == sorted(p.name for p in (b / sub).iterdir())
        for n in names[:12]:
            assert (np.asarray(Image.open(a / sub / n)) == np.asarray(Image.open(b / sub / n))).all()
    assert json.loads((a / "annotations" / "test.json").read_text()) == json.loads(
        (b / "annotations" / "test.json").read_text()
    )


def test_split_80_20_and_dev_is_test(prepared_all, fake_object_cxr):
    table = list(csv.DictReader(open(prepared_all / "object_cxr" / "splits.csv")))
    split = {r["image_id"]: r["split"] for r in table}
    dev, train = csv_rows(fake_object_cxr, "dev"), csv_rows(fake_object_cxr, "train")
    assert {i for i, s in split.items() if s == "test"} == set(dev)
    assert sum(split[i] == "train" for i in train) == 24 and sum(split[i] == "val" for i in train) == 6


def test_coco_carries_true_shapes(prepared_all, fake_object_cxr):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    ds = ObjectCXR(fake_object_cxr)
    samples = {s["image_id"]: s for s in ds.parse().samples.to_dict("records")}
    out = prepared_all / "object_cxr"
    seen = set()
    for subset in ("train", "val", "test"):
        coco = COCO(str(out / "annotations" / f"{subset}.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["foreign_object"]
        for img in coco.imgs.values():
            s = samples[img["image_id"]]
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
            assert len(anns) == len(s["boxes"])
            union = np.zeros((224, 224), np.uint8)
            h, w = np.asarray(Image.open(s["file"])).shape
            g = Geometry(h, w, 224)
            for ann, shape, box in zip(anns, s["mask_source"]["shapes"], s["boxes"]):
                seen.add(ann["shape"])
                assert ann["shape"] == shape["kind"]
                x, y, bw, bh = box
                want = [(x + g.left) * g.scale, (y + g.top) * g.scale, bw * g.scale, bh * g.scale]
                assert np.allclose(ann["bbox"], want, atol=2e-3)  # the shape's box, scaled
                m = coco.annToMask(ann)
                assert (m == mask_utils.decode(ann["segmentation"])).all()
                exact = shape_to_mask(
                    shape["kind"], shape["points"], 224, 224, transform=(g.scale, g.left, g.top)
                )
                assert (m == exact).all() and ann["area"] == m.sum()
                union |= m
                if shape["kind"] == "rectangle":
                    assert m.sum() >= 0.8 * bw * bh * g.scale**2
                else:  # ellipses and polygons are not their bounding boxes
                    assert m.sum() < bw * bh * g.scale**2
            mask = np.asarray(Image.open(out / "masks" / f"{img['image_id']}.png"))
            assert (mask == union).all()  # the class-index mask is the union of the shapes
    assert seen == {"rectangle", "ellipse", "polygon"}
