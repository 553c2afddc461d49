"""Train a head with mmengine's Runner, validate every epoch, test the best-validation checkpoint.

``watch_runners`` is the extension point of a run: a callback that sees every Runner ``train_and_test`` builds
(the bench scripts attach their timers and profiles there)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from mmengine.config import Config, ConfigDict
from mmengine.dist import barrier
from mmengine.logging import MMLogger
from mmengine.runner import Runner

from benchmark.openmmlab.feature_cache_hook import FeatureCacheHook
from benchmark.openmmlab.hooks import HistoryHook
from cxrcore.weights import mmengine_path


@dataclass
class RunOutcome:
    """What one training run produced (metrics without their ``det/`` / ``seg/`` prefixes)."""

    val: dict[str, float]
    test: dict[str, float]
    best_epoch: int | None
    epochs_run: int
    iterations: int
    checkpoint: str | None  # the checkpoint the test metrics come from (None: the model as training left it)
    history: list[dict] = field(default_factory=list)
    log_file: str | None = None
    feature_cache: dict | None = None  # what the feature cache did (None: not used)


class _FrozenTextConfig(Config):
    """A Config whose text form is computed once, and not re-indented by yapf: mmengine writes it to the
    log, the dumped config and every checkpoint's meta, and a run's config never changes after it starts.
    yapf's formatting (``format_python_code``) took a third of a short run (cProfile of an untrained cached
    linear run on 2 busy cores: 3.6 s of 11.4 s; the demo has ~80 runs); without it the text is the same
    valid Python, plainly indented."""

    def __init__(self, cfg_dict, **kwargs) -> None:
        super().__init__(cfg_dict, format_python_code=False, **kwargs)

    @property
    def pretty_text(self) -> str:
        text = self.__dict__.get("_cxr_pretty_text")
        if text is None:
            text = super().pretty_text
            object.__setattr__(self, "_cxr_pretty_text", text)
        return text


# the callbacks of watch_runners, called in order with each Runner train_and_test builds
_RUNNER_CALLBACKS: list[Callable[[Runner], None]] = []


@contextlib.contextmanager
def watch_runners(callback: Callable[[Runner], None]) -> Iterator[None]:
    """Call ``callback(runner)`` with every Runner :func:`train_and_test` builds while the block runs, after
    the Runner is built from its config and before it trains (to register a hook on it, read its hooks or
    wrap its methods: measuring without patching mmengine). The config, and so the record, is unchanged."""
    _RUNNER_CALLBACKS.append(callback)
    try:
        yield
    finally:
        _RUNNER_CALLBACKS.remove(callback)


def _strip(metrics: dict) -> dict[str, float]:
    return {k.split("/", 1)[-1]: float(v) for k, v in metrics.items()}


def _history_hook(runner: Runner) -> HistoryHook:
    return next(h for h in runner.hooks if isinstance(h, HistoryHook))


class _DropNoise(logging.Filter):
    """mmengine deprecation notices it emits for its own calls (nothing a user can act on)."""

    NOISE = ('"FileClient" will be deprecated', '"HardDiskBackend" is the alias')

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in self.NOISE)


def train_and_test(cfg: ConfigDict, monitor: str, quiet: bool = True) -> RunOutcome:
    """See :func:`_train_and_test`; ``quiet`` keeps pycocotools' prints and mmengine's noise off stdout."""
    if not quiet:
        return _train_and_test(cfg, monitor)
    with contextlib.redirect_stdout(io.StringIO()):
        return _train_and_test(cfg, monitor)


def _train_and_test(cfg: ConfigDict, monitor: str) -> RunOutcome:
    """Run training (``cfg.train_cfg.max_epochs`` may be 0: test the untrained head) and the test.

    Args:
        cfg: a config from :func:`benchmark.openmmlab.config.build_config`.
        monitor: the validation metric that picks the best checkpoint (e.g. ``seg/dice``).
    """
    max_epochs = cfg.train_cfg.max_epochs
    if max_epochs == 0:
        cfg = cfg.copy()
        cfg.train_cfg.max_epochs = 1  # the loop needs >= 1 to be built; it is never run
    runner = Runner.from_cfg(_FrozenTextConfig(cfg))
    for callback in list(_RUNNER_CALLBACKS):
        callback(runner)
    logger = MMLogger.get_current_instance()
    for handler in logger.handlers:
        handler.addFilter(_DropNoise())
    try:
        history = _history_hook(runner)
        best_ckpt = None
        if max_epochs > 0:
            runner.train()
            barrier()  # DDP: rank 0 has finished writing the checkpoints before any rank reads one
            best_ckpt = runner.message_hub.get_info("best_ckpt")
            if best_ckpt and os.path.exists(best_ckpt):
                runner.load_checkpoint(mmengine_path(best_ckpt))  # through cxrbench's one loader
            else:  # no epoch produced a valid monitored value (e.g. NaN): test the final weights
                best_ckpt = None
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
