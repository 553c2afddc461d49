"""THE loader of weight files: every read of weights in cxrbench (``benchmark`` and ``pretrain``) goes here.

Released pretraining checkpoints are rarely plain state dicts: Lightning ``.ckpt`` files carry
``hyper_parameters`` as OmegaConf objects or argparse namespaces, mmengine checkpoints carry message-hub
history buffers, DataParallel checkpoints carry the optimizer. ``torch.load(weights_only=True)`` refuses all
of these, and ``weights_only=False`` would execute whatever the pickle names. cxrbench does neither:

1. safetensors files are read with safetensors;
2. every pickle (``data.pkl`` of a zip checkpoint, the five pickles of a legacy ``.pth``) is first CHECKED
   WITHOUT BEING RUN (:func:`check_file`): a single pass over its opcodes, linear in its size, that keeps one
   small record per stack entry. It refuses (:class:`CheckpointError`, naming the file and the byte offset)

   - anything nested deeper than :data:`MAX_DEPTH` levels (a 500,000-level tuple would overflow the C
     stack when Python hashes it: a SIGSEGV, no message);
   - a size the file cannot hold: a storage larger than its zip record, legacy storages larger than the
     file, ``bytearray(n)`` / a quantized tensor's size beyond the file's bytes, a tensor or storage class
     called with arguments (``torch.Tensor(n)`` allocates n floats), or a container built from a
     computed object (``set(tensor)`` makes one Python object per element);
   - opcodes torch's ``weights_only`` unpickler does not support, truncated or malformed streams, storage
     references it cannot verify, more than :data:`MAX_PLACEHOLDERS` distinct unknown globals;
3. the checkpoint is then read by torch's own ``weights_only=True`` unpickler (``weights_only`` passed
   explicitly, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot switch it off). Names that are only ever used
   to attack (``os.system``, ``builtins.eval``, ``subprocess``, ...) make the file refused outright with
   :class:`UnsafeCheckpointError`. With ``placeholders=True`` every other unknown name is BOUND TO AN INERT
   STAND-IN (a small class that records its arguments and calls nothing) and allowed for that one read;
   the real objects the names refer to are never imported nor allow-listed (not even ``builtins.getattr``,
   which some Lightning metadata uses: its name gets a stand-in too). The stand-ins' names are reported.

Time and memory are linear in the file's size: the check keeps O(opcodes) small records; torch's unpickler
costs O(opcodes x allowed globals), and the number of stand-ins is capped.
"""

from __future__ import annotations

import mmap
import os
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

# Deeper than this is refused. No training framework's checkpoint nests more than a few dozen levels; hashing a
# tuple recurses in C without a guard, so depth must be bounded before torch's unpickler builds it.
MAX_DEPTH = 256
# Distinct unknown globals a checkpoint may name (Lightning + OmegaConf metadata names about 20). torch's
# unpickler scans the whole allow-list at every GLOBAL / REDUCE / BUILD, so its cost is opcodes x this.
MAX_PLACEHOLDERS = 64


def weights_dir() -> Path:
    """The folder of downloaded / user-provided weight files (ImageNet ResNets for benchmark and pretrain):
    ``$CXRBENCH_WEIGHTS_DIR``, else torch hub's ``checkpoints`` folder."""
    env = os.environ.get("CXRBENCH_WEIGHTS_DIR")
    return Path(env) if env else Path(torch.hub.get_dir()) / "checkpoints"

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
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001


class CheckpointError(ValueError):
    """A weights file cannot be read (the message names the file)."""


class UnsafeCheckpointError(CheckpointError):
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


def _first_line(e: BaseException) -> str:
    """A one-line description of an exception, never empty (MemoryError() and EOFError() have no text)."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


# ---------------------------------------------------------------------------------- the static pickle check


class _Bad(Exception):
    """Raised by the check; becomes a CheckpointError naming the file."""


class _Glob(str):
    """A global's full name on the simulated stack."""


class _Kind:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_LIST, _DICT, _SET = _Kind("list"), _Kind("dict"), _Kind("set")
_OBJ = _Kind("object")  # anything computed: a call's result, a storage
_MARK = object()


class _Node:
    """One simulated stack entry: how deeply the object nests, and its value when it is a literal."""

    __slots__ = ("depth", "val")

    def __init__(self, depth: int, val) -> None:
        self.depth = depth
        self.val = val


