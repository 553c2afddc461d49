"""Raw dataset -> prepared dataset in standard layouts that stock OpenMMLab classes read.

Prepared layout (``OUT/<dataset>/`` at 224 px, ``OUT/<dataset>-<size>px/`` otherwise)::

    images/<image_id>.png            uint8 grey-scale, padded to a centred square, resized
    masks/<image_id>.png             class index per pixel (0 = background)
    masks/<class>/<image_id>.png     multi-label datasets: one binary mask per class
    annotations/<subset>.json        COCO detection files, boxes in prepared pixels
    annotations/<subset>.txt         image ids of the subset (mmseg ann_file)
    splits.csv                       image_id, patient_id, split, fraction
    stats.json                       mean / std (on [0, 1]) of each training subset, over the equalised
                                     images before padding and resizing (as the reference code)
    manifest.json                    counts found vs the official release, failures, split hash, versions

Subsets are ``train`` (all training images), ``train_<f>pct`` for each smaller label fraction, ``val``,
``test``. Preparation is resumable (finished images are skipped), runs in parallel worker processes,
never writes into the raw folder, and goes on past broken inputs, listing every failure at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cxrcore.io import save_png_atomic, write_json_atomic, write_text_atomic
from tasks.datasets import RawDataset, get_dataset
from tasks.errors import DatasetError, Failure, OutputError, SampleError
from tasks.image import Geometry, equalize, prepare_image, prepare_mask
from tasks.splits import split_csv_text, split_hash, subset

STATE_FILE = ".prepare_state.jsonl"
# what stats.json's mean / std are over (runs refuse a stats.json without it: an older prepare took them on
# the padded, resized square, which shifts non-square datasets' inputs by a fraction of a standard deviation)
STATS_DEFINITION = "per-image mean/var of the equalised original before padding, pooled as the reference code"
DEFAULT_SIZE = 224
MIN_IMAGE_SIDE = 32  # px; a smaller image (a 1 x 1 thumbnail, a 1 x 70000 line) is no chest X-ray


def prepared_dir(data_root: str | os.PathLike, dataset: str, size: int = DEFAULT_SIZE) -> Path:
    """Where ``prepare`` writes a dataset under a data root."""
    root = Path(data_root)
    return root / dataset if size == DEFAULT_SIZE else root / f"{dataset}-{size}px"


def check_manifest(manifest: dict, path, dataset: str, size: int, source: dict | None = None) -> None:
    """Raise :class:`DatasetError` unless the manifest at ``path`` says the folder holds ``dataset`` at
    ``size`` written by ``source`` (``None``: only the kind a name implies - a built-in dataset name is
    written by the built-in reader, any other name by a task file). For a manifest written before the
    source was recorded, the kind its dataset name implies is compared."""
    from tasks.datasets import DATASETS

    def implied(name) -> dict:
        return {"kind": "built-in" if name in DATASETS else "task file"}

    found = manifest.get("source")
    if not isinstance(found, dict):
        found = implied(manifest.get("dataset"))
        source = {"kind": (source or implied(dataset))["kind"]}
    elif source is None:
        source, found = implied(dataset), {"kind": found.get("kind")}
    problems = []
    if manifest.get("dataset") != dataset:
        problems.append(f"dataset {manifest.get('dataset')!r}, not {dataset!r}")
    if manifest.get("size") != size:
        problems.append(f"size {manifest.get('size')!r}, not {size}")
    if found != source:
        problems.append(f"source {found}, not {source}")
    if problems:
        raise DatasetError(
            f"{Path(path) / 'manifest.json'}: this prepared folder holds " + "; ".join(problems)
            + ": it was written by something else under the same folder name. Prepare into another --out / "
            "--data root, or remove the folder and prepare again"
        )


def subset_names(fractions) -> list[str]:
    return ["train"] + [f"train_{f}pct" for f in sorted(fractions) if f < 100] + ["val", "test"]


@dataclass
class PrepareReport:
    out_dir: Path
    prepared: int
    resumed: int
    failures: list[Failure] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)


def _process_one(ds: RawDataset, sample: dict, out_dir: str, size: int) -> dict:
    """Decode, equalise per protocol, pad, resize and write one image and its mask (worker process)."""
    try:
        pixels = ds.load_pixels(sample)
        height, width = pixels.shape
        if min(height, width) < MIN_IMAGE_SIDE:
            raise SampleError(
                sample["file"],
                "image size",
                f"{width}x{height} px; an image must be at least {MIN_IMAGE_SIDE} px on each side",
                sample["image_id"],
            )
        geometry = Geometry(height, width, size)
        small = ds.prepared_mask(sample, geometry)
        if small is None:
            mask = ds.load_mask(sample, height, width)
            if mask is not None and mask.shape[-2:] != (height, width):
                raise SampleError(
                    sample.get("mask_file") or sample["file"],
                    "mask",
                    f"mask is {mask.shape[-1]}x{mask.shape[-2]} but the image is {width}x{height}",
                    sample["image_id"],
                )
            small = prepare_mask(mask, size) if mask is not None else None
        for k, box in enumerate(sample.get("boxes") or [], start=1):
            x, y, w, h = (float(v) for v in box)
            if x >= width or y >= height or x + w <= 0 or y + h <= 0:
                # the label does not belong to this image; dropping the box would count the image wrongly
                raise SampleError(
                    sample["file"],
                    f"box {k}",
                    f"[x, y, w, h] = [{x:g}, {y:g}, {w:g}, {h:g}] lies entirely outside the {width}x{height} image",
                    sample["image_id"],
                )
        if ds.equalize:
            pixels = equalize(pixels)
        # the normalisation statistics are taken here, on the equalised original before padding and
        # resizing, as the reference code does (philip-mueller/lovt, each dataset's ``process_image``:
        # ``pixel_mean = img.mean(); pixel_var = img.var()`` on the [0, 1] image; see ``_stats``)
        pixel_mean = float(np.mean(pixels, dtype=np.float64))
        pixel_var = float(np.var(pixels, dtype=np.float64))
        image = prepare_image(pixels, size)
        out = Path(out_dir)
        image_id = sample["image_id"]
        try:
            if small is not None:
                if small.ndim == 3:
                    for name, m in zip(ds.classes, small):
                        save_png_atomic(out / "masks" / name / f"{image_id}.png", m)
                else:
                    save_png_atomic(out / "masks" / f"{image_id}.png", small)
            save_png_atomic(out / "images" / f"{image_id}.png", image)  # last: its presence marks completion
        except OSError as e:  # the output's fault, not the input's: the whole run stops (see OutputError)
            return {"image_id": image_id, "output_error": f"cannot write under {out}: {type(e).__name__}: {e}"}
        return {
            "image_id": image_id,
            "height": int(height),
            "width": int(width),
            "pixel_mean": pixel_mean,
            "pixel_var": pixel_var,
        }
    except SampleError as e:
        return {"image_id": sample["image_id"], "failure": e.failure.to_dict()}
    except Exception as e:  # anything else still names the file and keeps the run going
        return {
            "image_id": sample["image_id"],
            "failure": Failure(
                sample["file"], "image", f"{type(e).__name__}: {e}", sample["image_id"]
            ).to_dict(),
        }


def _isolated_one(conn, ds: RawDataset, sample: dict, out_dir: str, size: int) -> None:
    conn.send(_process_one(ds, sample, out_dir, size))
    conn.close()


def _process_isolated(ds: RawDataset, todo: list[dict], out_dir: str, size: int, workers: int):
    """Each image in a process of its own, ``workers`` at a time; yields one result per image. A process
    that dies without a result (SIGKILL from the out-of-memory killer, a crash in a decoder) fails only
    its image. Used for what is left when a worker of the shared pool died, so the culprit is found."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    pending, running = list(reversed(todo)), {}
    while pending or running:
        while pending and len(running) < max(1, workers):
            sample = pending.pop()
            recv, send = mp.Pipe(duplex=False)
            proc = mp.Process(target=_isolated_one, args=(send, ds, sample, out_dir, size), daemon=True)
            proc.start()
            send.close()
            running[recv] = (proc, sample)
        for recv in wait(list(running)):  # a result, or EOF when the process died first
            proc, sample = running.pop(recv)
            try:
                result = recv.recv()
            except (EOFError, OSError):
                result = None
            recv.close()
            proc.join()
            if result is None:
                code = proc.exitcode
                how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                result = {
                    "image_id": sample["image_id"],
                    "failure": Failure(
                        sample["file"],
                        "image",
                        f"the process preparing it died ({how}; SIGKILL is what the out-of-memory killer "
                        "sends): the image may need more memory than is free; retry with fewer --workers",
                        sample["image_id"],
                    ).to_dict(),
                }
            yield result


