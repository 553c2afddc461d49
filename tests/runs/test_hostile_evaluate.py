"""Hostile and broken inputs to ``evaluate`` and task files (issue 14): prepared folders say who wrote
them, task files are checked against a schema, diverged runs fail, a corrupt stats.json fails its runs
only, and two plain ``evaluate`` commands on one output folder never train the same run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmark.runs import RunOptions, check_dataset_prepared, evaluate
from tasks.custom import TaskFileError, load_task_file
from tasks.errors import DatasetError
from tasks.prepare import prepare
from tasks.registry import get_task
from tests.support.records import record_files, records_by_key

REPO = Path(__file__).resolve().parents[2]
TASK = get_task("rsna_linear_10")
BASE = 'id = "mine"\nhead = "linear"\nlr = 1e-3\n'
DATA = '\n[data]\nformat = "masks"\nimages = "images"\nmasks = "masks"\nclasses = ["a"]\n'


# --- task files: a schema with types and ranges ---------------------------------------------------------


@pytest.mark.parametrize(
    "line, field, says",
    [
        ('frozen = "false"', "frozen", "true or false"),
        ("frozen = 0", "frozen", "true or false"),
        ('lr = "abc"', "lr", "a number > 0"),
        ("lr = nan", "lr", "a finite number"),
        ("lr = inf", "lr", "a finite number"),
        ("lr = -1e-3", "lr", "a finite number > 0"),
        ("lr_grid = 5", "lr_grid", "a list of learning rates"),
        ('lr_grid = [1e-3, "x"]', "lr_grid", "item 2 is 'x'"),
        ('batch_size = "four"', "batch_size", "an integer from 1 to 4096"),
        ("batch_size = 0", "batch_size", "from 1 to 4096"),
        ("batch_size = true", "batch_size", "an integer"),
        ("size = 64.0", "size", "an integer from 32 to 2048"),
        ("size = 1e9", "size", "an integer from 32 to 2048"),
        ("size = 1000000000", "size", "from 32 to 2048"),
        ("size = 100", "size", "a multiple of 32"),
        ("max_epochs = -1", "max_epochs", "from 0 to"),
        ("plateau_factor = 2.0", "plateau_factor", "<= 1"),
        ("description = 5", "description", "a string"),
        ('head = ["linear"]', "head", "one of yolov3, unet, linear"),
    ],
)
def test_task_file_field_of_wrong_type_or_range(line, field, says, tmp_path):
    key = line.split(" = ")[0]
    base = "".join(x + "\n" for x in BASE.splitlines() if not x.startswith(key + " "))
    path = tmp_path / "t.toml"
    path.write_text(base + line + "\n" + DATA)
    with pytest.raises(TaskFileError) as e:
        load_task_file(path)
    assert str(e.value).startswith(f"{path}: {field} must be ") and says in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "line, field, says",
    [
        ('equalize = "no"', "equalize", "true or false"),
        ("classes = []", "classes", "a non-empty list of class names"),
        ("classes = [1, 2]", "classes", "item 1 is 1"),
        ("images = 3", "images", "a non-empty string"),
        ('format = "png"', "format", "one of coco, masks"),
    ],
)
def test_task_file_data_field_of_wrong_type(line, field, says, tmp_path):
    key = line.split(" = ")[0]
    data = "".join(x + "\n" for x in DATA.splitlines() if not x.startswith(key + " "))
    path = tmp_path / "t.toml"
    path.write_text(BASE + data + line + "\n")
    with pytest.raises(TaskFileError) as e:
        load_task_file(path)
    assert str(e.value).startswith(f"{path}: [data] {field} must be ") and says in str(e.value), str(e.value)


def test_yaml_strings_are_not_booleans(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text('id: mine\nhead: linear\nlr: 0.001\nfrozen: "false"\ndata:\n  format: masks\n')
    with pytest.raises(TaskFileError, match="frozen must be true or false"):
        load_task_file(path)


@pytest.mark.parametrize("task_id", ["covid_rural-64px", "rsna-448px", "mine-96px"])
def test_task_id_shaped_like_a_prepared_folder_is_refused(task_id, tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(BASE.replace('"mine"', f'"{task_id}"') + DATA)
    with pytest.raises(TaskFileError, match="ends like a prepared folder of another size"):
        load_task_file(path)


# --- prepared folders say which dataset, size and source wrote them -------------------------------------


def test_manifest_records_its_writer_and_runs_refuse_a_mismatch(data_root, tmp_path):
    manifest = json.loads((data_root / "rsna" / "manifest.json").read_text())
    assert manifest["dataset"] == "rsna" and manifest["size"] == 224
    assert manifest["source"] == {"kind": "built-in"}
    root = tmp_path / "data"
    shutil.copytree(data_root / "rsna", root / "rsna")
    check_dataset_prepared(root, TASK)  # as written
    m = json.loads((root / "rsna" / "manifest.json").read_text())
    for change in ({"source": {"kind": "task file", "task_file": "/x/t.toml"}}, {"size": 64}, {"dataset": "x"}):
        (root / "rsna" / "manifest.json").write_text(json.dumps({**m, **change}))
        with pytest.raises(DatasetError) as e:
            check_dataset_prepared(root, TASK)
        assert str(e.value).startswith(f"{root / 'rsna' / 'manifest.json'}: this prepared folder holds ")
        assert "written by something else" in str(e.value)
    (root / "rsna" / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="manifest.json: not a readable manifest"):
        check_dataset_prepared(root, TASK)


def test_prepare_never_overwrites_a_folder_another_writer_made(fake_rsna, tmp_path):
    from tasks.datasets.rsna import RSNA

    class Impostor(RSNA):
        def source(self):
            return {"kind": "task file", "task_file": "/somewhere/else.toml"}

    prepare("rsna", fake_rsna, tmp_path, size=64, progress=False)
    before = sorted(p.name for p in (tmp_path / "rsna-64px" / "images").iterdir())
    with pytest.raises(DatasetError, match="rsna-64px/manifest.json: this prepared folder holds source"):
        prepare(Impostor(fake_rsna), None, tmp_path, size=64, progress=False)
    assert sorted(p.name for p in (tmp_path / "rsna-64px" / "images").iterdir()) == before


# --- arguments ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value, says",
    [
        ("--lr", "inf", "expected a finite number, got 'inf'"),
        ("--lr", "nan", "expected a finite number"),
        ("--lr", "0", "must be > 0"),
        ("--lr", "abc", "expected a number, got 'abc'"),
        ("--batch-size", "0", "must be >= 1, got 0"),
        ("--max-epochs", "-1", "must be >= 0, got -1"),
        ("--seeds", "0", "must be >= 1"),
        ("--size", "100000", "must be <= 2048"),
        ("--train-limit", "0", "must be >= 1"),
    ],
)
def test_bad_numbers_are_rejected_at_argument_parsing(option, value, says, tmp_path, capsys, cli):
    argv = ["evaluate", "--backbone", "resnet18.random", "--tasks", "rsna_linear_10", "--data", str(tmp_path)]
    with pytest.raises(SystemExit) as e:
        cli(*argv, "--out", tmp_path / "o", option, value)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {says}" in err, err


# --- corrupt stats.json: a failed record naming the file, the sweep goes on ------------------------------


@pytest.mark.parametrize("text", ["{broken", '{"train": {"mean": "x", "std": 0.2, "n_images": 3}}', "[]"])
def test_corrupt_stats_json_fails_its_runs_and_the_sweep_goes_on(text, data_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data_root / "rsna", root / "rsna")
    (root / "rsna" / "stats.json").write_text(text)
    records = evaluate(
        "resnet18.random",
        [TASK],
        root,
        tmp_path / "out",
        seeds=[0, 1],
        lr=0.01,
        options=RunOptions(max_epochs=1, batch_size=2, progress=False),
        echo=lambda *a: None,
    )
    assert [r["status"] for r in records] == ["failed", "failed"]  # both runs attempted and recorded
    for r in records:
        assert r["reason"].startswith(f"DatasetError: {root / 'rsna' / 'stats.json'}: "), r["reason"]
        assert r["key"] in records_by_key(tmp_path / "out")


# --- a NaN validation loss after the last training step --------------------------------------------------


@pytest.mark.slow
def test_nan_validation_loss_after_the_last_step_is_failed(data_root, tmp_path, monkeypatch):
    import torch

    from benchmark.openmmlab.hooks import LossGuardHook

    real = LossGuardHook.after_train_iter

    def poison_after_last_step(self, runner, batch_idx, data_batch=None, outputs=None):
        real(self, runner, batch_idx, data_batch, outputs)  # the last step's loss is finite: it passes
        if runner.iter + 1 == runner.max_iters:
            with torch.no_grad():
                for p in runner.model.parameters():
                    p.fill_(float("nan"))

    monkeypatch.setattr(LossGuardHook, "after_train_iter", poison_after_last_step)
    (record,) = evaluate(
        "resnet18.random",
        [TASK],
        data_root,
        tmp_path,
        seeds=[0],
        lr=0.01,
        options=RunOptions(max_epochs=1, batch_size=2, train_limit=4, progress=False),
        echo=lambda *a: None,
    )
    assert record["status"] == "failed", record.get("reason")
    assert record["reason"].startswith("NonFiniteValidationLossError: validation loss is nan at epoch 1")


# --- two plain evaluate commands on one output folder ----------------------------------------------------


@pytest.mark.slow
def test_two_plain_evaluates_never_train_the_same_run(data_root, tmp_path, cli):
    out = tmp_path / "out"
    argv = cli.argv(
        "evaluate", "--backbone", "resnet18.random",
        "--tasks", "rsna_linear_10", "--data", str(data_root), "--out", str(out), "--seeds", "2",
        "--lr", "0.01", "--max-epochs", "1", "--batch-size", "2", "--train-limit", "4", "--device", "cpu",
        "--no-feature-cache", "--loader-workers", "0",
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for _ in range(2)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    records = record_files(out)
    assert len(records) == 2
    # every run trained once: one work folder each, holding the logs of exactly one training
    for rec in records:
        key = rec.stem
        trainings = [d for d in (out / "work").glob(f"*/*/{key}/*") if d.is_dir()]
        assert len(trainings) == 1, (key, trainings, logs)
    text = "\n".join(logs)
    assert text.count("already recorded") + text.count("waiting for its record") >= 2, logs
    assert not list((out / "claims").glob("*.claim"))  # released


def test_manifests_from_before_sources_were_recorded(tmp_path):
    from tasks.prepare import check_manifest

    old_builtin = {"dataset": "rsna", "size": 224}
    old_custom = {"dataset": "lesions", "size": 224}
    check_manifest(old_builtin, tmp_path, "rsna", 224)  # a run on it
    check_manifest(old_builtin, tmp_path, "rsna", 224, {"kind": "built-in"})  # prepare resuming it
    check_manifest(old_custom, tmp_path, "lesions", 224)
    check_manifest(old_custom, tmp_path, "lesions", 224, {"kind": "task file", "task_file": "/t.toml"})
    with pytest.raises(DatasetError, match="source"):
        check_manifest(old_builtin, tmp_path, "rsna", 224, {"kind": "task file", "task_file": "/t.toml"})
    new = {"dataset": "lesions", "size": 224, "source": {"kind": "task file", "task_file": "/a.toml"}}
    check_manifest(new, tmp_path, "lesions", 224)  # a run: the kind is what matters
    with pytest.raises(DatasetError, match="source"):  # another task file with the same id
        check_manifest(new, tmp_path, "lesions", 224, {"kind": "task file", "task_file": "/b.toml"})


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    import time

    lines = ["description:", '  - &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"  - &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"  # 9^9 strings once expanded; the message must not expand it
    path.write_text("\n".join(lines) + "\nid: mine\nhead: linear\nlr: 0.01\ndata:\n  format: masks\n")
    started = time.perf_counter()
    with pytest.raises(TaskFileError, match=r"description must be a string, got \[\[.*\.\.\.") as e:
        load_task_file(path)
    assert len(str(e.value)) < 400
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize("text", ["0 1_0 10 40 40", "0 ١ 10 40 40", "１ 10 10 40 40", "0 nan 10 40 40", "0 10 10 1e400 40"])
def test_object_cxr_numbers_are_plain_decimals(text):
    from tasks.datasets.object_cxr import parse_annotation

    with pytest.raises(ValueError, match="object 1 .*(type must be|coordinates must be)"):
        parse_annotation(text)