@dataclass
class _Scan:
    end: int  # offset just after STOP
    top: object  # the value left on the stack (a literal, a tuple of values, or a kind)
    globals: set[str]
    storages: list[tuple]  # the persistent ids, as tuples of values


def _allowed_globals() -> dict:
    from torch import _weights_only_unpickler as wou

    return wou._get_allowed_globals()


# allow-listed callables whose arguments must be literals or containers built in the pickle (never a computed
# object: set(tensor) makes one Python object per element, torch.Size(tensor) one int per element)
_LITERAL_ARGS = {
    "builtins.set",
    "builtins.complex",
    "collections.Counter",
    "collections.OrderedDict",
    "torch.Size",
    "torch.device",
    "_codecs.encode",
    "torch.serialization._get_layout",
}


def _check_call(name: str, args, limit: int, where: int, allowed: dict) -> None:
    """Refuse a call of an allow-listed global whose arguments would allocate more than the file holds."""
    if name not in allowed:
        return  # an inert stand-in (or refused later): calls nothing
    if not isinstance(args, tuple):
        raise _Bad(f"byte {where}: {name} is called with computed arguments ({args!r}), not a tuple")
    if name == "builtins.bytearray":
        first = args[0] if args else None
        if isinstance(first, int):
            if not 0 <= first <= limit:
                raise _Bad(
                    f"byte {where}: bytearray({first}) would allocate more bytes than the whole file holds "
                    f"({limit})"
                )
        elif not isinstance(first, (str, bytes, tuple, type(None))) and first not in (_LIST,):
            raise _Bad(f"byte {where}: bytearray of a computed object ({first!r})")
    elif name in _LITERAL_ARGS:
        bad = [a for a in args if isinstance(a, _Kind) and a is _OBJ]
        if bad:
            raise _Bad(f"byte {where}: {name} is called on a computed object (only literals are accepted)")
    elif name == "torch._utils._rebuild_qtensor":
        size = args[2] if len(args) > 2 else None
        if not (isinstance(size, tuple) and all(isinstance(s, int) and s >= 0 for s in size)):
            raise _Bad(f"byte {where}: quantized tensor with a computed size")
        n = 1
        for s in size:
            n *= s
            if n > limit:
                raise _Bad(f"byte {where}: quantized tensor of size {size}: more elements than the file has bytes")
    elif name == "torch._tensor._rebuild_from_type_v2":
        if len(args) != 4 or not isinstance(args[0], _Glob):
            raise _Bad(f"byte {where}: _rebuild_from_type_v2 with a computed function")
        _check_call(str(args[0]), args[2], limit, where, allowed)
    elif isinstance(allowed[name], type) and args:
        # torch.Tensor(n), torch.FloatTensor(n), torch.UntypedStorage(n), Parameter(...): torch.save never
        # calls a tensor or storage class with arguments (it uses the _rebuild_* functions)
        raise _Bad(f"byte {where}: {name} is called with arguments; a weights file never does that")