def _check_writable(out: Path) -> None:
    """Raise :class:`OutputError` unless files can be created in ``out`` (made if missing)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(
            f"cannot write the prepared dataset to {out} ({type(e).__name__}: {e.strerror or e}): "
            "choose a writable --out folder"
        ) from e


def _sample_key(sample: dict) -> str:
    """What an image's prepared files depend on: its label record and the size and modification time of
    its files, so that a resumed run redoes an image whose labels or files changed."""
    parts = [json.dumps(sample, sort_keys=True, default=str)]
    for path in (sample.get("file"), sample.get("mask_file")):
        if isinstance(path, str):
            try:
                st = os.stat(path)
                parts.append(f"{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                parts.append("missing")
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def _load_state(out: Path) -> dict[str, dict]:
    state: dict[str, dict] = {}
    path = out / STATE_FILE
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption: that image is simply redone
            # an image prepared before its pixel statistics were recorded is redone (its stats are needed)
            if "pixel_var" in rec and (out / "images" / f"{rec['image_id']}.png").exists():
                state[rec["image_id"]] = rec
    return state


def _coco(ids: list[str], info: dict[str, dict], samples_by_id: dict[str, dict], ds, size: int) -> dict:
    images, annotations = [], []
    for n, image_id in enumerate(ids, start=1):
        images.append(
            {"id": n, "file_name": f"{image_id}.png", "width": size, "height": size, "image_id": image_id}
        )
        g = Geometry(info[image_id]["height"], info[image_id]["width"], size)
        for ann in ds.coco_annotations(samples_by_id[image_id], g):
            annotations.append({"id": len(annotations) + 1, "image_id": n, **ann})
    categories = [{"id": i + 1, "name": c} for i, c in enumerate(ds.classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _stats(info: dict[str, dict], ids: list[str]) -> dict:
    """Normalisation statistics of a subset, as the reference code computes them (philip-mueller/lovt
    ``src/data/datasets/processing_utils.py``, ``compute_detection_dataset_stats``): the mean of the images'
    means, and the mean of their variances plus the variance of their means (population), each image taken
    at its original resolution after equalisation and before padding. Every image weighs the same, whatever
    its size; for images of one size this is the pooled pixel mean / std."""
    if not ids:
        return {"mean": None, "std": None, "n_images": 0, "definition": STATS_DEFINITION}
    means = np.array([info[i]["pixel_mean"] for i in ids], dtype=np.float64)
    variances = np.array([info[i]["pixel_var"] for i in ids], dtype=np.float64)
    var = float(np.mean(variances) + np.var(means))
    return {
        "mean": float(np.mean(means)),
        "std": float(np.sqrt(max(var, 0.0))),
        "n_images": len(ids),
        "definition": STATS_DEFINITION,
    }


def _versions() -> dict:
    import pydicom
    import skimage

    import tasks

    return {
        "cxrbench": tasks.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pydicom": pydicom.__version__,
        "scikit-image": skimage.__version__,
        "pillow": Image.__version__,
    }


def prepare(
    dataset: str | RawDataset,
    raw: str | os.PathLike | None,
    out_root: str | os.PathLike,
    size: int = DEFAULT_SIZE,
    workers: int = 1,
    progress: bool = True,
    splits: str = "default",
) -> PrepareReport:
    """Prepare one dataset (see module docstring). Failures are returned in the report, not raised.

    Args:
        dataset: a dataset name (read from ``raw``) or a dataset object (a custom task's, which knows its
            files; ``raw`` is then ignored).
        splits: ``default`` (the protocol's deterministic split, see ``RawDataset.split``) or
            ``lovt:DIR`` (the published split files of the reference code, see ``tasks.lovt``).

    Raises:
        DatasetLayoutError: the raw folder is not the official layout (nothing can be prepared), or the
            split files cannot be found / have the wrong header.
        OutputError: the output folder cannot be written.
    """
    ds = dataset if isinstance(dataset, RawDataset) else get_dataset(dataset)(raw)
    dataset = ds.name
    out = prepared_dir(out_root, dataset, size).resolve()
    if out == ds.root or ds.root in out.parents:
        raise DatasetError(
            f"refusing to write into the raw dataset folder {ds.root}: choose --out outside it"
        )
    if (out / "manifest.json").exists():  # never overwrite what another dataset / size / task file wrote
        check_manifest(load_manifest(out), out, dataset, size, ds.source())
    started = time.time()
    parsed = ds.parse()
    samples = parsed.samples
    failures = list(parsed.failures)

    split_info: dict = {}
    if splits == "default":
        table, scheme = ds.split(samples)
    elif splits.startswith("lovt:") and len(splits) > 5:
        from tasks.lovt import import_lovt_splits

        imported = import_lovt_splits(splits[5:], ds, samples)
        table, scheme, split_info = imported.table, imported.scheme, imported.info
        failures.extend(imported.failures)
    else:
        raise DatasetError(f"--splits must be 'default' or 'lovt:DIR', got {splits!r}")
    _check_writable(out)
    write_text_atomic(out / "splits.csv", split_csv_text(table))

    state = _load_state(out)
    in_split = set(table["image_id"])
    records = [r for r in samples.to_dict("records") if r["image_id"] in in_split]
    keys = {r["image_id"]: _sample_key(r) for r in records}
    todo = [r for r in records if state.get(r["image_id"], {}).get("key") != keys[r["image_id"]]]
    resumed = len(records) - len(todo)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(records), initial=resumed, desc=f"prepare {dataset}", unit="img")
    prepared_now = 0
    with open(out / STATE_FILE, "a") as state_file:

        def collect(result: dict) -> None:
            nonlocal prepared_now
            if "output_error" in result:
                raise OutputError(result["output_error"])
            if "failure" in result:
                failures.append(Failure(**result["failure"]))
                state.pop(result["image_id"], None)  # an earlier success is stale now
            else:
                prepared_now += 1
                result["key"] = keys[result["image_id"]]
                state[result["image_id"]] = result
                state_file.write(json.dumps(result) + "\n")
                state_file.flush()
            if bar is not None:
                bar.update(1)

        if workers <= 1:
            for r in todo:
                collect(_process_one(ds, r, str(out), size))
        else:
            left = []  # images whose worker pool broke (a worker was killed) before they were done
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(_process_one, ds, r, str(out), size): r for r in todo}
                try:
                    for fut in as_completed(futures):
                        try:
                            result = fut.result()
                        except BrokenProcessPool:
                            left.append(futures[fut])
                            continue
                        collect(result)
                except OutputError:
                    pool.shutdown(wait=True, cancel_futures=True)  # nothing more can be written
                    raise
            for result in _process_isolated(ds, left, str(out), size, workers):
                collect(result)
    if bar is not None:
        bar.close()

    samples_by_id = {r["image_id"]: r for r in records}
    ok = set(state) & in_split
    subsets: dict[str, list[str]] = {}
    for name in subset_names(ds.fractions):
        split, fraction = ("train", int(name[6:-3])) if name.startswith("train_") else (name, 100)
        subsets[name] = [i for i in subset(table, split, fraction) if i in ok]
    (out / "annotations").mkdir(exist_ok=True)
    for name, ids in subsets.items():
        write_text_atomic(out / "annotations" / f"{name}.txt", "".join(f"{i}\n" for i in ids))
        write_json_atomic(
            out / "annotations" / f"{name}.json",
            _coco(ids, state, samples_by_id, ds, size),
            indent=None,
        )
    stats = {name: _stats(state, ids) for name, ids in subsets.items() if name.startswith("train")}
    write_json_atomic(out / "stats.json", stats)

    counts = dict(parsed.counts)
    counts["prepared_images"] = len(ok)
    manifest = {
        "dataset": dataset,
        "title": ds.title,
        "size": size,
        "source": ds.source(),
        "classes": list(ds.classes),
        "multi_label": ds.multi_label,
        "equalized": ds.equalize,
        "fractions": list(ds.fractions),
        "raw_root": str(ds.root),
        "counts": counts,
        "expected_counts": dict(ds.expected),
        "differs_from_release": {
            k: {"found": counts.get(k), "expected": v} for k, v in ds.expected.items() if counts.get(k) != v
        },
        "subsets": {name: len(ids) for name, ids in subsets.items()},
        "split_scheme": scheme,
        "split_hash": split_hash(table),
        "stats_definition": STATS_DEFINITION,
        "split_info": split_info,
        "sources": dict(parsed.sources),
        "failures": [f.to_dict() for f in failures],
        "versions": _versions(),
        "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": round(time.time() - started, 1),
    }
    write_json_atomic(out / "manifest.json", manifest)
    return PrepareReport(
        out_dir=out, prepared=prepared_now, resumed=resumed, failures=failures, manifest=manifest
    )


def _read_json(path: Path, what: str):
    """A prepared dataset's JSON file, or a DatasetError naming it (``what`` says what it should have been)."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: not {what} ({type(e).__name__}: {e}); prepare the dataset again") from e


def load_manifest(prepared: str | os.PathLike) -> dict:
    path = Path(prepared) / "manifest.json"
    if not path.exists():
        raise DatasetError(
            f"{prepared} is not a prepared dataset (no manifest.json): run `cxrbench prepare` first"
        )
    manifest = _read_json(path, "a readable manifest")
    if not isinstance(manifest, dict):
        raise DatasetError(f"{path}: not a manifest (a JSON object expected); prepare the dataset again")
    return manifest


def load_stats(prepared: str | os.PathLike, subset: str) -> dict:
    """The statistics of ``subset`` and of the whole training split from ``stats.json``, checked.

    Returns:
        ``{"n_images": int, "mean": float, "std": float}`` of ``subset``, with ``mean`` / ``std`` those
        of ``train`` (a label fraction normalises with the whole split, see ``benchmark.runs``).

    Raises:
        DatasetError: the file is missing, not JSON, or a field is missing or of the wrong type / range
            (the message names the file and the field), or the statistics are of an older definition (taken
            on the padded square by cxrbench before 0.3; ``cxrbench prepare`` again recomputes them).
    """
    path = Path(prepared) / "stats.json"
    stats = _read_json(path, "readable statistics")

    def entry(name: str) -> dict:
        e = stats.get(name) if isinstance(stats, dict) else None
        if not isinstance(e, dict):
            raise DatasetError(f"{path}: {name}: missing (expected mean, std, n_images); prepare the dataset again")
        n = e.get("n_images")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise DatasetError(f"{path}: {name}.n_images: expected a count, got {n!r}; prepare the dataset again")
        if n:
            for k in ("mean", "std"):
                v = e.get(k)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                    raise DatasetError(
                        f"{path}: {name}.{k}: expected a number in [0, 1], got {v!r}; prepare the dataset again"
                    )
        return e

    norm = entry("train")  # every prepared dataset has it; label fractions normalise with it too
    if norm.get("definition") != STATS_DEFINITION:
        raise DatasetError(
            f"{path}: train.definition: these statistics were taken on the padded square by an older "
            "cxrbench; the protocol takes them on the equalised images before padding. Run `cxrbench prepare` "
            "again for this dataset (it redoes the images once)"
        )
    own = entry(subset)
    return {"n_images": own["n_images"], "mean": norm.get("mean"), "std": norm.get("std")}
