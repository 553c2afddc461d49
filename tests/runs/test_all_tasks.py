"""Every task of the registry, 1-2 training iterations on fake data, through the code path of `evaluate`."""

from __future__ import annotations

import math

import pytest

from benchmark.runs import RunOptions, evaluate
from tasks.datasets import get_dataset
from tasks.registry import TASKS

pytestmark = pytest.mark.slow

NIH_CLASSES = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltrate",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)


@pytest.mark.parametrize("task", list(TASKS.values()), ids=list(TASKS))
def test_task_runs_and_records(task, prepared_all, tmp_path):
    options = RunOptions(max_epochs=1, batch_size=2, train_limit=4, progress=False)  # 1-2 iterations
    (record,) = evaluate(
        "resnet18.random",
        [task],
        prepared_all,
        tmp_path,
        seeds=[0],
        options=options,
        lr_search=False,
        echo=lambda *a: None,
    )
    assert record["status"] == "ok", record.get("traceback")
    assert record["task"] == task.id and record["phase"] == "final" and record["lr"] == task.lr
    assert 1 <= record["iterations"] <= 2 and record["epochs_run"] == 1
    assert record["overrides"]["train_limit"] == 4
    assert record["backbone"]["arch"] == "resnet18" and record["split_hash"]
    test = record["metrics"]["test"]
    primary = {"mAP": "mAP", "froc": "froc", "dice": "dice", "mean_class_dice": "dice"}[task.metric]
    assert record["primary_metric"] == primary and record["test_score"] == test[primary]
    assert math.isfinite(test[primary]) and 0 <= test[primary] <= 1
    assert math.isfinite(record["metrics"]["val"]["loss"])
    if task.metric == "froc":
        keys = {"froc", "froc_all_predictions", "froc_shape", "froc@0.125", "froc_shape@8", "mAP_coco"}
        assert keys <= set(test)
    if task.head == "yolov3":
        assert {"mAP", "mAP_50", "mAP_75", "mAP_coco", "mAP_coco_50", "mAP_coco_75"} <= set(test)
    if task.dataset == "nih":
        assert get_dataset("nih").classes == NIH_CLASSES
        assert {f"dice.{c}" for c in NIH_CLASSES} <= set(test)  # one value per finding
        assert 0 <= test["dice_present_classes"] <= 1
    if task.kind == "segmentation":
        assert 0 <= test["dice_per_image"] <= 1
