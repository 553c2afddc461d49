"""Reading weight files without running code from them: the benchmark's face of :mod:`cxrcore.weights`.

The one hardened loader lives in :mod:`cxrcore.weights` (``pretrain`` reads its checkpoints with it too, and may
not import ``benchmark``); see its docstring for what it guarantees and refuses. This module gives its errors
the benchmark's types (every backbone error is a :class:`BackboneError`).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from cxrcore import weights as _core
from cxrcore.weights import WRAPPER_KEYS, LoadedWeights  # noqa: F401  (re-exported)


class BackboneError(ValueError):
    """A backbone spec or weights file cannot be turned into an encoder."""


class WeightsFileError(BackboneError, _core.CheckpointError):
    """A weights file cannot be read."""


class UnsafeCheckpointError(WeightsFileError, _core.UnsafeCheckpointError):
    """A checkpoint's pickle refers to something that only code execution would need."""


@contextmanager
def _benchmark_errors():
    """cxrcore's errors as the benchmark's types (same messages)."""
    try:
        yield
    except _core.UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(str(e)) from e
    except _core.CheckpointError as e:
        raise WeightsFileError(str(e)) from e


def load_weights(path: str | os.PathLike) -> LoadedWeights:
    """Read the tensors of a ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` file, safely.

    Raises:
        WeightsFileError: missing, empty or unreadable file, or no tensors in it.
        UnsafeCheckpointError: the pickle refers to code-execution primitives.
    """
    with _benchmark_errors():
        return _core.load_weights(path)


def load_checkpoint(path: str | os.PathLike) -> object:
    """The object pickled in a checkpoint, as ``torch.load(weights_only=True)`` would return it, after the
    loader's check (:func:`cxrcore.weights.load_checkpoint` without placeholders)."""
    with _benchmark_errors():
        return _core.load_checkpoint(path, placeholders=False)[0]


def load_safetensors(path: str | os.PathLike) -> dict:
    """The tensors of a safetensors file (:func:`cxrcore.weights.load_safetensors`)."""
    with _benchmark_errors():
        return _core.load_safetensors(path)