def scan_pickle(data, pos: int, limit: int, encoding: str = "utf-8") -> _Scan:
    """Check one pickle of ``data`` (bytes or mmap) starting at ``pos`` without running it.

    Accepts exactly the opcodes of torch's ``weights_only`` unpickler. ``limit`` bounds every size a call
    may allocate (the file's size). Raises :class:`_Bad` with the byte offset of the problem.
    """
    from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING

    allowed = _allowed_globals()
    unpack_from = struct.unpack_from
    size = len(data)
    stack: list = []
    metastack: list = []
    memo: dict = {}
    found: set[str] = set()
    storages: list = []
    max_depth = MAX_DEPTH

    def need(n: int) -> None:
        if pos + n > size:
            raise _Bad(f"byte {pos}: the pickle is truncated (needs {n} more bytes, the file ends)")

    def deep(depth: int) -> int:
        if depth > max_depth:
            raise _Bad(f"byte {pos}: objects nested deeper than {max_depth} levels")
        return depth

    def pop_mark() -> list:
        nonlocal stack
        if not metastack:
            raise _Bad(f"byte {pos}: no MARK before this opcode (malformed pickle)")
        items = stack
        stack = metastack.pop()
        return items

    def top() -> _Node:
        if not stack:
            raise _Bad(f"byte {pos}: the stack is empty (malformed pickle)")
        return stack[-1]

    def pop() -> _Node:
        if not stack:
            raise _Bad(f"byte {pos}: the stack is empty (malformed pickle)")
        return stack.pop()

    def grow(target: _Node, children) -> None:
        d = target.depth
        for c in children:
            if c.depth + 1 > d:
                d = c.depth + 1
        target.depth = deep(d)

    while True:
        if pos >= size:
            raise _Bad(f"byte {pos}: the pickle ends without STOP (truncated file?)")
        op = data[pos]
        at = pos
        pos += 1
        if op == 0x71:  # BINPUT
            need(1)
            memo[data[pos]] = top()
            pos += 1
        elif op == 0x72:  # LONG_BINPUT
            need(4)
            memo[unpack_from("<I", data, pos)[0]] = top()
            pos += 4
        elif op == 0x68 or op == 0x6A:  # BINGET, LONG_BINGET
            n = 1 if op == 0x68 else 4
            need(n)
            idx = data[pos] if n == 1 else unpack_from("<I", data, pos)[0]
            pos += n
            if idx not in memo:
                raise _Bad(f"byte {at}: memo entry {idx} read before it is written (malformed pickle)")
            stack.append(memo[idx])
        elif op == 0x58:  # BINUNICODE
            need(4)
            n = unpack_from("<I", data, pos)[0]
            pos += 4
            need(n)
            try:
                val = str(data[pos : pos + n], "utf-8", "surrogatepass")
            except UnicodeDecodeError as e:
                raise _Bad(f"byte {at}: a string that is not UTF-8 ({e.reason})") from None
            pos += n
            stack.append(_Node(0, val))
        elif op == 0x55:  # SHORT_BINSTRING
            need(1)
            n = data[pos]
            pos += 1
            need(n)
            raw = bytes(data[pos : pos + n])
            pos += n
            if encoding != "bytes":
                try:
                    raw = raw.decode(encoding, "strict")
                except UnicodeDecodeError as e:
                    raise _Bad(f"byte {at}: a string that is not {encoding} ({e.reason})") from None
            stack.append(_Node(0, raw))
        elif op == 0x28:  # MARK
            if len(metastack) >= max_depth:  # each open MARK is one more level of the object being built
                raise _Bad(f"byte {at}: objects nested deeper than {max_depth} levels")
            metastack.append(stack)
            stack = []
        elif op == 0x29:  # EMPTY_TUPLE
            stack.append(_Node(1, ()))
        elif op == 0x85 or op == 0x86 or op == 0x87:  # TUPLE1..3
            n = op - 0x84
            if len(stack) < n:
                raise _Bad(f"byte {at}: the stack is empty (malformed pickle)")
            items = stack[-n:]
            del stack[-n:]
            stack.append(_Node(deep(1 + max(c.depth for c in items)), tuple(c.val for c in items)))
        elif op == 0x74:  # TUPLE
            items = pop_mark()
            stack.append(
                _Node(deep(1 + max((c.depth for c in items), default=0)), tuple(c.val for c in items))
            )
        elif op == 0x5D:  # EMPTY_LIST
            stack.append(_Node(1, _LIST))
        elif op == 0x7D:  # EMPTY_DICT
            stack.append(_Node(1, _DICT))
        elif op == 0x8F:  # EMPTY_SET
            stack.append(_Node(1, _SET))
        elif op == 0x61:  # APPEND
            item = pop()
            grow(top(), (item,))
        elif op == 0x65 or op == 0x75:  # APPENDS, SETITEMS
            items = pop_mark()
            if op == 0x75 and len(items) % 2:
                raise _Bad(f"byte {at}: SETITEMS with an odd number of items (malformed pickle)")
            grow(top(), items)
        elif op == 0x73:  # SETITEM
            v = pop()
            k = pop()
            grow(top(), (k, v))
        elif op == 0x62:  # BUILD
            state = pop()
            grow(top(), (state,))
        elif op == 0x52 or op == 0x81:  # REDUCE, NEWOBJ
            args = pop()
            func = top()
            if not isinstance(func.val, _Glob):
                raise _Bad(f"byte {at}: calls {func.val!r}, which is not a named global")
            _check_call(str(func.val), args.val, limit, at, allowed)
            stack[-1] = _Node(deep(1 + max(func.depth, args.depth)), _OBJ)
        elif op == 0x63:  # GLOBAL
            lines = []
            for _ in range(2):
                nl = data.find(b"\n", pos)
                if nl < 0:
                    raise _Bad(f"byte {at}: GLOBAL without its two lines (truncated)")
                try:
                    lines.append(bytes(data[pos:nl]).decode("utf-8"))
                except UnicodeDecodeError:
                    raise _Bad(f"byte {at}: GLOBAL name that is not UTF-8") from None
                pos = nl + 1
            module, name = lines
            if (module, name) in NAME_MAPPING:
                module, name = NAME_MAPPING[(module, name)]
            elif module in IMPORT_MAPPING:
                module = IMPORT_MAPPING[module]
            full = f"{module}.{name}"
            found.add(full)
            stack.append(_Node(0, _Glob(full)))
        elif op == 0x51:  # BINPERSID
            pid = pop()
            storages.append(pid.val)
            stack.append(_Node(1, _OBJ))
        elif op == 0x4E:  # NONE
            stack.append(_Node(0, None))
        elif op == 0x88 or op == 0x89:  # NEWTRUE, NEWFALSE
            stack.append(_Node(0, op == 0x88))
        elif op == 0x4A:  # BININT
            need(4)
            stack.append(_Node(0, unpack_from("<i", data, pos)[0]))
            pos += 4
        elif op == 0x4B:  # BININT1
            need(1)
            stack.append(_Node(0, data[pos]))
            pos += 1
        elif op == 0x4D:  # BININT2
            need(2)
            stack.append(_Node(0, unpack_from("<H", data, pos)[0]))
            pos += 2
        elif op == 0x47:  # BINFLOAT
            need(8)
            stack.append(_Node(0, unpack_from(">d", data, pos)[0]))
            pos += 8
        elif op == 0x8A:  # LONG1
            need(1)
            n = data[pos]
            pos += 1
            need(n)
            stack.append(_Node(0, int.from_bytes(data[pos : pos + n], "little", signed=True)))
            pos += n
        elif op == 0x80:  # PROTO
            need(1)
            pos += 1
        elif op == 0x2E:  # STOP
            if metastack:
                raise _Bad(f"byte {at}: STOP inside an open MARK (malformed pickle)")
            last = pop()
            return _Scan(pos, last.val, found, storages)
        else:
            raise _Bad(
                f"byte {at}: opcode {bytes([op])!r} is not one torch's weights_only unpickler reads (a pickle "
                "written by torch.save never has it)"
            )


