"""Reading weight files without running code from them.

Released pretraining checkpoints are rarely plain state dicts: Lightning ``.ckpt`` files carry
``hyper_parameters`` as OmegaConf objects or argparse namespaces, mmengine checkpoints carry message-hub
history buffers, DataParallel checkpoints carry the optimizer. ``torch.load(weights_only=True)`` refuses all
of these, and ``weights_only=False`` would execute whatever the pickle names. cxrbench does neither:

1. safetensors files are read with safetensors;
2. pickles are read with ``torch.load(weights_only=True)`` first;
3. when that refuses a global, the file is read again by :class:`_InertUnpickler`: tensors are rebuilt with
   torch's own allow-listed functions (the same list ``weights_only=True`` uses), every other class or
   function the pickle names is replaced by an inert placeholder that records its arguments and never calls
   anything. Names that are only ever used to attack (``os.system``, ``builtins.eval``, ``subprocess``, ...)
   are refused outright with :class:`UnsafeCheckpointError`, so an attack is reported rather than silently
   defused. The placeholders' names are reported (``cxrbench inspect`` lists them).
"""

from __future__ import annotations

import os
import pickle
import types
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


def _allowed_globals() -> dict[str, object]:
    """torch's own allow-list for ``weights_only=True`` (tensor rebuilders, storages, dtypes, containers)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return dict(_get_allowed_globals())
    except (ImportError, AttributeError):  # a future torch moved it: fall back to the essentials
        import collections

        from torch import _utils

        return {
            "collections.OrderedDict": collections.OrderedDict,
            "torch._utils._rebuild_tensor_v2": _utils._rebuild_tensor_v2,
            "torch._utils._rebuild_parameter": _utils._rebuild_parameter,
            "torch.Size": torch.Size,
            "builtins.set": set,
            "builtins.complex": complex,
        }


# Plain constructors pickles use for ordinary data (numpy arrays reduce through bytes; copyreg through object).
_SAFE_BUILTINS = {
    t.__name__: t
    for t in (
        bytes,
        bytearray,
        list,
        dict,
        tuple,
        set,
        frozenset,
        slice,
        range,
        int,
        float,
        str,
        bool,
        complex,
        object,
    )
}


def _refused(module: str, name: str) -> bool:
    if module in ("builtins", "__builtin__"):
        return name in _REFUSED_BUILTINS
    return any(module == m or module.startswith(m + ".") for m in _REFUSED_MODULES)


class _InertUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds tensors and replaces every other global by an inert placeholder."""

    allowed: dict[str, object] = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.placeholders: set[str] = set()

    def find_class(self, module: str, name: str):
        full = f"{module}.{name}"
        if full in self.allowed:
            return self.allowed[full]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if _refused(module, name):
            raise UnsafeCheckpointError(f"the pickle calls {full}")
        self.placeholders.add(full)
        return type(name, (_Inert,), {"_global_name": full, "__module__": "cxrbench.inert"})


def _inert_pickle_module(record: set[str]) -> types.SimpleNamespace:
    """A stand-in for the ``pickle`` module that ``torch.load(pickle_module=...)`` accepts."""

    class Unpickler(_InertUnpickler):
        allowed = _allowed_globals()

        def find_class(self, module, name):
            found = super().find_class(module, name)
            record.update(self.placeholders)
            return found

    def load(f, **kwargs):
        return Unpickler(f, **kwargs).load()

    return types.SimpleNamespace(__name__="cxrbench_inert_pickle", Unpickler=Unpickler, load=load)


def _torch_load(path: Path) -> tuple[object, tuple[str, ...]]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True), ()
    except Exception as e:
        text = str(e)
        if not ("weights_only" in text or "Unsupported global" in text or "GLOBAL" in text):
            raise WeightsFileError(f"{path}: cannot read weights ({text.splitlines()[0]})") from e
    record: set[str] = set()
    try:
        obj = torch.load(
            path, map_location="cpu", weights_only=False, pickle_module=_inert_pickle_module(record)
        )
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(
            f"refused to load {path}: {e}, which a weights file never needs; cxrbench never runs code from a "
            "checkpoint. If you trust the file, re-save its tensors as a plain state dict or safetensors."
        ) from e
    except Exception as e:
        raise WeightsFileError(f"{path}: cannot read weights ({str(e).splitlines()[0]})") from e
    return obj, tuple(sorted(record))


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
