"""benchmark/runs/config.py: the one run configuration (every option reaches it, resolved once) and the run's
extension point (benchmark.openmmlab.watch_runners)."""

from __future__ import annotations

from dataclasses import fields, replace

from benchmark.backbones import normalization_plan, parse_spec
from benchmark.runs import RunConfig, RunOptions, plan_run, resolve
from tasks.registry import METRIC_KEYS, METRICS, TASKS, get_task


def test_every_run_option_reaches_the_run_config(data_root, tmp_path):
    """A RunOptions field that resolve() does not carry into the RunConfig would be silently lost: each is
    set here to a value other than its default and must come out in the field of the same name (the batch
    size split over the processes)."""
    options = RunOptions(
        max_epochs=3,
        batch_size=4,
        device="cuda",
        num_workers=2,
        amp=True,
        train_limit=5,
        keep_checkpoints=True,
        verbose=True,
        progress=False,
        feature_cache=str(tmp_path / "fc"),
        feature_cache_dtype="float32",
        launcher="pytorch",
        unet_widths=(5, 4, 3, 2, 1),
        train_loss="lovt",
    )
    default = RunOptions()
    assert all(getattr(options, f.name) != getattr(default, f.name) for f in fields(RunOptions))
    task = replace(get_task("rsna_linear_100"), head="unet")
    run = plan_run(task, parse_spec("resnet18.random"), data_root, tmp_path, 0, None, options)
    config = resolve(run, tmp_path, options, "x", world_size=2)
    assert isinstance(config, RunConfig)
    for f in fields(RunOptions):
        if f.name != "batch_size":
            assert getattr(config, f.name) == getattr(options, f.name), f.name
    assert (config.batch_size, config.world_size, config.n_train) == (2, 2, 5)  # 4 over 2 processes
    assert config.pin_memory and config.experiment_name == "x" and config.notes == ()
    assert config.overrides == {
        "max_epochs": 3,
        "batch_size": 4,
        "train_limit": 5,
        "unet_widths": [5, 4, 3, 2, 1],
        "train_loss": "lovt",
    }
    # the normalization the record and the mmengine config both read, computed once with the config
    plan = normalization_plan(run.backbone, config.mean, config.std, "prepared train statistics")
    assert config.normalization == plan


def test_every_task_metric_has_its_record_and_monitor_keys():
    assert set(METRIC_KEYS) == set(METRICS) >= {t.metric for t in TASKS.values()}
    for keys in METRIC_KEYS.values():
        assert keys.monitor.split("/", 1)[1] == keys.record  # mmengine's "det/mAP" is the record's "mAP"


def test_watch_runners_sees_the_runners_train_and_test_builds(data_root, tmp_path):
    """The run's extension point: a callback sees each Runner built inside the block, none after it."""
    from benchmark import openmmlab

    options = RunOptions(max_epochs=0, progress=False)
    task = get_task("rsna_linear_100")
    run = plan_run(task, parse_spec("resnet18.random"), data_root, tmp_path, 0, None, options)
    monitor = METRIC_KEYS[run.task.metric].monitor
    seen = []
    watched = openmmlab.build_config(task, resolve(run, tmp_path, options, "in"))
    with openmmlab.watch_runners(seen.append):
        outcome = openmmlab.train_and_test(watched, monitor)
    assert [r.cfg.experiment_name for r in seen] == ["in"] and "dice" in outcome.test
    openmmlab.train_and_test(openmmlab.build_config(task, resolve(run, tmp_path, options, "out")), monitor)
    assert len(seen) == 1
