"""Reading weight files without running code from them.

Released pretraining checkpoints are rarely plain state dicts: Lightning ``.ckpt`` files carry
``hyper_parameters`` as OmegaConf objects or argparse namespaces, mmengine checkpoints carry message-hub
history buffers, DataParallel checkpoints carry the optimizer. ``torch.load(weights_only=True)`` refuses all
of these, and ``weights_only=False`` would execute whatever the pickle names. cxrbench does neither:

1. safetensors files are read with safetensors;
2. pickles are read with ``torch.load(weights_only=True)``;
3. when that refuses some globals, torch lists them (``get_unsafe_globals_in_checkpoint``, which reads the
   pickle without running it). Names that are only ever used to attack (``os.system``, ``builtins.eval``,
   ``subprocess``, ...) make the file refused outright with :class:`UnsafeCheckpointError`. Every other
   name is BOUND TO AN INERT STAND-IN (a small class that records its arguments and calls nothing) and the
   file is read again by torch's own ``weights_only=True`` unpickler, with those stand-ins as its only
   extra allowed globals. The real objects the names refer to are never imported nor allow-listed (not
   even ``builtins.getattr``, which some Lightning metadata uses: its name gets a stand-in too). The
   stand-ins' names are reported (``cxrbench inspect`` lists them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

# Names a checkpoint has no business referring to: loading such a file is an attack or an accident worth
# stopping for, even though the inert unpickler would not run them either. (Other names, getattr included,
# appear in ordinary metadata and are merely replaced by placeholders.)
_REFUSED_MODULES = (
    "os",
    "posix",
    "nt",
    "subprocess",
    "sys",
    "shutil",
    "socket",
    "importlib",
    "runpy",
    "pickle",
    "_pickle",
    "marshal",
    "ctypes",
    "code",
    "codeop",
    "pty",
    "webbrowser",
    "io",
    "_io",
    "multiprocessing",
    "signal",
    "asyncio",
    "pdb",
    "timeit",
    "tempfile",
    "urllib",
    "http",
    "requests",
    "torch.hub",
    "torch.ops",
    "torch._ops",
    "torch.jit",
    "torch.utils.cpp_extension",
)
_REFUSED_BUILTINS = (
    "eval",
    "exec",
    "compile",
    "open",
    "__import__",
    "input",
    "breakpoint",
    "globals",
    "locals",
    "vars",
    "setattr",
    "delattr",
    "memoryview",
    "help",
)
# Wrapper keys under which training frameworks store the weights (Lightning / mmengine: state_dict;
# MedKLIP, MAE, DeiT: model; some others: model_state_dict).
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


class BackboneError(ValueError):
    """A backbone spec or weights file cannot be turned into an encoder."""


class WeightsFileError(BackboneError):
    """A weights file cannot be read."""


class UnsafeCheckpointError(WeightsFileError):
    """A checkpoint's pickle refers to something that only code execution would need."""


@dataclass
class LoadedWeights:
    """The tensors of a weights file and how they were found."""

    path: Path
    state: dict[str, torch.Tensor]
    container: str  # "safetensors", "state dict" or "checkpoint['state_dict']" ...
    placeholders: tuple[str, ...] = ()  # globals replaced by inert placeholders (metadata, never run)
    other_entries: tuple[str, ...] = field(default=())  # top-level entries besides the weights


class _Inert(dict):
    """Stands in for an object the pickle names but that is never needed: records, never calls."""

    _global_name = "?"

    def __init__(self, *args, **kwargs):  # never forward to dict: args are not ours to interpret
        super().__init__()
        self._args = args

    def __setstate__(self, state):
        self._state = state

    def append(self, item):
        self.setdefault("_list", []).append(item)

    def extend(self, items):
        self.setdefault("_list", []).extend(items)

    def __repr__(self) -> str:
        return f"<inert {self._global_name}>"


def _refused(module: str, name: str) -> bool:
    if module in ("builtins", "__builtin__"):
        return name in _REFUSED_BUILTINS
    return any(module == m or module.startswith(m + ".") for m in _REFUSED_MODULES)


def _stand_in(full_name: str) -> type:
    """An inert class standing in for the global ``full_name`` of a pickle."""
    return type(
        full_name.rsplit(".", 1)[-1], (_Inert,), {"_global_name": full_name, "__module__": "cxrbench.inert"}
    )


def _torch_load(path: Path) -> tuple[object, tuple[str, ...]]:
    from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

    try:
        return torch.load(path, map_location="cpu", weights_only=True), ()
    except Exception as e:
        text = str(e)
        if not ("weights_only" in text or "Unsupported global" in text or "GLOBAL" in text):
            raise WeightsFileError(f"{path}: cannot read weights ({text.splitlines()[0]})") from e
    try:
        names = sorted(get_unsafe_globals_in_checkpoint(path))
    except Exception as e:
        raise WeightsFileError(f"{path}: cannot read weights ({str(e).splitlines()[0]})") from e
    refused = [n for n in names if _refused(*n.rsplit(".", 1)) or "." not in n]
    if refused:
        raise UnsafeCheckpointError(
            f"refused to load {path}: its pickle calls {', '.join(refused)}, which a weights file never needs; "
            "cxrbench never runs code from a checkpoint. If you trust the file, re-save its tensors as a "
            "plain state dict or safetensors."
        )
    try:
        with safe_globals([(_stand_in(n), n) for n in names]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        detail = next(
            (line.strip() for line in str(e).splitlines() if "Can only" in line), str(e).splitlines()[0]
        )
        raise WeightsFileError(
            f"{path}: cannot read weights under weights_only=True ({detail}). If you trust the file, re-save its "
            "tensors as a plain state dict or safetensors (`torch.save(ckpt['state_dict'], 'weights.pt')`)."
        ) from e
    return obj, tuple(names)


def unwrap(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], str, tuple[str, ...]]:
    """The tensor mapping inside a loaded checkpoint, where it was found, and the other top-level entries."""
    if not isinstance(obj, Mapping):
        raise WeightsFileError(
            f"{path}: expected a state dict (mapping of names to tensors) or a checkpoint holding one, got "
            f"{type(obj).__name__}"
        )
    container = "state dict"
    others: tuple[str, ...] = ()
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            others = tuple(str(k) for k in obj if k != key)
            obj, container = inner, f"checkpoint[{key!r}]"
            break
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise WeightsFileError(
            f"{path}: no tensors found (top-level entries: {', '.join(map(str, list(obj)[:12])) or 'none'}). "
            f"Expected a state dict or a checkpoint with one of {', '.join(WRAPPER_KEYS)}."
        )
    return state, container, others


def load_weights(path: str | os.PathLike) -> LoadedWeights:
    """Read the tensors of a ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` file, safely.

    Raises:
        WeightsFileError: missing or unreadable file, or no tensors in it.
        UnsafeCheckpointError: the pickle refers to code-execution primitives.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return LoadedWeights(path, load_file(str(path), device="cpu"), "safetensors")
        except Exception as e:  # safetensors raises its own error types
            raise WeightsFileError(f"{path}: not a readable safetensors file ({e})") from e
    obj, placeholders = _torch_load(path)
    state, container, others = unwrap(obj, path)
    return LoadedWeights(path, state, container, placeholders, others)
