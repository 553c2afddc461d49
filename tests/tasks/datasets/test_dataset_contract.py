"""Every dataset, parametrized over the registry: deterministic patient-level splits independent of file
order, nested label fractions, and the prepared layout the benchmark side relies on."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks.datasets import DATASETS, get_dataset
from tasks.fakes import FAKES
from tasks.prepare import subset_names
from tasks.splits import patient_split, split_hash, subset

NAMES = list(DATASETS)
LABEL_FILES = {
    "rsna": ["stage_2_train_labels.csv"],
    "siim": ["train-rle.csv"],
    "object_cxr": ["train.csv", "dev.csv"],
    "nih": ["BBox_List_2017.csv", "Data_Entry_2017_v2020.csv", "test_list.txt"],
}


def test_registries_agree():
    from benchmark.cli import DATASET_NAMES

    assert set(DATASETS) == set(FAKES) == set(DATASET_NAMES)
    assert NAMES == ["rsna", "covid_rural", "siim", "object_cxr", "nih"]
    assert DATASETS["rsna"].classes == ("opacity",) and DATASETS["siim"].classes == ("pneumothorax",)
    assert DATASETS["object_cxr"].classes == ("foreign_object",) and DATASETS["covid_rural"].classes == (
        "opacity",
    )


@pytest.mark.parametrize("name", NAMES)
def test_split_is_independent_of_file_order(name, fake_raw, tmp_path):
    ds = get_dataset(name)(fake_raw[name])
    samples = ds.parse().samples
    table, scheme = ds.split(samples)
    again, _ = ds.split(samples.sample(frac=1.0, random_state=7).reset_index(drop=True))
    assert table.equals(again) and split_hash(table) == split_hash(again)
    if name in LABEL_FILES:  # the label files themselves listed in another order
        raw = tmp_path / "raw"
        shutil.copytree(fake_raw[name], raw)
        rng = random.Random(3)
        for f in LABEL_FILES[name]:
            lines = (raw / f).read_text().splitlines()
            head, body = (lines[:1], lines[1:]) if f.endswith(".csv") else ([], lines)
            rng.shuffle(body)
            (raw / f).write_text("\n".join(head + body) + "\n")
        shuffled, _ = get_dataset(name)(raw).split(get_dataset(name)(raw).parse().samples)
        assert split_hash(shuffled) == split_hash(table)


@pytest.mark.parametrize("name", NAMES)
def test_no_patient_in_two_splits_and_proportions(name, fake_raw):
    ds = get_dataset(name)(fake_raw[name])
    table, _ = ds.split(ds.parse().samples)
    assert table.groupby("patient_id")["split"].nunique().max() == 1
    n = len(table)
    share = table["split"].value_counts() / n
    want = {"train": 0.6, "val": 0.2, "test": 0.2}
    if name == "object_cxr":  # 80/20 of the official train set, test = dev
        assert set(table.loc[table.split == "test", "image_id"]) == set(
            ds.parse().samples.query("official_split == 'dev'")["image_id"]
        )
    else:
        biggest = table.groupby("patient_id").size().max()
        for s, r in want.items():
            assert abs(share[s] - r) <= biggest / n + 1e-9, (s, share[s])


def test_nested_fractions_and_image_count_cut():
    rng = np.random.default_rng(0)
    patients = [f"p{i}" for i in range(400)]
    rows = [(f"{p}_{k}", p) for p in patients for k in range(int(rng.integers(1, 4)))]
    samples = pd.DataFrame(rows, columns=["image_id", "patient_id"])
    table = patient_split(samples, fractions=(1, 10, 100))
    n_train = (table.split == "train").sum()
    assert abs(n_train - round(0.6 * len(table))) < 3  # cut on images, whole patients
    one, ten, full = (set(subset(table, "train", f)) for f in (1, 10, 100))
    assert one < ten < full and len(full) == n_train
    assert len(one) == round(0.01 * n_train) and len(ten) == round(0.1 * n_train)
    assert not (full & set(subset(table, "val"))) and not (full & set(subset(table, "test")))


@pytest.mark.parametrize("name", NAMES)
def test_prepared_layout_contract(name, prepared_all):
    from pycocotools.coco import COCO

    cls = DATASETS[name]
    out = prepared_all / name
    manifest = json.loads((out / "manifest.json").read_text())
    for key in (
        "dataset",
        "size",
        "classes",
        "multi_label",
        "fractions",
        "counts",
        "expected_counts",
        "differs_from_release",
        "subsets",
        "split_scheme",
        "split_hash",
        "failures",
        "versions",
    ):
        assert key in manifest, key
    assert manifest["dataset"] == name and manifest["classes"] == list(cls.classes)
    assert manifest["multi_label"] == cls.multi_label and manifest["size"] == 224
    names = subset_names(cls.fractions)
    assert set(manifest["subsets"]) == set(names)
    stats = json.loads((out / "stats.json").read_text())
    assert set(stats) == {n for n in names if n.startswith("train")}
    for s in stats.values():
        assert 0 < s["mean"] < 1 and 0 < s["std"] < 1 and s["n_images"] > 0
    table = pd.read_csv(out / "splits.csv", dtype=str)
    for subset_name in names:
        ids = (out / "annotations" / f"{subset_name}.txt").read_text().split()
        assert len(ids) == manifest["subsets"][subset_name] > 0
        coco = COCO(str(out / "annotations" / f"{subset_name}.json"))
        cats = coco.loadCats(coco.getCatIds())
        assert [(c["id"], c["name"]) for c in cats] == [(i + 1, c) for i, c in enumerate(cls.classes)]
        assert [coco.imgs[i]["file_name"] for i in sorted(coco.imgs)] == [f"{i}.png" for i in ids]
        for img in coco.imgs.values():
            assert (img["width"], img["height"]) == (224, 224)
        for ann in coco.anns.values():
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 224 + 1e-6 and y + h <= 224 + 1e-6
        split = subset_name.split("_")[0]
        assert set(ids) <= set(table.loc[table.split == split, "image_id"])
    for image_id in (out / "annotations" / "train.txt").read_text().split()[:5]:
        img = np.asarray(Image.open(out / "images" / f"{image_id}.png"))
        assert img.shape == (224, 224) and img.dtype == np.uint8
        if cls.multi_label:
            for c in cls.classes:
                assert np.asarray(Image.open(out / "masks" / c / f"{image_id}.png")).shape == (224, 224)
        else:
            m = np.asarray(Image.open(out / "masks" / f"{image_id}.png"))
            assert m.shape == (224, 224) and m.max() <= len(cls.classes)
    if name in ("rsna", "object_cxr", "nih"):
        assert json.loads((out / "annotations" / "train.json").read_text())["annotations"]


def has_foreground(sample: dict) -> bool:
    src = sample["mask_source"]
    if sample.get("mask_file"):  # COVID Rural: a mask file
        return bool(np.asarray(Image.open(sample["mask_file"])).any())
    if isinstance(src, dict):  # SIIM RLE rows, Object-CXR shapes
        return bool(src.get("rows") or src.get("shapes"))
    return bool(sample["boxes"])  # RSNA, NIH


@pytest.mark.parametrize("name", NAMES)
def test_default_fakes_give_every_split_something_to_learn(name, tmp_path):
    """The demo's defaults: >= 8 training images with foreground and a few val / test images each."""
    from tasks.fakes import FAKES

    kwargs = {"size": 128} if name in ("rsna", "siim") else {}  # the real 1024 px only costs time here
    ds = get_dataset(name)(FAKES[name](tmp_path / name, seed=0, **kwargs))
    samples = ds.parse().samples
    table, _ = ds.split(samples)
    split = dict(zip(table.image_id, table.split))
    positive = {r["image_id"]: has_foreground(r) for r in samples.to_dict("records")}
    assert sum(positive[i] for i, s in split.items() if s == "train") >= 8
    assert min(sum(s == x for s in split.values()) for x in ("val", "test")) >= 5


