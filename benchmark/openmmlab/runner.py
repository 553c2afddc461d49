"""Train a head with mmengine's Runner, validate every epoch, test the best-validation checkpoint."""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass, field

from mmengine.config import ConfigDict
from mmengine.dist import barrier
from mmengine.logging import MMLogger
from mmengine.runner import Runner

from benchmark.openmmlab.feature_cache import FeatureCacheHook
from benchmark.openmmlab.hooks import HistoryHook


@dataclass
class RunOutcome:
    """What one training run produced (metrics without their ``det/`` / ``seg/`` prefixes)."""

    val: dict[str, float]
    test: dict[str, float]
    best_epoch: int | None
    epochs_run: int
    iterations: int
    checkpoint: str | None  # the checkpoint the test metrics come from (None: the untrained model)
    history: list[dict] = field(default_factory=list)
    log_file: str | None = None
    feature_cache: dict | None = None  # what the feature cache did (None: not used)


def _strip(metrics: dict) -> dict[str, float]:
    return {k.split("/", 1)[-1]: float(v) for k, v in metrics.items()}


def _history_hook(runner: Runner) -> HistoryHook:
    return next(h for h in runner.hooks if isinstance(h, HistoryHook))


def _freeze_config_text(runner: Runner) -> None:
    """Format the config once: mmengine re-formats it (yapf) into every checkpoint it saves, two per
    epoch here, which costs more than a whole epoch of a head trained on cached features."""
    cfg = runner.cfg
    text = cfg.pretty_text
    frozen = type("FrozenTextConfig", (type(cfg),), {"pretty_text": property(lambda self: text)})
    object.__setattr__(cfg, "__class__", frozen)


def train_and_test(cfg: ConfigDict, monitor: str) -> RunOutcome:
    """Run training (``cfg.train_cfg.max_epochs`` may be 0: test the untrained head) and the test.

    Args:
        cfg: a config from :func:`benchmark.openmmlab.config.build_config`.
        monitor: the validation metric that picks the best checkpoint (e.g. ``seg/dice``).
    """
    max_epochs = cfg.train_cfg.max_epochs
    if max_epochs == 0:
        cfg = cfg.copy()
        cfg.train_cfg.max_epochs = 1  # the loop needs >= 1 to be built; it is never run
    runner = Runner.from_cfg(cfg)
    _freeze_config_text(runner)
    logger = MMLogger.get_current_instance()
    try:
        history = _history_hook(runner)
        best_ckpt = None
        if max_epochs > 0:
            runner.train()
            barrier()  # DDP: rank 0 has finished writing the checkpoints before any rank reads one
            best_ckpt = runner.message_hub.get_info("best_ckpt")
            if not best_ckpt or not os.path.exists(best_ckpt):
                # no epoch produced a valid monitored value (e.g. NaN): fall back to the last checkpoint
                last = sorted(glob.glob(os.path.join(cfg.work_dir, "epoch_*.pth")), key=os.path.getmtime)
                best_ckpt = last[-1] if last else None
            if best_ckpt:
                runner.load_checkpoint(best_ckpt)
        test = _strip(runner.test())
        val_epochs = [h for h in history.val_history if monitor in h]
        best = None
        if val_epochs:
            scored = [h for h in val_epochs if h[monitor] == h[monitor]]  # drop NaN
            best = max(scored, key=lambda h: h[monitor]) if scored else val_epochs[-1]
        log_file = next((h.baseFilename for h in logger.handlers if isinstance(h, logging.FileHandler)), None)
        return RunOutcome(
            val=_strip({k: v for k, v in best.items() if "/" in k or k == "loss"}) if best else {},
            test=test,
            best_epoch=best["epoch"] if best else None,
            epochs_run=runner.epoch if max_epochs > 0 else 0,
            iterations=history.iterations,
            checkpoint=best_ckpt,
            history=history.val_history,
            log_file=log_file,
            feature_cache=next((h.report for h in runner.hooks if isinstance(h, FeatureCacheHook)), None),
        )
    finally:
        for h in list(logger.handlers):
            if isinstance(h, logging.FileHandler):
                h.close()
                logger.removeHandler(h)
