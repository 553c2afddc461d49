"""The GPU check: does cxrbench work on this CUDA machine, how fast, and what one encoder's sweep costs here.

    python -m bench.gpu --out DIR                       # on a GPU node: sized for < 8 minutes (untimed)
    python -m bench.gpu --device cpu --tiny --out DIR   # the same code on CPU at tiny sizes (CI, < 1 min)

One command, in this order (every training goes through the project's own run machinery: ``plan_run``,
``resolve``, ``build_config`` and ``train_and_test``, as ``cxrbench evaluate`` does):

1. ``cxrbench doctor`` (in-process): the installation, and NMS on CUDA against brute force.
2. One short training of each head type on generated data (YOLOv3: ``rsna_yolov3_finetune_100``; U-Net:
   ``covid_unet_finetune``; linear: ``rsna_linear_100``, frozen, on the feature cache) on the device, in
   float32 and with ``--amp`` (CUDA only), against the same run on CPU (a subprocess with CUDA hidden, run
   while the device works): every loss and metric finite, the first training loss (same weights, same
   batch), the validation loss and the validation / test metrics within :data:`TOLERANCE`.
3. The frozen-feature cache built on the device, then reused by a second run (another learning rate).
4. ``torchrun --nproc-per-node <GPUs> -m benchmark.cli evaluate --launcher pytorch`` (2 gloo processes on
   CPU): the run's record says ``ok`` and the world size.
5. Throughput of each head type and encoder mode at the protocol's batch sizes (8 and 64), in float32 and
   with AMP: training and validation images/s, the feature cache's build rate, the per-run overhead
   (Runner set-up, test, checkpoints) and the peak GPU memory.
6. The projected wall time of the 136 trainings of ``resnet50.random`` (46 learning-rate trials + 18 x 5
   seeds) at the protocol's epochs and dataset sizes (:func:`protocol_sizes`), from the measured seconds per
   image and the task table: an upper bound (every run to its maximum epochs) and an estimate (early stopping
   ``patience`` epochs after a best epoch assumed at ``--best-epoch-fraction`` of the maximum), printed as
   one line against the 2-hour goal.

Figures go to ``OUT/gpu_check.json``; the exit status is 1 when a check failed. ``--budget-s`` skips the
throughput measurements still to do once the check has run that long (they are listed as skipped, and the
projection needs all of one precision). Generated images are not real radiographs: the speed is that of
real ones at 224 px (the prepared datasets store 224 px PNGs either way), the metrics mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ["CXRBENCH_BENCH_CUDA"] = "1"  # bench.common hides CUDA from the CPU benches, not from this one

GOAL_HOURS = 2.0

# (head, frozen) of the protocol's tasks; each is measured at the protocol's batch sizes
MODES = (("yolov3", False), ("yolov3", True), ("unet", False), ("unet", True), ("linear", True))
BATCHES = (8, 64)
TINY_BATCHES = {8: 2, 64: 2}  # --tiny: one small batch stands for both (the code path, not the figures)

# The short check runs: device vs CPU. The first training loss is computed from the same weights on the
# same batch (TF32 convolutions, PyTorch's default on CUDA, alone give ~1e-3); the rest after a few Adam
# steps. Chosen before any GPU run (none was available when this was written): widen only with a reason.
TOLERANCE = {
    "float32": {"first_loss_rel": 1e-2, "val_loss_rel": 5e-2, "metric_abs": 0.02},
    "amp": {"first_loss_rel": 3e-2, "val_loss_rel": 1e-1, "metric_abs": 0.05},
}
CHECK_TASKS = {"yolov3": "rsna_yolov3_finetune_100", "unet": "covid_unet_finetune", "linear": "rsna_linear_100"}
# a task per (head, frozen) for the throughput runs (any task of that kind: the cost per image is the same)
SPEED_TASKS = {
    ("yolov3", False): "rsna_yolov3_finetune_100",
    ("yolov3", True): "rsna_yolov3_frozen_100",
    ("unet", False): "covid_unet_finetune",
    ("unet", True): "covid_unet_frozen",
    ("linear", True): "rsna_linear_100",
}


_STARTED = time.perf_counter()


def _log(*parts) -> None:
    print(f"{time.perf_counter() - _STARTED:5.0f} s", *parts, flush=True)


# --- protocol sizes and the projection ------------------------------------------------------------------


def protocol_sizes(dataset: str) -> dict[str, int]:
    """Images per subset of a dataset under the protocol's default split of the official release.

    From the release's image count and the split ratios, cut as :func:`tasks.splits.patient_split` cuts
    (test and val ``round(ratio * n)``, train the rest; label fractions ``max(1, round(f / 100 * train))``):
    RSNA 16010 / 5337 / 5337 (1 %: 160, 10 %: 1601), SIIM 7229 / 2409 / 2409, COVID Rural 133 / 44 / 44,
    NIH 588 / 196 / 196, Object-CXR 6400 / 1600 of its train set and its 1000 dev images as test.
    """
    from tasks.datasets import get_dataset

    ds = get_dataset(dataset)
    n = ds.expected.get("images") or ds.expected["train_images"]
    r_train, r_val, r_test = ds.split_ratios
    test = round(r_test * n) if r_test else ds.expected["dev_images"]
    val = round(r_val * n)
    train = n - val - (round(r_test * n) if r_test else 0)
    sizes = {"train": train, "val": val, "test": test}
    for f in ds.fractions:
        if f < 100:
            sizes[f"train_{f}pct"] = max(1, round(f / 100 * train))
    return sizes


def protocol_runs(task) -> list[int]:
    """The seeds of a task's trainings in one sweep: one search run (seed 1000) per grid value, then 5."""
    return [1000] * len(task.lr_grid) + list(range(5))


