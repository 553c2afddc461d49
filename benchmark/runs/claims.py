"""Claim files: at most one process works on a key at a time, across processes, jobs and machines.

A claim is a small JSON file created with ``O_CREAT | O_EXCL`` (atomic on local file systems and on NFSv3+,
the shared file systems clusters use), holding who owns it: host, pid, the process's start time, the Slurm
job id. While held, a background thread touches the file every ``heartbeat_s`` seconds. A claim whose
owner is gone is *stale* and may be taken over:

- same host: the owning process no longer exists (or its pid was reused by a younger process);
- same Slurm job (a preempted job that was requeued): the new run of the job takes its own claim back;
- otherwise (another host): the file has not been touched for ``stale_after_s`` seconds.

So a sweep killed with SIGKILL, a crashed worker or a Slurm job that hit its time limit never blocks a
later sweep for longer than the stale timeout (on the same host: not at all). Runs are claimed at
``OUT/claims/<key>.claim`` (:func:`claim_path`) by every executor, so two commands on one output folder
never train the same run at once.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0
CLAIMS_DIR = "claims"


def claim_path(out_dir, key: str) -> Path:
    """The claim file of run ``key`` under an output folder; every executor (sequential ``evaluate``,
    local workers, Slurm jobs) takes it before training the run."""
    return Path(out_dir) / CLAIMS_DIR / f"{key}.claim"


def _process_start(pid: int) -> str | None:
    """The start time of a process in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def slurm_job_id() -> str | None:
    """``<array job>_<task>`` or ``<job>`` inside a Slurm job, else None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def owner_info(**extra) -> dict:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "pid_start": _process_start(pid),
        "slurm_job": slurm_job_id(),
        "claimed_at": time.time(),
        **extra,
    }


def _read_bytes(path: Path) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def read_owner(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_stale(path: Path, stale_after_s: float = STALE_AFTER_S) -> bool:
    """Whether the claim at ``path`` belongs to nobody alive (see the module docstring)."""
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return True
    owner = read_owner(path)
    if owner is None:
        # unreadable: a writer may be between creating and filling it; give it a moment
        return age > 60.0
    me = owner_info()
    if owner.get("slurm_job") and owner.get("slurm_job") == me["slurm_job"]:
        return owner.get("pid") != me["pid"]  # our own job, requeued: the old run is gone
    if owner.get("host") == me["host"]:
        pid = int(owner.get("pid", -1))
        if pid == me["pid"]:
            return False
        if not _pid_alive(pid):
            return True
        start = owner.get("pid_start")
        return start is not None and _process_start(pid) not in (None, start)
    return age > stale_after_s


class Claim:
    """A held claim; release it with :meth:`release` or use it as a context manager."""

    def __init__(self, path: Path, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.path = Path(path)
        self._stop = threading.Event()
        self._thread = None
        if heartbeat_s > 0:
            self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True)
            self._thread.start()

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        owner = read_owner(self.path)
        if (
            owner is not None
            and owner.get("pid") == os.getpid()
            and owner.get("host") == socket.gethostname()
        ):
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_claim(
    path: str | os.PathLike,
    stale_after_s: float = STALE_AFTER_S,
    heartbeat_s: float = HEARTBEAT_S,
    **extra,
) -> Claim | None:
    """Take the claim at ``path`` if it is free or stale; None while someone alive holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            judged = _read_bytes(path)
            if not is_stale(path, stale_after_s):
                return None
            # take a stale claim over: rename it away first, so that of two processes racing for the
            # same stale claim only one removes it (the other's rename fails) and then one O_EXCL wins
            grave = path.with_name(f"{path.name}.stale-{os.getpid()}-{time.monotonic_ns()}")
            try:
                os.rename(path, grave)
            except FileNotFoundError:
                continue
            if _read_bytes(grave) != judged:
                # someone took the stale claim over between our check and our rename: give it back
                try:
                    os.link(grave, path)
                except OSError:
                    pass
                os.unlink(grave)
                return None
            os.unlink(grave)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(owner_info(**extra), f)
        return Claim(path, heartbeat_s)
    return None