def _storage_nbytes(pid, where: str) -> tuple[str, int]:
    """(key, bytes) of a storage persistent id ``('storage', StorageType, key, location, numel[, view])``."""
    allowed = _allowed_globals()
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] in ("storage", b"storage")):
        raise _Bad(f"{where}: a persistent reference that is not a storage ({pid!r:.80})")
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(storage_type, _Glob) or storage_type not in allowed:
        raise _Bad(f"{where}: a storage of unknown type {storage_type!r:.80}")
    cls = allowed[storage_type]
    if not isinstance(key, (str, bytes)) or not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
        raise _Bad(f"{where}: a storage reference cxrbench cannot verify ({pid!r:.80})")
    if cls is torch.UntypedStorage:
        dtype = torch.uint8
    else:
        dtype = getattr(cls, "dtype", None)
        if not isinstance(dtype, torch.dtype):
            raise _Bad(f"{where}: {storage_type} is not a storage type")
    key = key.decode("ascii", "replace") if isinstance(key, bytes) else key
    return key, numel * torch._utils._element_size(dtype)


def _record_size_reader(reader, path: Path):
    """The uncompressed size of a record: torch's reader where it has ``get_record_size`` (not in torch 2.11,
    for one), else the zip's central directory as Python's zipfile reads it (records under one top folder)."""
    if hasattr(reader, "get_record_size"):
        return reader.get_record_size
    with zipfile.ZipFile(path) as z:
        sizes = {i.filename.split("/", 1)[1]: i.file_size for i in z.infolist() if "/" in i.filename}
    return sizes.__getitem__


