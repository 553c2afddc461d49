"""Bring-your-own tasks: a task file over COCO files or an image/mask folder, prepared and evaluated like
the built-in tasks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from tasks.custom import TaskFileError, load_task_file, resolve_tasks
from tasks.fakes.common import add_blob, chest_background, to_uint
from tests.support.records import read_records


def make_images(root, n, seed=0, size=96):
    """n grey PNGs with 0-2 blobs each; returns {stem: [(x, y, w, h), ...]}."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    boxes = {}
    for i in range(n):
        img = chest_background(rng, size, size + 16)  # not square: padding is exercised
        bb = []
        for _ in range(i % 3):
            w, h = (int(v) for v in rng.integers(16, 32, 2))
            x, y = int(rng.integers(0, size + 16 - w)), int(rng.integers(0, size - h))
            add_blob(img, x, y, w, h)
            bb.append((x, y, w, h))
        Image.fromarray(to_uint(img)).save(root / "images" / f"img{i:03d}.png")
        boxes[f"img{i:03d}"] = bb
    return boxes


@pytest.fixture(scope="module")
def coco_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_task")
    boxes = make_images(root, 24)
    stems = sorted(boxes)
    for split, chosen in (("train", stems[:14]), ("val", stems[14:19]), ("test", stems[19:])):
        images, anns = [], []
        for n, stem in enumerate(chosen, 1):
            images.append({"id": n, "file_name": f"{stem}.png", "width": 112, "height": 96})
            for b in boxes[stem]:
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": n,
                        "category_id": 7,
                        "bbox": list(b),
                        "area": b[2] * b[3],
                        "iscrowd": 0,
                    }
                )
        (root / f"{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": [{"id": 7, "name": "lesion"}]})
        )
    (root / "task.toml").write_text(
        'id = "lesions"\nhead = "yolov3"\nfrozen = true\nlr = 1e-3\nlr_grid = [1e-3, 3e-4]\nbatch_size = 4\n'
        'max_epochs = 1\npatience = 5\n\n[data]\nformat = "coco"\nimages = "images"\n'
        'train = "train.json"\nval = "val.json"\ntest = "test.json"\n'
    )
    return root, boxes


@pytest.fixture(scope="module")
def mask_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("mask_task")
    boxes = make_images(root, 20, seed=1)
    (root / "masks").mkdir()
    for stem, bb in boxes.items():
        m = np.zeros((96, 112), np.uint8)
        for k, (x, y, w, h) in enumerate(bb):
            m[y : y + h, x : x + w] = k + 1  # two classes: first and second blob
        Image.fromarray(m).save(root / "masks" / f"{stem}.png")
    lines = ["image_id,split,patient_id"] + [
        f"{s},{'train' if i < 12 else 'val' if i < 16 else 'test'},p{i // 2}"
        for i, s in enumerate(sorted(boxes))
    ]
    (root / "splits.csv").write_text("\n".join(lines) + "\n")
    (root / "task.yaml").write_text(
        "id: blobs\nhead: linear\nlr: 0.01\nbatch_size: 4\nmax_epochs: 1\n"
        "data:\n  format: masks\n  images: images\n  masks: masks\n  classes: [first, second]\n  splits: splits.csv\n  equalize: true\n"
    )
    return root, boxes


def test_coco_task_file_parsed(coco_task):
    root, boxes = coco_task
    task = load_task_file(root / "task.toml")
    assert task.spec.id == "lesions" and task.spec.dataset == "lesions" and task.spec.head == "yolov3"
    assert task.spec.metric == "mAP" and task.spec.lr_grid == (1e-3, 3e-4) and task.spec.frozen
    parsed = task.dataset.parse()
    assert not parsed.failures and len(parsed.samples) == 24
    for row in parsed.samples.itertuples():
        assert [tuple(b) for b in row.boxes] == boxes[row.image_id] and set(row.labels) <= {0}
    table, scheme = task.dataset.split(parsed.samples)
    assert (table["split"] == "test").sum() == 5 and "task.toml" in scheme


