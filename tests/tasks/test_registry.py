"""The 18-task registry against the task table of the protocol."""

from __future__ import annotations

import pytest

from tasks.registry import TASKS, YOLO_ANCHORS, get_task, select_tasks


def test_eighteen_tasks_in_table_order():
    assert [t.number for t in TASKS.values()] == list(range(1, 19))
    assert len({t.id for t in TASKS.values()}) == 18


@pytest.mark.parametrize("task", list(TASKS.values()), ids=list(TASKS))
def test_task_fields_consistent(task):
    assert task.kind == ("detection" if task.head == "yolov3" else "segmentation")
    assert task.frozen == (task.warmup_steps == 0)
    assert task.lr in task.lr_grid or not task.lr_grid
    assert task.batch_size in (8, 64) and task.label_fraction in (1, 10, 100)
    if task.label_fraction < 100:
        assert task.dataset == "rsna"


def test_published_values():
    t = get_task("rsna_yolov3_frozen_10")
    assert (t.batch_size, t.lr, t.lr_grid, t.max_epochs, t.patience) == (64, 1e-3, (), 100, 10)
    t = get_task("rsna_linear_10")
    assert (t.head, t.metric, t.lr, t.lr_grid) == ("linear", "dice", 3e-2, (3e-2, 1e-2, 3e-3, 1e-3))
    assert get_task("covid_unet_finetune").warmup_steps == 20
    assert get_task("nih_linear").metric == "mean_class_dice"
    assert YOLO_ANCHORS[0][0] == (64.64, 48.6) and YOLO_ANCHORS[2][2] == (17.82, 12.42)


def test_select_tasks():
    assert len(select_tasks("all")) == 18
    assert [t.id for t in select_tasks("rsna_linear_10,rsna_linear_10")] == ["rsna_linear_10"]
    assert len(select_tasks("rsna")) == 9
    assert [t.id for t in select_tasks("covid")] == [
        "covid_unet_finetune",
        "covid_unet_frozen",
        "covid_linear",
    ]
    assert {t.id for t in select_tasks("rsna_yolov3")} == {
        f"rsna_yolov3_{m}_{p}" for m in ("finetune", "frozen") for p in (1, 10, 100)
    }
    assert [t.id for t in select_tasks("rsna_linear_1")] == ["rsna_linear_1"]  # an exact id is not a prefix
    with pytest.raises(
        KeyError, match="unknown task or dataset 'rsna_yolo'"
    ):  # prefixes end at an underscore
        select_tasks("rsna_yolo")
    with pytest.raises(KeyError, match="unknown task or dataset 'nope'"):
        select_tasks("nope")