@pytest.mark.parametrize("name", NAMES)
def test_normalisation_statistics_as_the_reference_code(name, prepared_all, fake_raw):
    """stats.json holds the mean / std of the training split as the reference code computes them
    (philip-mueller/lovt: each dataset's ``process_image`` takes ``img.mean()`` and ``img.var()`` of the
    [0, 1] image after ``exposure.equalize_hist`` and before any padding or resizing;
    ``processing_utils.compute_detection_dataset_stats`` pools them as mean(means) and
    sqrt(mean(vars) + var(means))). Recomputed here independently, from the raw files, in float64."""
    from skimage import exposure

    ds = get_dataset(name)(fake_raw[name])
    samples = {r["image_id"]: r for r in ds.parse().samples.to_dict("records")}
    out = prepared_all / name
    stats = json.loads((out / "stats.json").read_text())
    for subset_name, s in stats.items():
        ids = (out / "annotations" / f"{subset_name}.txt").read_text().split()
        means, variances = [], []
        for image_id in ids:
            img = ds.load_pixels(samples[image_id]).astype(np.float64)
            if ds.equalize:
                img = exposure.equalize_hist(img)
            means.append(img.mean())
            variances.append(img.var())
        mean = np.mean(means)
        std = np.sqrt(np.mean(variances) + np.var(means))
        assert s["mean"] == pytest.approx(mean, abs=1e-9), subset_name
        assert s["std"] == pytest.approx(std, abs=1e-9), subset_name
        assert s["n_images"] == len(ids)


def test_statistics_ignore_the_padding_of_non_square_images(prepared_all):
    """On non-square images the padded square's statistics (what cxrbench took before) differ from the
    protocol's: the zeros of the padding pull the mean down. Object-CXR's fakes are not square."""
    out = prepared_all / "object_cxr"
    stats = json.loads((out / "stats.json").read_text())["train"]
    ids = (out / "annotations" / "train.txt").read_text().split()
    shapes = {json.loads(line)["image_id"]: json.loads(line) for line in (out / ".prepare_state.jsonl").open()}
    assert any(shapes[i]["height"] != shapes[i]["width"] for i in ids)
    padded = np.concatenate(
        [np.asarray(Image.open(out / "images" / f"{i}.png"), dtype=np.float64).ravel() / 255 for i in ids]
    )
    assert padded.mean() < stats["mean"] - 0.01


def test_statistics_of_an_older_prepare_are_refused(data_root, tmp_path):
    """A stats.json without the definition (written by a cxrbench that took the statistics on the padded
    square) is refused with the file and field named: the run fails with that reason, nothing trains."""
    from benchmark.backbones import parse_spec
    from benchmark.runs import RunOptions, plan_run, resolve
    from tasks.errors import DatasetError
    from tasks.registry import TASKS

    root = tmp_path / "data"
    shutil.copytree(data_root / "rsna", root / "rsna")
    stats = json.loads((root / "rsna" / "stats.json").read_text())
    for s in stats.values():
        del s["definition"]
    (root / "rsna" / "stats.json").write_text(json.dumps(stats))
    run = plan_run(TASKS["rsna_linear_1"], parse_spec("resnet18.random"), root, tmp_path, 0, None, RunOptions())
    with pytest.raises(DatasetError, match=r"stats\.json: train\.definition: .*cxrbench prepare"):
        resolve(run, tmp_path, RunOptions())