def test_evaluate_a_coco_task_file(coco_task, tmp_path, cli):
    root, _ = coco_task
    out, data = tmp_path / "out", tmp_path / "data"
    argv = [
        "evaluate",
        "--backbone",
        "resnet18.random",
        "--tasks",
        f"rsna_linear_10,{root / 'task.toml'}",
        "--data",
        str(data),
        "--out",
        str(out),
        "--seeds",
        "1",
        "--no-lr-search",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--quiet",
    ]
    # the built-in task's data is missing: a clear error before any run starts
    assert cli(*argv).code == 2
    argv[4] = str(root / "task.toml")
    assert cli(*argv).code == 0
    (rec,) = read_records(out)
    assert rec["task"] == "lesions" and rec["status"] == "ok" and rec["task_spec"]["head"] == "yolov3"
    assert math.isfinite(rec["test_score"]) and rec["dataset"]["subsets"] == {
        "train": 14,
        "val": 5,
        "test": 5,
    }
    manifest = json.loads((data / "lesions" / "manifest.json").read_text())
    assert manifest["classes"] == ["lesion"] and manifest["split_scheme"] == "given by task.toml"
    coco = json.loads((data / "lesions" / "annotations" / "test.json").read_text())
    assert {a["category_id"] for a in coco["annotations"]} == {1}


def test_masks_task_file_multiclass(mask_task, tmp_path, cli):
    root, boxes = mask_task
    task = load_task_file(root / "task.yaml")
    assert task.spec.head == "linear" and task.spec.metric == "dice" and task.dataset.multi_label
    data, out = tmp_path / "data", tmp_path / "out"
    assert cli("prepare", root / "task.yaml", "--out", data, "--quiet").code == 0
    for c in ("first", "second"):
        assert len(list((data / "blobs" / "masks" / c).glob("*.png"))) == 20
    stem = next(s for s, b in boxes.items() if len(b) == 2)
    first = np.asarray(Image.open(data / "blobs" / "masks" / "first" / f"{stem}.png"))
    assert set(np.unique(first)) == {0, 1}
    table = (data / "blobs" / "splits.csv").read_text()
    assert table.count(",train,") == 12
    argv = ["evaluate", "--backbone", "resnet18.random", "--tasks", root / "task.yaml", "--data", data]
    assert cli(*argv, "--out", out, "--seeds", "1", "--device", "cpu", "--quiet", "--no-lr-search").code == 0
    (rec,) = read_records(out)
    assert rec["status"] == "ok" and {"dice.first", "dice.second"} <= set(rec["metrics"]["test"])


@pytest.mark.parametrize(
    "text, message",
    [
        (
            'id = "x"\nhead = "yolov3"\nlr = 1e-3\ncolour = 1\n[data]\nformat = "coco"\nimages = "i"\ntrain = "a"\nval = "b"\ntest = "c"\n',
            "unknown field.*colour",
        ),
        ('id = "x"\nhead = "yolov3"\nlr = 1e-3\n', r"missing the \[data\] section"),
        ('id = "x"\nhead = "yolov3"\n[data]\nformat = "coco"\n', "missing field 'lr'"),
        (
            'id = "x"\nhead = "unet"\nlr = 1e-3\nmetric = "mAP"\n[data]\nformat = "masks"\nimages = "i"\nmasks = "m"\nclasses = ["a"]\n',
            "does not fit head",
        ),
        ('id = "x"\nhead = "yolov3"\nlr = 1e-3\n[data]\nformat = "masks"\nimages = "i"\n', "needs boxes"),
        ('id = "rsna"\nhead = "linear"\nlr = 1e-3\n[data]\nformat = "masks"\nimages = "i"\n', "built-in"),
        (
            'id = "x"\nhead = "linear"\nlr = 1e-3\n[data]\nformat = "masks"\nimages = "i"\nmasks = "m"\n',
            "needs 'classes'",
        ),
        (
            'id = "x"\nhead = "linear"\nlr = 1e-3\nfrozen = true\nwarmup_steps = 5\n[data]\nformat = "masks"\nimages = "i"\nmasks = "m"\nclasses = ["a"]\n',
            "frozen task has no warm-up",
        ),
        ('id = "x"\nhead = "linear"\nlr = 1e-3\n[data\n', "not valid TOML"),
    ],
)
def test_task_file_errors_name_file_and_field(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TaskFileError, match=message) as e:
        load_task_file(path)
    assert str(path) in str(e.value)


def test_missing_images_reported(coco_task, tmp_path):
    import shutil

    root, _ = coco_task
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / "images" / "img020.png").unlink()
    task = load_task_file(copy / "task.toml")
    failures = task.dataset.parse().failures
    assert len(failures) == 1 and "img020.png" in str(failures[0]) and "file_name" in str(failures[0])


def test_resolve_mixes_builtin_and_files(coco_task):
    root, _ = coco_task
    specs, custom = resolve_tasks(f"rsna_linear_10,{root / 'task.toml'},rsna_linear_1")
    assert [s.id for s in specs] == ["rsna_linear_10", "lesions", "rsna_linear_1"] and len(custom) == 1