def _check_zip(path: Path, file_size: int) -> tuple[set[str], str]:
    """Check ``data.pkl`` of a zip checkpoint (read with torch's own zip reader, as torch.load reads it)."""
    try:
        reader = torch._C.PyTorchFileReader(str(path))
        if not reader.has_record("data.pkl"):
            records = reader.get_all_records()
            what = "a TorchScript archive" if any(r.startswith("code/") for r in records) else "a zip"
            raise _Bad(f"{what} without data.pkl: not a checkpoint written by torch.save")
        record_size = _record_size_reader(reader, path)
        n = record_size("data.pkl")
        if n > file_size:
            raise _Bad(f"data.pkl claims {n} bytes, more than the file's {file_size} (compressed or corrupt)")
        data = reader.get_record("data.pkl")
    except _Bad:
        raise
    except Exception as e:  # torch's zip reader raises RuntimeError with miniz's message
        raise _Bad(f"not a readable zip checkpoint ({_first_line(e)})") from e
    try:
        scan = scan_pickle(data, 0, file_size)
    except _Bad as e:
        raise _Bad(f"data.pkl, {e}") from None
    for pid in scan.storages:
        key, nbytes = _storage_nbytes(pid, "data.pkl")
        record = f"data/{key}"
        try:
            have = record_size(record) if reader.has_record(record) else None
        except Exception:
            have = None
        if have is None:
            raise _Bad(f"data.pkl refers to storage '{key}', which the zip does not hold")
        if nbytes > have or have > file_size:
            raise _Bad(
                f"storage '{key}' is declared as {nbytes} bytes but its record holds {have} (of a "
                f"{file_size}-byte file)"
            )
    return scan.globals, "zip"


