"""Runs: (task, backbone, seed, lr) -> one record. ``evaluate`` plans and executes them.

The package: ``config`` (RunOptions, what the user asked for; RunConfig, what one run trains with),
``plan`` (PlannedRun, plan_run: a run's key and record path), ``execute`` (one run trained, its record
written), ``protocol`` (THE protocol: the learning-rate search, then the final seeds at the chosen rate, as one
walk that every executor in :mod:`benchmark.executors` runs), ``progress`` (the console lines of a sweep),
``records`` (the record files), ``claims`` (who runs what), ``feature_store`` (frozen features).
"""

from __future__ import annotations

import os

from benchmark.runs.config import TRAIN_LOSSES, RunConfig, RunOptions, _overrides, resolve
from benchmark.runs.execute import (
    NonFiniteValidationLossError,
    check_validation_losses,
    dist_info,
    execute,
    from_rank0,
)
from benchmark.runs.plan import PlannedRun, check_dataset_prepared, plan_run, record_identity

# the names re-exported from the submodules (those defined below are public too)
__all__ = [
    "TRAIN_LOSSES",
    "NonFiniteValidationLossError",
    "PlannedRun",
    "RunConfig",
    "RunOptions",
    "_overrides",
    "check_dataset_prepared",
    "check_validation_losses",
    "choose_lr",
    "default_num_workers",
    "dist_info",
    "evaluate",
    "execute",
    "from_rank0",
    "plan_run",
    "record_identity",
    "resolve",
    "summarize",
]


def default_num_workers(device: str) -> int:
    return 0 if device == "cpu" else min(8, os.cpu_count() or 1)


# the protocol loop (benchmark.runs.protocol) and the sequential executor (benchmark.executors.sequential)
# live in their own modules; imported here, after the definitions they use, so that
# ``benchmark.runs.evaluate`` / ``summarize`` / ``choose_lr`` keep working
from benchmark.executors.sequential import evaluate as evaluate  # noqa: E402
from benchmark.runs.protocol import choose_lr as choose_lr  # noqa: E402
from benchmark.runs.protocol import summarize as summarize  # noqa: E402
