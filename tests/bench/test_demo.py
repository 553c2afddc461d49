"""`cxrbench demo`: fakes -> prepare -> train -> untrained comparison -> leaderboard, and the finetuned
tasks learn on the generated data (the full 18-task demo is measured in docs/demo.md)."""

from __future__ import annotations

import pytest

from benchmark.demo import BANNER, DemoSettings, run_demo
from tasks.registry import TASKS

pytestmark = pytest.mark.slow

FINETUNED = [t.id for t in TASKS.values() if not t.frozen]


def test_demo_finetuned_tasks_learn(tmp_path):
    lines: list[str] = []
    result = run_demo(
        tmp_path / "demo", DemoSettings(tasks=",".join(FINETUNED)), echo=lines.append, progress=False
    )
    text = "\n".join(lines)
    assert BANNER.splitlines()[0] in text and "GENERATED" in text  # says where the numbers come from
    # says its own sizes, and where the time went: each step, each task, the total
    assert "U-Net decoder widths 256/128/64/32/16 scaled to the encoder" in text
    assert list(result["phases"]) == ["generate", "prepare", *FINETUNED, "other runs overhead", "leaderboard"]
    assert "where the time went" in text and all(f"  {t} " in text for t in FINETUNED)
    # the demo's U-Net widths are recorded (a demo record is never mistaken for a protocol one)
    for r in result["records"] + result["untrained"]:
        widths = r["overrides"].get("unet_widths")
        assert widths == ([256, 128, 64, 32, 16] if r["task_spec"]["head"] == "unet" else None), r["task"]
    rows = {r["task"]: r for r in result["rows"]}
    assert set(rows) == set(FINETUNED)
    for task_id, row in rows.items():
        assert row["status"] == "ok", task_id
        assert row["learned"], (task_id, row["untrained"], row["trained"])
    assert all(r["status"] == "ok" for r in result["untrained"])
    board = result["leaderboard"]
    assert (board / "leaderboard.csv").exists() and (board / "leaderboard.html").exists()
    assert (
        "published:" in (board / "leaderboard.csv").read_text()
    )  # the reference rows sit beside the demo row
    # resumable: a second call finds everything done and trains nothing
    again: list[str] = []
    run_demo(tmp_path / "demo", DemoSettings(tasks=",".join(FINETUNED)), echo=again.append, progress=False)
    assert sum("already recorded" in line for line in again) == len(FINETUNED)


def test_demo_linear_heads_search_their_lr(tmp_path):
    """The demo searches the linear heads' lr grid (cheap on cached features): the default lr of
    covid_linear (3e-2) saturates the head of a random encoder, the searched one learns."""
    tasks = "covid_linear,object_cxr_linear"
    result = run_demo(tmp_path / "demo", DemoSettings(tasks=tasks), echo=lambda *a: None, progress=False)
    for task_id in tasks.split(","):
        search = [r for r in result["records"] if r["task"] == task_id and r["phase"] == "lr_search"]
        final = [r for r in result["records"] if r["task"] == task_id and r["phase"] == "final"]
        assert len(search) == len(TASKS[task_id].lr_grid) and all(r["status"] == "ok" for r in search)
        assert len(final) == 1 and final[0]["lr_source"] == "search"
        assert final[0]["lr"] == max(search, key=lambda r: r["val_score"])["lr"]
        assert final[0]["feature_cache"]["used"]
    rows = {r["task"]: r for r in result["rows"]}
    assert all(row["learned"] for row in rows.values()), rows