def estimated_epochs(task, best_fraction: float) -> int:
    """Epochs run when the best validation epoch is at ``best_fraction`` of the maximum (early stopping)."""
    return min(task.max_epochs, math.ceil(best_fraction * task.max_epochs) + task.patience)


def project(speeds: dict, batch_map: dict, best_fraction: float) -> dict:
    """Seconds of the 136 trainings of one encoder from measured rates (see the module docstring).

    ``speeds[(head, frozen, batch)]`` holds ``train_s_per_image``, ``val_s_per_image``, ``checkpoint_s``
    (counted every epoch: an upper bound, a run saves only when validation improves), ``overhead_s`` and, for frozen modes, ``cache_s_per_image``; ``batch_map`` maps a protocol batch size to the measured
    one. A random-init encoder depends on the seed, so the feature cache is built once per seed, dataset,
    head (feature levels) and subset (shared by a seed's learning rates and by tasks with the same subset).
    """
    from tasks.registry import TASKS

    upper = estimate = 0.0
    per_task = {}
    builds: dict[tuple, float] = {}
    runs = 0
    for task in TASKS.values():
        sizes = protocol_sizes(task.dataset)
        subset = "train" if task.label_fraction >= 100 else f"train_{task.label_fraction}pct"
        n_train, n_val, n_test = sizes[subset], sizes["val"], sizes["test"]
        sp = speeds[(task.head, task.frozen, batch_map[task.batch_size])]
        train_images = (n_train // task.batch_size) * task.batch_size  # the last incomplete batch is dropped
        epoch_s = train_images * sp["train_s_per_image"] + n_val * sp["val_s_per_image"] + sp["checkpoint_s"]
        fixed_s = n_test * sp["val_s_per_image"] + sp["overhead_s"]
        seeds = protocol_runs(task)
        runs += len(seeds)
        t_upper = len(seeds) * (task.max_epochs * epoch_s + fixed_s)
        t_est = len(seeds) * (estimated_epochs(task, best_fraction) * epoch_s + fixed_s)
        if task.frozen:
            for seed in set(seeds):
                for name, n in ((subset, n_train), ("val", n_val), ("test", n_test)):
                    builds[(seed, task.dataset, task.head, name)] = n * sp["cache_s_per_image"]
        per_task[task.id] = {"runs": len(seeds), "upper_s": round(t_upper, 1), "estimate_s": round(t_est, 1)}
        upper += t_upper
        estimate += t_est
    cache_s = sum(builds.values())
    return {
        "trainings": runs,
        "upper_s": upper + cache_s,
        "estimate_s": estimate + cache_s,
        "cache_build_s": cache_s,
        "cache_builds": len(builds),
        "best_epoch_fraction": best_fraction,
        "per_task": per_task,
    }


# --- data, runs, measurements ---------------------------------------------------------------------------


def make_data(work: Path, tiny: bool, size: int) -> Path:
    """Fake RSNA (YOLOv3, linear) and COVID Rural (U-Net) downloads, prepared at ``size`` px."""
    from tasks.fakes import make_fake_covid_rural, make_fake_rsna
    from tasks.prepare import prepare

    data = work / "data"
    workers = min(8, os.cpu_count() or 1)
    n_rsna, n_covid = (30, 10) if tiny else (480, 240)
    raw_size = 96 if tiny else 256
    rsna = make_fake_rsna(work / "raw-rsna", n_patients=n_rsna, seed=0, size=raw_size)
    covid = make_fake_covid_rural(
        work / "raw-covid", n_patients=n_covid, seed=0, min_size=raw_size // 2, max_size=raw_size
    )
    for name, raw in (("rsna", rsna), ("covid_rural", covid)):
        report = prepare(name, raw, data, size=size, workers=workers, progress=False)
        if report.failures:
            raise RuntimeError(f"preparing fake {name}: {report.failures[:3]}")
    return data


def one_run(task, cfg: dict, data: Path, work: Path, name: str, *, amp=False, cache=None, lr=None, **kw):
    """One training through ``bench.common.timed_run``: figures of the outcome, the timer and the GPU."""
    import torch

    from bench.common import _sync, timed_run
    from benchmark.runs import RunOptions, default_num_workers
    from tasks.registry import METRIC_KEYS

    device = cfg["device"]
    options = RunOptions(
        device=device,
        num_workers=default_num_workers(device),
        amp=amp,
        progress=False,
        feature_cache=str(cache) if cache else None,
        **kw,
    )
    task = replace(task, size=cfg["size"])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    outcome, timer, wall = timed_run(task, cfg["backbone"], str(data), work / name, options, lr=lr)
    _sync()
    primary = METRIC_KEYS[task.metric].record
    return {
        "task": task.id,
        "amp": amp,
        "losses": timer.losses,
        "train_s": timer.train,
        "val_s": timer.val,
        "wall_s": wall,
        "iterations": outcome.iterations,
        "epochs_run": outcome.epochs_run,
        "val_loss": outcome.val.get("loss"),
        "val_metric": outcome.val.get(primary),
        "test_metric": outcome.test.get(primary),
        "val": outcome.val,
        "test": outcome.test,
        "feature_cache": outcome.feature_cache,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
    }


def check_runs(cfg: dict, data: Path, work: Path, amp: bool, cache_root: Path | None) -> dict:
    """The short run of each head type (see the module docstring); ``cache_root`` None: linear uncached."""
    from tasks.registry import get_task

    out = {}
    for head, task_id in CHECK_TASKS.items():
        task = get_task(task_id)
        task = replace(task, patience=cfg["check_epochs"] + 1)
        if task.warmup_steps:
            task = replace(task, warmup_steps=2)  # the encoder trains after 2 steps of the short run
        cache = cache_root / ("amp" if amp else "fp32") if (cache_root and task.frozen) else None
        out[head] = one_run(
            task,
            cfg,
            data,
            work,
            f"check-{head}-{'amp' if amp else 'fp32'}-{cfg['device']}",
            amp=amp,
            cache=cache,
            max_epochs=cfg["check_epochs"],
            batch_size=cfg["check_batch"],
            train_limit=cfg["check_images"],
        )
    return out


def compare(device_run: dict, reference: dict, tol: dict) -> list[str]:
    """Problems of a device run against the CPU reference (empty: within tolerance)."""
    problems = []
    values = device_run["losses"] + [device_run["val_loss"], device_run["val_metric"], device_run["test_metric"]]
    if any(v is None or not math.isfinite(v) for v in values) or not device_run["losses"]:
        problems.append(f"non-finite or missing losses / metrics: {values}")
        return problems

    def rel(a, b):
        return abs(a - b) / max(abs(b), 1e-8)

    first = rel(device_run["losses"][0], reference["losses"][0])
    if first > tol["first_loss_rel"]:
        problems.append(f"first training loss differs by {first:.2e} (relative; tolerance {tol['first_loss_rel']})")
    val = rel(device_run["val_loss"], reference["val_loss"])
    if val > tol["val_loss_rel"]:
        problems.append(f"validation loss differs by {val:.2e} (relative; tolerance {tol['val_loss_rel']})")
    for key in ("val_metric", "test_metric"):
        d = abs(device_run[key] - reference[key])
        if d > tol["metric_abs"]:
            problems.append(f"{key} differs by {d:.4f} (tolerance {tol['metric_abs']})")
    return problems


class _CheckpointTimer:
    """Seconds of each ``CheckpointHook.after_val_epoch`` (the best checkpoint written when validation
    improves): a cost per epoch, not per image, kept apart from the validation pass it follows."""

    def __init__(self):
        self.seconds: list[float] = []

    def __enter__(self):
        from mmengine.hooks import CheckpointHook

        from bench.common import _sync

        self.real = real = CheckpointHook.after_val_epoch
        seconds = self.seconds

        def timed(hook, runner, metrics=None):
            _sync()
            t = time.perf_counter()
            real(hook, runner, metrics)
            seconds.append(time.perf_counter() - t)

        CheckpointHook.after_val_epoch = timed
        return self

    def __exit__(self, *exc):
        from mmengine.hooks import CheckpointHook

        CheckpointHook.after_val_epoch = self.real


def speed_run(cfg, data, work, head, frozen, batch, amp) -> dict:
    """Throughput of one (head, encoder mode, batch, precision) at ``cfg['speed_epochs']`` epochs."""
    import statistics

    from tasks.prepare import load_manifest, prepared_dir
    from tasks.registry import get_task

    task = replace(get_task(SPEED_TASKS[(head, frozen)]), patience=cfg["speed_epochs"] + 1)
    name = f"speed-{head}-{'frozen' if frozen else 'finetune'}-b{batch}-{'amp' if amp else 'fp32'}"
    cache = work / f"cache-{name}" if frozen else None
    with _CheckpointTimer() as checkpoints:
        r = one_run(
            task,
            cfg,
            data,
            work,
            name,
            amp=amp,
            cache=cache,
            max_epochs=cfg["speed_epochs"],
            batch_size=batch,
            train_limit=cfg["speed_images"],
        )
    iters_per_epoch = r["iterations"] // max(r["epochs_run"], 1)
    train_images = iters_per_epoch * batch
    subsets = load_manifest(prepared_dir(data, task.dataset, cfg["size"]))["subsets"]  # images per subset
    n_val, n_test = subsets["val"], subsets["test"]
    n_train_all = min(subsets["train"], cfg["speed_images"])
    later = slice(1, None) if len(r["train_s"]) > 1 else slice(None)  # the first epoch warms up
    ckpt = checkpoints.seconds + [0.0] * (len(r["val_s"]) - len(checkpoints.seconds))
    train_s = statistics.median(r["train_s"][later])
    val_s = statistics.median([v - c for v, c in zip(r["val_s"], ckpt)][later])
    checkpoint_s = max(ckpt)  # one save; the projection counts one every epoch (an upper bound)
    cache_s = (r["feature_cache"] or {}).get("seconds", 0.0) if frozen else 0.0
    val_per_image = val_s / n_val
    overhead = r["wall_s"] - sum(r["train_s"]) - sum(r["val_s"]) - cache_s - n_test * val_per_image
    out = {
        "task": task.id,
        "head": head,
        "frozen": frozen,
        "batch": batch,
        "amp": amp,
        "train_images_per_epoch": train_images,
        "val_images": n_val,
        "train_images_per_s": train_images / train_s,
        "val_images_per_s": n_val / val_s,
        "train_s_per_image": train_s / train_images,
        "val_s_per_image": val_per_image,
        "checkpoint_s": checkpoint_s,
        "overhead_s": max(overhead, 0.0),
        "peak_gpu_gib": r["peak_gpu_gib"],
        "wall_s": r["wall_s"],
        "epochs_s": [round(t + v, 3) for t, v in zip(r["train_s"], r["val_s"])],
        "losses_finite": all(math.isfinite(v) for v in r["losses"]),
    }
    if frozen:
        built = n_train_all + n_val + n_test
        out["cache_s_per_image"] = cache_s / built
        out["cache_build_images_per_s"] = built / cache_s if cache_s else None
        out["cache_built"] = (r["feature_cache"] or {}).get("built")
    return out


def torchrun_check(cfg: dict, data: Path, work: Path) -> dict:
    """``torchrun -m benchmark.cli evaluate --launcher pytorch`` over every GPU (2 gloo processes on CPU)."""
    import torch

    nproc = torch.cuda.device_count() if cfg["device"] == "cuda" else 2
    out = work / "torchrun"
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
    if cfg["device"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun) if torchrun.exists() else sys.executable, *([] if torchrun.exists() else ["-m", "torch.distributed.run"])]
    cmd += ["--nproc-per-node", str(nproc), "--master-port", str(29500 + os.getpid() % 1000)]
    cmd += ["-m", "benchmark.cli", "evaluate", "--backbone", cfg["backbone"], "--tasks", "rsna_yolov3_finetune_100"]
    cmd += ["--data", str(data), "--out", str(out), "--size", str(cfg["size"]), "--device", cfg["device"]]
    cmd += ["--max-epochs", "1", "--train-limit", str(2 * nproc * 2), "--batch-size", str(2 * nproc)]
    cmd += ["--seeds", "1", "--no-lr-search", "--launcher", "pytorch", "--quiet"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=repo)
    from benchmark.runs.records import iter_records

    records = list(iter_records(out)) if (out / "runs").is_dir() else []
    ok = proc.returncode == 0 and len(records) == 1 and records[0]["status"] == "ok" and records[0]["world_size"] == nproc
    return {
        "ok": ok,
        "nproc": nproc,
        "returncode": proc.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "record_status": records[0]["status"] if records else None,
        "world_size": records[0].get("world_size") if records else None,
        "output_tail": "" if ok else (proc.stdout + proc.stderr)[-3000:],
    }


