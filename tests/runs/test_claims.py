"""Claim files (benchmark.runs.claims): exclusive, released, taken over when stale, kept fresh by a
heartbeat."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import time

from benchmark.runs.claims import is_stale, owner_info, try_claim


def test_claims_are_exclusive_and_released(tmp_path):
    path = tmp_path / "k.claim"
    first = try_claim(path, heartbeat_s=0)
    assert first is not None and try_claim(path, heartbeat_s=0) is None
    assert json.loads(path.read_text())["pid"] == os.getpid()
    first.release()
    assert not path.exists()
    with try_claim(path, heartbeat_s=0) as again:
        assert again is not None and path.exists()
    assert not path.exists()


def test_stale_claims_are_taken_over(tmp_path):
    p = mp.get_context("spawn").Process(target=time.sleep, args=(0,))
    p.start()
    p.join()
    dead = tmp_path / "dead.claim"
    dead.write_text(json.dumps(owner_info() | {"pid": p.pid}))  # its process has exited
    assert is_stale(dead)
    claim = try_claim(dead, heartbeat_s=0)
    assert claim is not None and json.loads(dead.read_text())["pid"] == os.getpid()
    claim.release()

    elsewhere = tmp_path / "other.claim"
    elsewhere.write_text(json.dumps(owner_info() | {"host": socket.gethostname() + "-other", "pid": 1}))
    assert not is_stale(elsewhere, stale_after_s=60)  # another machine, heartbeat fresh
    old = time.time() - 120
    os.utime(elsewhere, (old, old))
    assert is_stale(elsewhere, stale_after_s=60)  # its heartbeat stopped
    assert not is_stale(elsewhere, stale_after_s=600)


def test_heartbeat_keeps_a_claim_fresh(tmp_path):
    path = tmp_path / "beat.claim"
    with try_claim(path, heartbeat_s=0.05):
        old = time.time() - 1000
        os.utime(path, (old, old))
        time.sleep(0.3)
        assert time.time() - path.stat().st_mtime < 100
