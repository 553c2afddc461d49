"""Leaderboards from synthetic records: values, spreads, intervals, ranks, missing / failed / incomplete
cells, published reference rows, significance against a baseline, determinism, the CLI."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from benchmark import leaderboard as lbm
from tasks.registry import TASKS
from tests.support.leaderboard_records import (
    IMN,
    MINE,
    RND,
    T1,
    T2,
    T3,
    VALUES,
    make_record,
    pct,
    write_scenario,
)
from tests.support.records import record_files


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return write_scenario(tmp_path_factory.mktemp("lb") / "out")


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def by_backbone(rows):
    return {r["backbone"]: r for r in rows}


@pytest.fixture(scope="module")
def plain(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("plain")
    lbm.write_leaderboard(runs, out, plots=False)
    return out


def test_per_task_values_spreads_and_interval(plain):
    rows = by_backbone(read_csv(plain / "tasks" / f"{T2}.csv"))
    r = rows[IMN]
    vals = pct(VALUES[(IMN, T2)])
    assert r["values"] == ";".join(f"{v:.3f}" for v in vals)  # in seed order, in %
    assert r["seeds"] == "0;1;2;3;4" and r["n"] == "5" and r["n_expected"] == "5"
    assert float(r["mean"]) == pytest.approx(vals.mean(), abs=5e-4)
    assert float(r["std"]) == pytest.approx(vals.std(ddof=0), abs=5e-4)  # population std, as published
    assert float(r["std_sample"]) == pytest.approx(vals.std(ddof=1), abs=5e-4)
    assert r["std"] != r["std_sample"]
    lo, hi = sps.t.interval(0.95, len(vals) - 1, loc=vals.mean(), scale=sps.sem(vals))
    assert (float(r["ci95_low"]), float(r["ci95_high"])) == pytest.approx((lo, hi), abs=5e-4)
    assert r["status"] == "ok" and r["metric"] == "dice" and r["source"] == "run"
    assert r["split_hash"] == "abc123" and r["lr"] == "0.01" and r["lr_source"] == "default"
    # Secondary metrics of the records, in %.
    assert float(r["dice_per_image_mean"]) == pytest.approx((vals + 10).mean(), abs=5e-4)
    assert "dice.opacity_mean" in r and "loss_mean" not in r and "n_detections_mean" not in r


def test_lr_search_runs_are_reported_not_averaged(plain):
    r = by_backbone(read_csv(plain / "tasks" / f"{T2}.csv"))[MINE]
    assert r["lr"] == "0.01" and r["lr_source"] == "search"
    assert r["lr_search"] == "0.01:45.500;0.03:41.000"  # lr:validation score (%)
    assert float(r["mean"]) == pytest.approx(pct(VALUES[(MINE, T2)]).mean(), abs=5e-4)  # not the 0.99 runs
    runs = read_csv(plain / "runs.csv")
    search = [x for x in runs if x["phase"] == "lr_search"]
    assert len(search) == 2 and all(x["used"] == "no" for x in search)
    assert sum(x["used"] == "yes" for x in runs) == sum(len(v) for v in VALUES.values())


def test_ranks_with_ties(plain):
    t1 = by_backbone(read_csv(plain / "tasks" / f"{T1}.csv"))
    assert t1[IMN]["mean"] == t1[MINE]["mean"]
    assert (t1[IMN]["rank"], t1[MINE]["rank"], t1[RND]["rank"]) == ("1.5", "1.5", "3")
    t2 = by_backbone(read_csv(plain / "tasks" / f"{T2}.csv"))
    assert (t2[MINE]["rank"], t2[IMN]["rank"], t2[RND]["rank"]) == ("1", "2", "3")
    wide = by_backbone(read_csv(plain / "leaderboard.csv"))
    assert wide[IMN]["mean_rank"] == "1.50"  # (1.5 + 2 + 1) / 3


def test_wide_table_missing_failed_incomplete(plain):
    rows = read_csv(plain / "leaderboard.csv")
    header = list(rows[0])
    # Tasks in registry order (rsna_yolov3_frozen_10 = 5, rsna_linear_100 = 9, covid_linear = 12).
    assert header[:5] == ["backbone", "source", T1, T2, T3]
    assert header[5:8] == [f"{T1}_std", f"{T2}_std", f"{T3}_std"]
    w = by_backbone(rows)
    imn = w[IMN]
    expected = np.mean([pct(VALUES[(IMN, t)]).mean().round(3) for t in (T1, T2, T3)])
    assert float(imn["mean"]) == pytest.approx(expected, abs=5e-4)
    assert (imn["n_tasks"], imn["n_missing"], imn["n_failed"], imn["incomplete"]) == ("3", "0", "0", "")
    mine = w[MINE]
    assert mine[T3] == "" and mine[f"{T3}_std"] == ""  # never run: empty, counted, no partial mean
    assert (mine["n_tasks"], mine["n_missing"], mine["mean"], mine["mean_rank"]) == ("2", "1", "", "")
    rnd = w[RND]
    assert rnd[T3] == "" and rnd["n_failed"] == "1" and rnd["n_tasks"] == "2" and rnd["mean"] == ""
    assert rnd["incomplete"] == T2  # 3 of 5 seeds: flagged, still shown
    assert float(rnd[T2]) == pytest.approx(11.0, abs=5e-4)
    assert [r["backbone"] for r in rows] == [IMN, MINE, RND]  # complete rows by mean rank first
    t3 = by_backbone(read_csv(plain / "tasks" / f"{T3}.csv"))
    assert (
        t3[RND]["status"] == "failed" and t3[RND]["n_failed"] == "5" and "out of memory" in t3[RND]["reason"]
    )
    assert t3[MINE]["status"] == "missing" and t3[MINE]["mean"] == "" and t3[MINE]["rank"] == ""
    t2 = by_backbone(read_csv(plain / "tasks" / f"{T2}.csv"))
    assert t2[RND]["status"] == "incomplete" and t2[RND]["n"] == "3"
    summary = (plain / "summary.txt").read_text()
    assert f"{RND}: incomplete seeds on 1 task(s): {T2}" in summary
    assert f"{MINE}: missing on 1 task(s): {T3}" in summary


def test_expected_seeds_is_a_parameter(runs):
    lb = lbm.build_leaderboard(lbm.load_records([runs])[0], seeds=3)
    assert lb.row(RND).cells[T2].status == "ok"
    lb = lbm.build_leaderboard(lbm.load_records([runs])[0], seeds=6)
    assert lb.row(IMN).cells[T1].status == "incomplete"


def test_significance_against_a_run_baseline(runs, tmp_path):
    res = lbm.write_leaderboard(runs, tmp_path, baseline=IMN, plots=False)
    comp = read_csv(tmp_path / "comparison.csv")
    mine = {r["task"]: r for r in comp if r["backbone"] == MINE}
    assert set(mine) == {T1, T2}  # T3: MINE has no result
    ps = []
    for t in (T1, T2):
        ref = sps.ttest_ind(pct(VALUES[(MINE, t)]), pct(VALUES[(IMN, t)]), equal_var=False)
        assert float(mine[t]["p_value"]) == pytest.approx(ref.pvalue, rel=1e-3)
        assert float(mine[t]["t"]) == pytest.approx(ref.statistic, abs=1e-4)
        assert mine[t]["test"] == "runs"
        ps.append(ref.pvalue)
    # Holm over the two compared tasks, by hand.
    lo, hi = sorted(ps)
    holm = {min(ps): 2 * lo, max(ps): max(2 * lo, hi)}
    for t, p in zip((T1, T2), ps):
        assert float(mine[t]["p_holm"]) == pytest.approx(min(1.0, holm[p]), rel=1e-3)
    assert mine[T1]["significant"] == "no" and mine[T2]["significant"] == "yes"
    assert float(mine[T2]["diff"]) == pytest.approx(5.0, abs=5e-4)  # percentage points
    line = next(s for s in res.summary if s.startswith(f"{MINE} beats"))
    assert line.startswith(f"{MINE} beats {IMN} on 1 of 3 tasks (significant: 1)")
    assert "not compared" in line and T3 in line
    rnd_line = next(s for s in res.summary if s.startswith(f"{RND} beats"))
    assert rnd_line.startswith(f"{RND} beats {IMN} on 0 of 3 tasks (significant: 0)")
    w = by_backbone(read_csv(tmp_path / "leaderboard.csv"))
    assert (w[MINE]["beats_baseline"], w[MINE]["beats_baseline_significant"]) == ("1", "1")
    assert w[RND]["worse_baseline_significant"] == "2"  # T1 and T2 (3 seeds vs 5)
    t2 = by_backbone(read_csv(tmp_path / "tasks" / f"{T2}.csv"))
    assert t2[MINE]["significant"] == "yes" and t2[IMN]["diff"] == ""


def test_significance_summary_on_random_records_matches_scipy(tmp_path):
    """18 tasks, random effects: the "beats" line equals a count made with scipy + brute-force Holm."""
    rng = np.random.default_rng(7)
    effects = rng.normal(0.0, 0.02, size=len(TASKS))
    for i, task in enumerate(TASKS):
        for seed in range(5):
            make_record(tmp_path / "runs", "base.random", task, seed, float(0.3 + rng.normal(0, 0.01)))
            make_record(
                tmp_path / "runs", "new.random", task, seed, float(0.3 + effects[i] + rng.normal(0, 0.01))
            )
    lb = lbm.build_leaderboard(lbm.load_records([tmp_path / "runs"])[0], baseline="base.random")
    p, diffs = [], []
    for task in TASKS:
        a, b = (np.asarray(lb.row(n).cells[task].values) for n in ("new.random", "base.random"))
        p.append(sps.ttest_ind(a, b, equal_var=False).pvalue)
        diffs.append(a.mean() - b.mean())
    m = len(p)
    order = np.argsort(p)
    adj = np.empty(m)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        adj[i] = running
    k_beats = int(sum(d > 0 for d in diffs))
    j_sig = int(sum(d > 0 and a < 0.05 for d, a in zip(diffs, adj)))
    assert 0 < j_sig < k_beats < 18  # the scenario exercises every part of the count
    assert f"new.random beats base.random on {k_beats} of 18 tasks (significant: {j_sig})" in lb.summary


def test_reference_rows(runs, tmp_path):
    lbm.write_leaderboard(runs, tmp_path, reference=True, baseline="published:ImageNet", plots=False)
    wide = by_backbone(read_csv(tmp_path / "leaderboard.csv"))
    assert len([r for r in wide.values() if r["source"] == "published"]) == 16
    imn = wide["published:ImageNet"]
    # Published numbers, already in % (like ours), on the tasks of the runs.
    assert (imn[T1], imn[T1 + "_std"], imn[T2], imn[T3]) == ("8.000", "0.100", "43.300", "32.600")
    assert wide["published:LoVT@mimic_frontal_100pct"][T2] == "51.800"
    assert wide["published:Random"][T3] == "6.000"
    t2 = by_backbone(read_csv(tmp_path / "tasks" / f"{T2}.csv"))
    p = t2["published:ImageNet"]
    assert (p["status"], p["source"], p["n"], p["values"], p["ci95_low"]) == (
        "published",
        "published",
        "5",
        "",
        "",
    )
    # Ranks over all rows, published included.
    means = {k: float(v["mean"]) for k, v in t2.items()}
    names = list(means)
    expected = dict(zip(names, sps.rankdata([-means[n] for n in names], method="average")))
    assert all(float(t2[n]["rank"]) == pytest.approx(expected[n]) for n in names)
    # Against a published row: Welch from its mean, population std (-> sample std) and n = 5.
    mine = pct(VALUES[(MINE, T2)])
    ref = sps.ttest_ind_from_stats(
        mine.mean(), mine.std(ddof=1), 5, 43.3, 0.05 * math.sqrt(5 / 4), 5, equal_var=False
    )  # published std 0.0 for this task: its rounding bound 0.05 (population) is used
    comp = {(r["backbone"], r["task"]): r for r in read_csv(tmp_path / "comparison.csv")}
    assert float(comp[(MINE, T2)]["p_value"]) == pytest.approx(ref.pvalue, rel=1e-3)
    assert comp[(MINE, T2)]["test"] == "summary"
    lovt = comp[("published:LoVT@mimic_frontal_30pct", T1)]  # 17.9 +- 0.4 vs 8.0 +- 0.1 (ddof=0, n=5)
    sd = lambda s: s * math.sqrt(5 / 4)  # noqa: E731
    ref = sps.ttest_ind_from_stats(17.9, sd(0.4), 5, 8.0, sd(0.1), 5, equal_var=False)
    assert float(lovt["p_value"]) == pytest.approx(ref.pvalue, rel=1e-3)
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| published:ImageNet *(published)* |" in md and "43.3 ± 0.0" in md


def test_reference_file_is_the_published_table():
    refs = lbm.load_reference()
    methods = {lbm.published_name(r["method"], r["pretraining_data"]) for r in refs}
    assert len(methods) == 16 and len(refs) == 16 * 18
    for name in methods:
        rows = [r for r in refs if lbm.published_name(r["method"], r["pretraining_data"]) == name]
        assert [r["task"] for r in sorted(rows, key=lambda r: int(r["task_no"]))] == list(TASKS)
    for r in refs:
        assert int(r["task_no"]) == TASKS[r["task"]].number
        assert 0 <= r["mean"] <= 100 and 0 <= r["std_population"] < 10


def test_all_tasks_as_columns(runs):
    lb = lbm.build_leaderboard(lbm.load_records([runs])[0], reference=lbm.load_reference(), tasks=list(TASKS))
    assert lb.tasks == list(TASKS)
    wide = by_backbone(lbm.wide_table(lb))
    assert wide[IMN]["n_tasks"] == "3" and wide[IMN]["n_missing"] == "15" and wide[IMN]["mean"] == ""
    assert wide["published:LoVT@mimic_frontal_30pct"]["n_tasks"] == "18"
    assert wide["published:LoVT@mimic_frontal_30pct"]["mean"] != ""


def test_byte_identical_reruns(runs, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        lbm.write_leaderboard(runs, out, reference=True, baseline=IMN)
    # The same records split over two folders, given in the other order: the same output.
    split1, split2 = tmp_path / "s1", tmp_path / "s2"
    for p in record_files(runs):
        dest = (
            (split1 if p.parent.parent.name == IMN else split2) / "runs" / p.relative_to(Path(runs, "runs"))
        )
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(p.read_bytes())
    c = tmp_path / "c"
    lbm.write_leaderboard([split2, split1], c, reference=True, baseline=IMN)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert {f.suffix for f in files} == {".csv", ".md", ".html", ".png", ".txt"}
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
        assert (a / f).read_bytes() == (c / f).read_bytes(), f
    assert sorted(p.relative_to(c) for p in c.rglob("*") if p.is_file()) == files
    for f in files:  # no timestamps (the records' finished_at is 2025-01-01T00:00:00)
        if f.suffix in (".csv", ".md", ".txt", ".html"):
            assert "2025-" not in (a / f).read_text(), f


def test_several_settings_and_duplicate_seeds(tmp_path):
    for seed in range(5):
        make_record(tmp_path, "x.random", T1, seed, 0.2 + seed / 100)
    make_record(tmp_path, "x.random", T1, 0, 0.9, lr=0.5)  # another learning rate: 2 runs, not used
    make_record(tmp_path, "x.random", T1, 1, 0.9, lr=0.5)
    lb = lbm.build_leaderboard(lbm.load_records([tmp_path])[0])
    cell = lb.row("x.random").cells[T1]
    assert cell.lr == TASKS[T1].lr and cell.values == pytest.approx([20, 21, 22, 23, 24])
    assert any("another setting" in n and "lr=0.5" in n for n in cell.notes)
    used = {(r["lr"], r["seed"]): r["used"] for r in lbm.runs_table(lb)}
    assert used[("0.5", "0")] == used[("0.5", "1")] == "no" and used[("0.001", "0")] == "yes"


def test_runs_at_another_image_size_are_not_averaged_in(tmp_path):
    for seed in range(3):
        make_record(tmp_path, "x.random", T1, seed, 0.2 + seed / 100)
    for seed in range(2):  # `evaluate --size 128`: same lr, split and seeds, another resolution
        make_record(tmp_path, "x.random", T1, seed, 0.9, size=128)
    lb = lbm.build_leaderboard(lbm.load_records([tmp_path])[0])
    cell = lb.row("x.random").cells[T1]
    assert cell.values == pytest.approx([20, 21, 22])
    assert any("another setting" in n and "128 px" in n for n in cell.notes)


def test_different_splits_are_reported(tmp_path):
    make_record(tmp_path, "a.random", T1, 0, 0.3, split_hash="split-a")
    make_record(tmp_path, "b.random", T1, 0, 0.3, split_hash="split-b")
    lb = lbm.build_leaderboard(lbm.load_records([tmp_path])[0], seeds=1)
    assert f"warning: {T1}: runs on 2 different splits (split-a, split-b)" in lb.summary


def test_failed_then_rerun_seed_uses_the_success(tmp_path):
    make_record(
        tmp_path, "x.random", T2, 0, None, status="failed", key="first", finished_at="2025-01-01T00:00:00"
    )
    make_record(tmp_path, "x.random", T2, 0, 0.5, key="rerun", finished_at="2025-01-02T00:00:00")
    lb = lbm.build_leaderboard(lbm.load_records([tmp_path])[0], seeds=1)
    cell = lb.row("x.random").cells[T2]
    assert cell.status == "ok" and cell.values == [50.0] and cell.n_failed == 0
    assert any("seed 0 recorded 2 times; used rerun" in n for n in cell.notes)


def test_unreadable_record_is_reported_not_fatal(runs, tmp_path):
    bad = Path(runs, "runs", IMN, T1, "broken.json")
    bad.write_text("{not json")
    try:
        records, problems = lbm.load_records([runs])
        assert len(problems) == 1 and "broken.json" in problems[0]
        assert len(records) == sum(len(v) for v in VALUES.values()) + 5 + 2
    finally:
        bad.unlink()


def test_cli(runs, tmp_path, cli):
    out = tmp_path / "lb"
    baseline = "published:ImageNet"
    written = cli("leaderboard", "--runs", runs, "--out", out, "--reference", "--baseline", baseline)
    assert written.code == 0
    printed = written.out
    assert f"{MINE} beats published:ImageNet on 2 of 3 tasks (significant: 2)" in printed
    for rel in [
        "leaderboard.csv", "leaderboard.md", "leaderboard.html", "runs.csv", "comparison.csv", "summary.txt",
        f"tasks/{T1}.csv", f"tasks/{T2}.csv", f"tasks/{T3}.csv", "plots/tasks.png",
        "plots/diff_to_published_ImageNet.png",
    ]:  # fmt: skip
        assert (out / rel).is_file(), rel
    from PIL import Image

    for png in ("plots/tasks.png", "plots/diff_to_published_ImageNet.png"):
        with Image.open(out / png) as im:
            assert im.size[0] > 400 and len(np.unique(np.asarray(im.convert("L")))) > 10  # a real picture
    # A second call for one task removes what the first wrote for the others.
    assert cli("leaderboard", "--runs", runs, "--out", out, "--tasks", T1, "--no-plots").code == 0
    assert sorted(p.name for p in (out / "tasks").iterdir()) == [f"{T1}.csv"]
    assert not (out / "plots" / "tasks.png").exists() and not (out / "comparison.csv").exists()


def test_cli_errors(runs, tmp_path, cli):
    nope = cli("leaderboard", "--runs", runs, "--out", tmp_path, "--baseline", "nope")
    assert nope.code == 2
    err = nope.err
    assert "baseline 'nope'" in err and IMN in err
    absent = cli("leaderboard", "--runs", tmp_path / "absent", "--out", tmp_path)
    assert absent.code == 2
    assert "does not exist" in absent.err
    (tmp_path / "empty").mkdir()
    empty = cli("leaderboard", "--runs", tmp_path / "empty", "--out", tmp_path / "o")
    assert empty.code == 2
    assert "no run records" in empty.err
    assert cli("leaderboard", "--runs", runs, "--out", tmp_path, "--tasks", "bogus").code == 2


def test_markdown(plain):
    md = (plain / "leaderboard.md").read_text()
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| backbone |"))
    assert header == "| backbone | 5 | 9 | 12 | mean | mean rank |"
    rnd = next(line for line in lines if line.startswith(f"| {RND} |"))
    assert "11.0 ± 0.8 †" in rnd and "| failed |" in rnd
    mine = next(line for line in lines if line.startswith(f"| {MINE} |"))
    assert mine.endswith("| – | – | – |")  # covid_linear missing, so no mean / mean rank


def test_csv_is_plain_and_sorted(plain):
    text = (plain / "leaderboard.csv").read_text()
    assert "\r" not in text and text.endswith("\n")
    rows = list(csv.reader(io.StringIO(text)))
    assert all(len(r) == len(rows[0]) for r in rows)
    assert "nan" not in text.lower() and "-0.000" not in text


@pytest.mark.slow
def test_leaderboard_of_real_evaluate_records(data_root, tmp_path, cli):
    """Records written by `cxrbench evaluate` itself (untrained heads, 0 epochs: quick) -> leaderboard."""
    out = tmp_path / "out"
    argv = ["evaluate", "--backbone", "resnet18.random", "--tasks", "rsna_linear_10,rsna_yolov3_frozen_10"]
    argv += ["--data", str(data_root), "--out", str(out), "--seeds", "1", "--max-epochs", "0"]
    assert cli(*argv, "--batch-size", "2", "--device", "cpu", "--quiet").code == 0
    records = {(r["task"], r["seed"]): r for r in lbm.load_records([out])[0]}
    res = lbm.write_leaderboard(out, tmp_path / "lb", seeds=1, reference=True, baseline="published:Random")
    for task in ("rsna_yolov3_frozen_10", "rsna_linear_10"):
        row = by_backbone(read_csv(tmp_path / "lb" / "tasks" / f"{task}.csv"))["resnet18.random"]
        assert row["status"] == "ok" and row["seeds"] == "0" and row["n"] == "1"
        assert row["values"] == lbm.fmt(records[(task, 0)]["test_score"] * 100) == row["mean"]
        assert row["std"] == "0.000" and row["std_sample"] == row["ci95_low"] == ""  # undefined for n = 1
        assert row["split_hash"] == records[(task, 0)]["split_hash"]
        secondary = ("mAP_50_mean", "mAP_75_mean", "mAP_coco_mean", "mAP_coco_50_mean", "mAP_coco_75_mean")
        secondary = secondary if "yolov3" in task else ("dice_per_image_mean",)
        assert all(row[c] != "" for c in secondary)
    assert any(s.startswith("resnet18.random beats published:Random on ") for s in res.summary)


def test_published_std_of_zero_is_taken_as_its_rounding_bound(tmp_path):
    """A published std printed as 0.0 means "below 0.05": the Welch test uses that bound (a std of 0 on
    both sides left the test undefined, and an 11.8-point gap was never significant)."""
    refs = lbm.load_reference()
    lb = lbm.build_leaderboard([], reference=refs, baseline="published:ImageNet", tasks=["rsna_linear_10"])
    lovt = lb.comparisons[("published:LoVT@mimic_frontal_30pct", "rsna_linear_10")]  # 49.4 +- 0.0 vs 38.3 +- 0.0
    sd = 0.05 * math.sqrt(5 / 4)
    ref = sps.ttest_ind_from_stats(49.4, sd, 5, 38.3, sd, 5, equal_var=False)
    assert lovt.p == pytest.approx(ref.pvalue, rel=1e-6) and lovt.significant
    assert "published:LoVT@mimic_frontal_30pct beats published:ImageNet on 1 of 1 tasks (significant: 1)" in (
        lb.summary
    )
    cell = lb.row("published:ImageNet").cells["rsna_linear_10"]
    assert cell.std == 0.0  # shown as published
    assert any("rounding bound 0.05" in n for n in cell.notes)
    # the bound follows the printed precision: "0" is below 0.5, "0.00" below 0.005
    f = tmp_path / "ref.csv"
    f.write_text(
        "method,pretraining_data,task,metric,mean,std_population\n"
        "A,none,rsna_linear_10,dice,40,0\nB,none,rsna_linear_10,dice,41.00,0.00\n"
    )
    bounds = {r["method"]: r["std_bound"] for r in lbm.load_reference(f)}
    assert bounds == {"A": 0.5, "B": pytest.approx(0.005)}


def test_records_of_older_metric_definitions_are_never_ranked_against_published_rows(tmp_path):
    """Records written before the metrics were defined as the published tables (no code_version, or
    below 0.3) are neither ranked nor tested against published rows; among runs alone they still are."""
    task = "rsna_linear_10"
    for seed in range(5):
        make_record(tmp_path / "runs", "old.random", task, seed, 0.60 + 0.01 * seed, code_version=None)
        make_record(tmp_path / "runs", "new.random", task, seed, 0.20 + 0.01 * seed)
    recs = lbm.load_records([tmp_path / "runs"])[0]
    lb = lbm.build_leaderboard(recs, reference=lbm.load_reference(), baseline="published:ImageNet")
    old, new = lb.row("old.random"), lb.row("new.random")
    assert not old.cells[task].as_published and new.cells[task].as_published
    assert math.isnan(lb.ranks[("old.random", task)])
    assert ("old.random", task) not in lb.comparisons and ("new.random", task) in lb.comparisons
    assert any("not defined as in the published tables" in n for n in old.cells[task].notes)
    # 16 published rows and new.random are ranked among themselves
    ranked = sorted(v for (name, t), v in lb.ranks.items() if t == task and not math.isnan(v))
    assert len(ranked) == 17 and ranked[-1] == 17
    # without published rows the old records are ranked as before
    lb = lbm.build_leaderboard(recs, baseline="new.random")
    assert lb.ranks[("old.random", task)] == 1.0 and ("old.random", task) in lb.comparisons