def reference_child(cfg_path: str) -> int:
    """The CPU reference of the check runs (a subprocess: CUDA is hidden before torch starts)."""
    cfg = json.loads(Path(cfg_path).read_text())
    ref = check_runs(dict(cfg, device="cpu"), Path(cfg["data"]), Path(cfg["work"]), False, None)
    Path(cfg["reference_out"]).write_text(json.dumps(ref))
    return 0


# --- main -----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (ResNet-18, 64 px, small batches): CPU tests")
    p.add_argument("--out", required=True, help="folder for gpu_check.json")
    p.add_argument("--work", default=None, help="keep the generated data and runs here (default: temporary)")
    p.add_argument("--backbone", default=None, help="default resnet50.random (--tiny: resnet18.random)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="skip the throughput runs still to do after this many seconds (default: 420 on CUDA, none on CPU)",
    )
    p.add_argument(
        "--best-epoch-fraction",
        type=float,
        default=0.25,
        help="the estimate's assumption: the best validation epoch at this fraction of the maximum",
    )
    p.add_argument("--no-amp", action="store_true", help="float32 only (AMP needs CUDA: always off on CPU)")
    p.add_argument("--reference-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.reference_child:
        return reference_child(args.reference_child)
    started = time.perf_counter()
    budget_s = args.budget_s if args.budget_s is not None else (420 if args.device == "cuda" else math.inf)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # as `cxrbench --device cpu`: mmengine uses CUDA when it sees it
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device (see `cxrbench doctor`)", file=sys.stderr)
        return 2
    from bench.common import machine, today

    tiny = args.tiny
    batch_map = TINY_BATCHES if tiny else {b: b for b in BATCHES}
    cfg = {
        "device": args.device,
        "backbone": args.backbone or ("resnet18.random" if tiny else "resnet50.random"),
        "size": 64 if tiny else 224,
        "check_epochs": 2,
        "check_batch": 2 if tiny else 4,
        "check_images": 4 if tiny else 16,
        "speed_epochs": 2 if tiny else 3,
        "speed_images": 8 if tiny else 256,
    }
    precisions = [False] + ([] if args.no_amp or args.device == "cpu" else [True])
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="cxrbench-gpu-"))
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    report: dict = {
        "date": today(),
        "machine": machine(),
        "gpu": gpu,
        "gpus": torch.cuda.device_count() if args.device == "cuda" else 0,
        "config": cfg,
        "tiny": tiny,
        "tolerance": TOLERANCE,
        "problems": [],
        "skipped": [],
    }
    problems = report["problems"]

    def save() -> None:  # after every step: a run stopped at a time limit still leaves its figures
        report["wall_s"] = round(time.perf_counter() - started, 1)
        report["ok"] = not problems
        (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))

    _log(f"GPU check, {today()}, {gpu or 'CPU'}, {machine()}, {cfg['backbone']} at {cfg['size']} px")
    try:
        # 1. doctor
        from benchmark.doctor import collect

        doctor = collect()
        report["doctor"] = {k: doctor.get(k) for k in ("ok", "problems", "nms_provider", "nms_check", "cuda_devices")}
        if not doctor["ok"]:
            problems += [f"doctor: {d}" for d in doctor["problems"]]
        if args.device == "cuda" and "cuda" not in (doctor.get("nms_check") or {}):
            problems.append("doctor: NMS was not checked on CUDA")
        _log(f"[doctor] {'OK' if doctor['ok'] else 'PROBLEMS'}; NMS: {doctor.get('nms_check')}")

        save()
        # 2.-3. checks against the CPU reference (computed in a subprocess meanwhile)
        data = make_data(work, tiny, cfg["size"])
        _log(f"[data] fake RSNA and COVID Rural prepared at {cfg['size']} px ({time.perf_counter() - started:.0f} s)")
        child_cfg = work / "reference.json"
        child_cfg.write_text(
            json.dumps(dict(cfg, data=str(data), work=str(work / "reference"), reference_out=str(work / "ref-out.json")))
        )
        repo = Path(__file__).resolve().parents[1]
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
        if args.device == "cuda":  # the CPU reference runs while the GPU works, on half the cores
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // 2))
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.gpu", "--out", str(work), "--reference-child", str(child_cfg)],
            env=env,
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        child_output = None
        if args.device == "cpu":  # two processes on the same cores would oversubscribe them
            child_output = child.communicate()[0]
        cache_root = work / "check-cache"
        device_runs = {("amp" if amp else "float32"): check_runs(cfg, data, work, amp, cache_root) for amp in precisions}
        if child_output is None:
            child_output = child.communicate()[0]
        if child.returncode != 0:
            raise RuntimeError(f"the CPU reference failed:\n{child_output[-3000:]}")
        reference = json.loads((work / "ref-out.json").read_text())
        report["checks"] = {}
        for precision, runs in device_runs.items():
            for head, run in runs.items():
                found = compare(run, reference[head], TOLERANCE[precision])
                report["checks"][f"{head}-{precision}"] = {
                    "ok": not found,
                    "problems": found,
                    "device": {k: run[k] for k in ("losses", "val_loss", "val_metric", "test_metric")},
                    "cpu": {k: reference[head][k] for k in ("losses", "val_loss", "val_metric", "test_metric")},
                }
                problems += [f"{head} ({precision}) vs CPU: {f}" for f in found]
                _log(
                    f"[check] {head:<6} {precision:<7} first loss {run['losses'][0]:.5g} (CPU {reference[head]['losses'][0]:.5g}), "
                    f"val loss {run['val_loss']:.5g} ({reference[head]['val_loss']:.5g}), val metric "
                    f"{run['val_metric']:.4f} ({reference[head]['val_metric']:.4f}): {'OK' if not found else '; '.join(found)}"
                )
        # the linear check built its cache entries on the device; a second learning rate must reuse them
        from tasks.registry import get_task

        built = device_runs["float32"]["linear"]["feature_cache"] or {}
        again = one_run(
            get_task(CHECK_TASKS["linear"]),
            cfg,
            data,
            work,
            "check-linear-cache-reuse",
            cache=cache_root / "fp32",
            lr=3e-3,
            max_epochs=1,
            batch_size=cfg["check_batch"],
            train_limit=cfg["check_images"],
        )
        reused = again["feature_cache"] or {}
        cache_ok = bool(built.get("used")) and sorted(built.get("built", [])) and not reused.get("built") and len(reused.get("reused", [])) == 3
        report["feature_cache"] = {"ok": bool(cache_ok), "first": {k: built.get(k) for k in ("built", "reused", "size", "seconds")}, "second": {k: reused.get(k) for k in ("built", "reused", "size", "seconds")}}
        if not cache_ok:
            problems.append(f"feature cache on {args.device}: first run {built.get('built')}, second {reused}")
        _log(f"[cache] built {built.get('built')} ({built.get('size')}), then reused {reused.get('reused')}: {'OK' if cache_ok else 'FAILED'}")

        save()
        # 4. torchrun
        tr = torchrun_check(cfg, data, work)
        report["torchrun"] = tr
        if not tr["ok"]:
            problems.append(f"torchrun with {tr['nproc']} process(es) failed: {tr['output_tail']}")
        _log(f"[torchrun] {tr['nproc']} process(es): record {tr['record_status']}, world size {tr['world_size']} ({tr['seconds']} s): {'OK' if tr['ok'] else 'FAILED'}")

        save()
        # 5. throughput
        speeds = {}
        for amp in precisions:
            for head, frozen in MODES:
                for measured in sorted(set(batch_map.values())):
                    label = f"{head} {'frozen' if frozen else 'finetune'} batch {measured} {'amp' if amp else 'fp32'}"
                    if time.perf_counter() - started > budget_s:
                        report["skipped"].append(label)
                        continue
                    s = speed_run(cfg, data, work, head, frozen, measured, amp)
                    speeds[(head, frozen, measured, amp)] = s
                    report["throughput"] = [dict(v) for v in speeds.values()]
                    save()
                    if not s["losses_finite"]:
                        problems.append(f"throughput run {label}: non-finite loss")
                    mem = f", peak GPU memory {s['peak_gpu_gib']:.2f} GiB" if s["peak_gpu_gib"] is not None else ""
                    cache = f", cache build {s['cache_build_images_per_s']:.0f} img/s" if s.get("cache_build_images_per_s") else ""
                    _log(f"[speed] {label:<34} train {s['train_images_per_s']:8.1f} img/s, val {s['val_images_per_s']:8.1f} img/s{cache}, overhead {s['overhead_s']:.1f} s/run{mem}")
        report["throughput"] = [dict(v) for v in speeds.values()]

        save()
        # 6. projection
        report["projection"] = {}
        for amp in precisions:
            mine = {(h, f, b): v for (h, f, b, a), v in speeds.items() if a == amp}
            precision = "amp" if amp else "float32"
            needed = {(h, f, batch_map[b]) for h, f in MODES for b in BATCHES}
            if not needed <= set(mine):
                _log(f"[projection] {precision}: not all throughput runs were measured (--budget-s), no projection")
                continue
            proj = project(mine, batch_map, args.best_epoch_fraction)
            report["projection"][precision] = proj
            up, est = proj["upper_s"] / 3600, proj["estimate_s"] / 3600
            where = f"{gpu}" if gpu else "CPU"
            verdict = "meets" if up <= GOAL_HOURS else ("estimate meets" if est <= GOAL_HOURS else "misses")
            _log(
                f"[projection] the {proj['trainings']} trainings of {cfg['backbone']} at {cfg['size']} px on "
                f"{where}, {precision}: {up:.2f} h with every run to its max epochs (upper bound), {est:.2f} h "
                f"estimated (each run stops `patience` epochs after a best epoch at "
                f"{args.best_epoch_fraction:.0%} of its max), incl. {proj['cache_builds']} feature-cache builds "
                f"({proj['cache_build_s'] / 3600:.2f} h): {verdict} the {GOAL_HOURS:g}-hour goal"
                + ("" if not tiny else " (--tiny: sizes of a test, not a projection of the protocol)")
            )
    except Exception as e:
        import traceback

        problems.append(f"{type(e).__name__}: {e}")
        report["traceback"] = traceback.format_exc()
        _log(report["traceback"])
    finally:
        save()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    for problem in problems:
        _log(f"PROBLEM: {problem}")
    _log(f"GPU check {'OK' if not problems else 'FAILED'} in {report['wall_s']:.0f} s -> {out_dir / 'gpu_check.json'}")
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