def _check_legacy(path: Path, file_size: int) -> tuple[set[str], str]:
    """Check the five pickles of a legacy (``_use_new_zipfile_serialization=False``) checkpoint."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:1] != b"\x80":
            raise _Bad("neither a zip checkpoint nor a legacy torch pickle (it does not start with a pickle)")
        magic = scan_pickle(data, 0, file_size)
        if magic.top != _LEGACY_MAGIC:
            raise _Bad("not a torch checkpoint: its first pickle is not torch's magic number")
        proto = scan_pickle(data, magic.end, file_size)
        if proto.top != _LEGACY_PROTOCOL:
            raise _Bad(f"legacy checkpoint of unknown protocol version {proto.top!r:.40}")
        info = scan_pickle(data, proto.end, file_size)
        main = scan_pickle(data, info.end, file_size)
        keys = scan_pickle(data, main.end, file_size)
        declared: dict[str, int] = {}
        for pid in main.storages:
            key, nbytes = _storage_nbytes(pid, "the pickle")
            declared[key] = max(declared.get(key, 0), nbytes)
        room = file_size - keys.end
        if sum(declared.values()) > room:
            raise _Bad(
                f"its storages are declared as {sum(declared.values())} bytes but only {room} bytes follow "
                "the pickles"
            )
        return main.globals | magic.globals | proto.globals | info.globals | keys.globals, "legacy"


def check_file(path: str | os.PathLike) -> set[str]:
    """Check a pickled checkpoint without running it (see the module docstring); its global names.

    Raises:
        CheckpointError: the file is empty, malformed, nested too deeply, or declares sizes it cannot hold.
    """
    path = Path(path)
    file_size = path.stat().st_size
    if file_size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); expected a weights file")
    with open(path, "rb") as f:
        head = f.read(4)
    try:
        names, _ = _check_zip(path, file_size) if head == b"PK\x03\x04" else _check_legacy(path, file_size)
    except _Bad as e:
        raise CheckpointError(f"{path}: refused to load: {e}") from None
    except (OSError, ValueError, MemoryError, OverflowError, RecursionError) as e:
        raise CheckpointError(f"{path}: cannot read weights ({_first_line(e)})") from e
    return names


# -------------------------------------------------------------------------------------------------- loading


def load_checkpoint(path: str | os.PathLike, placeholders: bool = False) -> tuple[object, tuple[str, ...]]:
    """The object pickled in a checkpoint, read without running code from it.

    Args:
        placeholders: bind unknown globals (training-framework metadata) to inert stand-ins; False: an
            unknown global is an error (for checkpoints cxrbench wrote itself, e.g. resuming).

    Returns:
        the object and the names bound to stand-ins.

    Raises:
        UnsafeCheckpointError: the pickle names code-execution primitives.
        CheckpointError: anything else that stops the file from loading (always names the file).
    """
    from torch import _weights_only_unpickler as wou
    from torch.serialization import safe_globals

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    names = check_file(path)
    allowed = set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())
    unknown = sorted(n for n in names if n not in allowed)
    refused = [n for n in unknown if "." not in n or _refused(*n.rsplit(".", 1))]
    if refused:
        raise UnsafeCheckpointError(
            f"refused to load {path}: its pickle calls {', '.join(refused[:10])}, which a weights file never "
            "needs; cxrbench never runs code from a checkpoint. If you trust the file, re-save its tensors as "
            "a plain state dict or safetensors."
        )
    if unknown and not placeholders:
        raise CheckpointError(
            f"{path}: its pickle names objects outside torch's weights-only allow-list "
            f"({', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}); expected a checkpoint of "
            "tensors and plain Python types"
        )
    if len(unknown) > MAX_PLACEHOLDERS:
        raise CheckpointError(
            f"{path}: refused to load: its pickle names {len(unknown)} distinct objects outside torch's "
            f"weights-only allow-list (more than {MAX_PLACEHOLDERS}; training metadata names a few dozen at "
            f"most), e.g. {', '.join(unknown[:5])}. Re-save its tensors as a plain state dict or safetensors."
        )
    try:
        with safe_globals([(_stand_in(n), n) for n in unknown]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        detail = next((line.strip() for line in str(e).splitlines() if "Can only" in line), _first_line(e))
        raise CheckpointError(
            f"{path}: cannot read weights under weights_only=True ({detail}). If you trust the file, re-save "
            "its tensors as a plain state dict or safetensors (`torch.save(ckpt['state_dict'], 'weights.pt')`)."
        ) from e
    return obj, tuple(unknown)


def unwrap(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], str, tuple[str, ...]]:
    """The tensor mapping inside a loaded checkpoint, where it was found, and the other top-level entries."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: expected a state dict (mapping of names to tensors) or a checkpoint holding one, got "
            f"{type(obj).__name__}"
        )
    container = "state dict"
    others: tuple[str, ...] = ()
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            others = tuple(str(k)[:200] for k in obj if k != key)
            obj, container = inner, f"checkpoint[{key!r}]"
            break
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        entries = ", ".join(str(k)[:80] for k in list(obj)[:12]) or "none"
        raise CheckpointError(
            f"{path}: no tensors found (top-level entries: {entries}). "
            f"Expected a state dict or a checkpoint with one of {', '.join(WRAPPER_KEYS)}."
        )
    return state, container, others


def load_weights(path: str | os.PathLike) -> LoadedWeights:
    """Read the tensors of a ``.safetensors`` / ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` file, safely.

    Raises:
        CheckpointError: missing, empty or unreadable file, or no tensors in it.
        UnsafeCheckpointError: the pickle refers to code-execution primitives.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return LoadedWeights(path, load_safetensors(path), "safetensors")
    obj, placeholders = load_checkpoint(path, placeholders=True)
    state, container, others = unwrap(obj, path)
    return LoadedWeights(path, state, container, placeholders, others)


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (safetensors checks every offset against the file's size)."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(e)})") from e


# ---------------------------------------------------------------------------------------- mmengine's runner

MMENGINE_PREFIX = "cxrbench-safe://"


def _load_from_cxrbench_safe(filename: str, map_location=None):
    return load_checkpoint(filename[len(MMENGINE_PREFIX) :], placeholders=False)[0]


def mmengine_path(path: str | os.PathLike) -> str:
    """``path`` as mmengine's runner should be given it (``runner.load_checkpoint``, ``load_from`` with
    ``resume``): mmengine then reads it through :func:`load_checkpoint` instead of a bare ``torch.load``
    (which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns into a full unpickler)."""
    from mmengine.runner.checkpoint import CheckpointLoader

    if MMENGINE_PREFIX not in CheckpointLoader._schemes:
        CheckpointLoader.register_scheme(MMENGINE_PREFIX, _load_from_cxrbench_safe, force=True)
    return f"{MMENGINE_PREFIX}{path}"
