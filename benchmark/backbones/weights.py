"""Reading weight files without running code from them, and loading their tensors into a module strictly:
the benchmark's face of :mod:`cxrcore.weights`.

The one hardened loader lives in :mod:`cxrcore.weights` (``pretrain`` reads its checkpoints with it too, and may
not import ``benchmark``); see its docstring for what it guarantees and refuses. This module gives its errors
the benchmark's types (every backbone error is a :class:`~benchmark.backbones.errors.BackboneError`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn

from benchmark.backbones.errors import (  # noqa: F401  (BackboneError re-exported)
    BackboneError,
    BackboneKeyError,
    UnsafeCheckpointError,
    WeightsFileError,
)
from benchmark.backbones.formats import show_keys
from cxrcore import weights as _core
from cxrcore.hashing import sha256_file  # noqa: F401  (the one sha256 of a file; spec, resnet and catalog import it from here)
from cxrcore.weights import WRAPPER_KEYS, LoadedWeights  # noqa: F401  (re-exported)

T = TypeVar("T")


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


def check_and_load(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str, load: bool = True
) -> None:
    """Load ``state`` into ``model`` strictly (``load=False``: only check), with an error that lists what does
    not match."""
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in expected)
    if missing or unexpected:
        raise BackboneKeyError(
            f"{source}: weights do not match the {type(model).__name__} layout.\n"
            f"  missing keys ({len(missing)}): {show_keys(missing)}\n"
            f"  unexpected keys ({len(unexpected)}): {show_keys(unexpected)}"
        )
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise BackboneKeyError(
                f"{source}: shape mismatch for key '{k}': file has {tuple(v.shape)}, "
                f"model expects {tuple(expected[k].shape)}"
            )
    if load:
        model.load_state_dict(state, strict=False)


# What was computed from the last weights file read (converted tensors, sha256), per process: ``evaluate``
# resolves its spec before planning (run keys, records), and every run's CXRBackbone resolves the same spec
# again from the mmengine config, which holds the spec string (config dicts stay plain). Resolving an
# unchanged file a second time costs a stat instead of a read, a conversion and a sha256.
_LAST_READ: dict[tuple, object] = {}


def read_once(path: str | os.PathLike, what: tuple, read: Callable[[], T]) -> T:
    """``read()``, what ``what`` computes from the file at ``path``, computed once while the file is unchanged.

    A file is unchanged while its device, inode, size, mtime and ctime are (rewriting or replacing it changes
    them). Only the last file's result is kept, so the cache never holds more than one model's weights; a
    failed ``read()`` keeps nothing. Callers must not modify what it returns.
    """
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, *what)
    if key not in _LAST_READ:
        value = read()
        _LAST_READ.clear()
        _LAST_READ[key] = value
    return _LAST_READ[key]
