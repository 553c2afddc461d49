"""Bring-your-own tasks: a small TOML / YAML / JSON file declares a detection task over COCO files and an
image folder, or a segmentation task over an image folder and a mask folder, with the head, frozen /
finetune and protocol fields. It is prepared and evaluated exactly like the built-in tasks
(``cxrbench evaluate --tasks my_task.toml``).

Example (``my_task.toml``; relative paths are relative to the file)::

    id = "lesions"                # task id = prepared dataset name (records, leaderboard column)
    head = "yolov3"               # yolov3 | linear | unet
    frozen = true
    metric = "mAP"                # mAP | froc | dice | mean_class_dice (default: mAP / dice by head)
    lr = 1e-3
    lr_grid = [1e-3, 3e-4]
    max_epochs = 50
    patience = 10

    [data]
    format = "coco"               # coco | masks
    images = "images"
    train = "train.json"          # coco: one COCO file per split
    val = "val.json"
    test = "test.json"

For ``format = "masks"``: ``images``, ``masks`` (PNG files named like the images, class index per pixel,
0 = background), ``classes`` (names of the values 1..C), and the split as a CSV ``splits`` (columns
``image_id``, ``split`` in train/val/test, optional ``patient_id``), as id lists ``train``/``val``/``test``
(one image id per line), or nothing (60/20/20 by ``patient_id`` if the CSV gives it, else by image, hashed).
Images may be PNG, JPEG or DICOM; ``equalize = true`` applies the protocol's histogram equalisation.
"""

from __future__ import annotations

import json
import math
import os
import re
import reprlib
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from cxrcore.hashing import sha256_file
from tasks.datasets.base import ParseResult, RawDataset
from tasks.errors import DatasetLayoutError, Failure, SampleError
from tasks.rasterize import boxes_to_mask
from tasks.registry import HEADS, MAX_SIZE, METRICS, TASKS, TaskSpec

TASK_FILE_SUFFIXES = (".toml", ".yaml", ".yml", ".json")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
# TaskSpec fields a task file may set (the rest are derived or fixed by the protocol)
TASK_FIELDS = (
    "id",
    "head",
    "frozen",
    "metric",
    "batch_size",
    "lr",
    "lr_grid",
    "max_epochs",
    "patience",
    "warmup_steps",
    "warmup_lr",
    "weight_decay",
    "plateau_patience",
    "plateau_factor",
    "size",
    "description",
)
DATA_FIELDS = ("format", "images", "train", "val", "test", "masks", "classes", "splits", "equalize")
DEFAULTS = {"frozen": True, "batch_size": 16, "max_epochs": 50, "patience": 10, "lr_grid": ()}


def _text(v) -> str | None:
    return None if isinstance(v, str) and v.strip() else "a non-empty string"


def _boolean(v) -> str | None:
    return None if isinstance(v, bool) else "true or false (a boolean, not a string or number)"


def _integer(low: int, high: int, multiple: int = 1):
    def check(v) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int):
            return f"an integer from {low} to {high}" + (f", a multiple of {multiple}" if multiple > 1 else "")
        if not low <= v <= high or v % multiple:
            return f"from {low} to {high}" + (f" and a multiple of {multiple}" if multiple > 1 else "")
        return None

    return check


def _real(low: float, high: float, low_open: bool = False):
    above = f"> {low:g}" if low_open else f">= {low:g}"

    def check(v) -> str | None:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"a number {above} and <= {high:g}"
        if v != v or not (v > low if low_open else v >= low) or v > high:
            return f"a finite number {above} and <= {high:g}"
        return None

    return check


def _list_of(item, what: str, non_empty: bool = False):
    def check(v) -> str | None:
        if not isinstance(v, list) or (non_empty and not v):
            return f"a {'non-empty ' if non_empty else ''}list of {what}"
        for i, x in enumerate(v):
            if item(x) is not None:
                return f"a list of {what}; item {i + 1} is {x!r}"
        return None

    return check


def _one_of(choices):
    def check(v) -> str | None:
        return None if isinstance(v, str) and v in choices else f"one of {', '.join(choices)}"

    return check


_LR = _real(0.0, 10.0, low_open=True)
# what each field of a task file may hold (type and range); messages name the file and the field
TASK_SCHEMA = {
    "id": _text,
    "head": _one_of(HEADS),
    "frozen": _boolean,
    "metric": _one_of(tuple(METRICS)),
    "batch_size": _integer(1, 4096),
    "lr": _LR,
    "lr_grid": _list_of(_LR, "learning rates (numbers > 0 and <= 10)"),
    "max_epochs": _integer(0, 100_000),
    "patience": _integer(0, 100_000),
    "warmup_steps": _integer(0, 10_000_000),
    "warmup_lr": _LR,
    "weight_decay": _real(0.0, 1.0),
    "plateau_patience": _integer(0, 100_000),
    "plateau_factor": _real(0.0, 1.0, low_open=True),
    "size": _integer(32, MAX_SIZE, multiple=32),
    "description": lambda v: None if isinstance(v, str) else "a string",
}
DATA_SCHEMA = {
    "format": _one_of(("coco", "masks")),
    "images": _text,
    "train": _text,
    "val": _text,
    "test": _text,
    "masks": _text,
    "splits": _text,
    "classes": _list_of(_text, "class names (non-empty strings)", non_empty=True),
    "equalize": _boolean,
}


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 60, 60


def _check_types(path: Path, section: str, data: dict, schema: dict) -> None:
    for key, value in data.items():
        problem = schema[key](value)
        if problem is not None:
            shown = _SHORT.repr(value)  # bounded: a YAML alias bomb is never expanded
            raise TaskFileError(f"{path}: {section}{key} must be {problem}, got {shown}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class TaskFileError(DatasetLayoutError):
    """A task file is missing a field, has an unknown one, or points at missing data."""


def is_task_file(name: str) -> bool:
    return name.lower().endswith(TASK_FILE_SUFFIXES)


def _read(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise TaskFileError(f"{path}: cannot read the task file ({e})") from e
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:
        raise TaskFileError(f"{path}: not valid {path.suffix[1:].upper()} ({e})") from e
    if not isinstance(data, dict):
        raise TaskFileError(f"{path}: expected a table of fields at the top level")
    return data


def _check_keys(path: Path, section: str, data: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise TaskFileError(
            f"{path}: unknown field(s) {', '.join(unknown)} in {section} (known: {', '.join(allowed)})"
        )


@dataclass(frozen=True)
class CustomTask:
    """A task declared in a file: its spec and the dataset that prepares its data."""

    spec: TaskSpec
    dataset: CustomDataset
    path: Path
    sha256: str


def load_task_file(path: str | os.PathLike) -> CustomTask:
    """Read and validate a task file.

    Raises:
        TaskFileError: with the file and the field at fault.
    """
    path = Path(path).expanduser().resolve()
    raw = _read(path)
    data = raw.pop("data", None)
    _check_keys(path, "the task", raw, TASK_FIELDS)
    if not isinstance(data, dict):
        raise TaskFileError(f"{path}: missing the [data] section (format, images, ...)")
    _check_keys(path, "[data]", data, DATA_FIELDS)
    for key in ("id", "head", "lr"):
        if key not in raw:
            raise TaskFileError(f"{path}: missing field '{key}'")
    _check_types(path, "", raw, TASK_SCHEMA)
    _check_types(path, "[data] ", data, DATA_SCHEMA)
    task_id = raw["id"]
    if not (task_id.isascii() and task_id.replace("_", "").replace("-", "").isalnum()) or len(task_id) > 100:
        raise TaskFileError(
            f"{path}: id '{task_id}' must be at most 100 ASCII letters, digits, '_' or '-' (it names folders)"
        )
    from tasks.datasets import DATASETS

    if task_id in TASKS or task_id in DATASETS:
        raise TaskFileError(f"{path}: id '{task_id}' is a built-in task or dataset name; choose another")
    if re.fullmatch(r".*-[0-9]+px", task_id):
        raise TaskFileError(
            f"{path}: id '{task_id}' ends like a prepared folder of another size (NAME-<size>px); choose another"
        )
    head = raw["head"]
    if head not in HEADS:
        raise TaskFileError(f"{path}: head must be one of {', '.join(HEADS)}, got {head!r}")
    fmt = data.get("format")
    if fmt not in ("coco", "masks"):
        raise TaskFileError(f"{path}: [data] format must be 'coco' or 'masks', got {fmt!r}")
    if head == "yolov3" and fmt != "coco":
        raise TaskFileError(f"{path}: a yolov3 task needs boxes: [data] format = 'coco'")
    metric = raw.get("metric", "mAP" if head == "yolov3" else "dice")
    if metric not in METRICS:
        raise TaskFileError(f"{path}: metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if (head == "yolov3") != (metric in ("mAP", "froc")):
        raise TaskFileError(f"{path}: metric {metric!r} does not fit head {head!r}")
    values = {**DEFAULTS, **{k: v for k, v in raw.items() if k != "metric"}}
    values["lr_grid"] = tuple(float(x) for x in values.get("lr_grid") or ())
    values["lr"] = float(values["lr"])
    frozen = bool(values.pop("frozen"))
    try:
        spec = TaskSpec(
            **{k: v for k, v in values.items() if k in {f.name for f in fields(TaskSpec)}},
            number=0,
            dataset=task_id,
            frozen=frozen,
            label_fraction=100,
            metric=metric,
        )
    except (TypeError, ValueError) as e:
        raise TaskFileError(f"{path}: {e}") from e
    dataset = CustomDataset(path, data, task_id)
    return CustomTask(spec, dataset, path, sha256_file(path))


class CustomDataset(RawDataset):
    """The data of a task file, read like an official download (see the module docstring)."""

    fractions = (100,)
    expected: dict[str, int] = {}

    def __init__(self, task_file: Path, data: dict, name: str) -> None:
        self.task_file = Path(task_file)
        base = self.task_file.parent
        self.config = dict(data)
        self.format = data["format"]
        if "images" not in data:
            raise TaskFileError(f"{task_file}: [data] needs 'images' (the image folder)")
        self.images = (base / data["images"]).resolve()
        super().__init__(self.images)
        self.paths = {
            k: (base / data[k]).resolve() for k in ("train", "val", "test", "masks", "splits") if k in data
        }
        self.name = name
        self.title = f"custom task {self.name} ({self.task_file.name})"
        self.url = str(self.task_file)
        self.equalize = bool(data.get("equalize", False))
        if self.format == "coco":
            for k in ("train", "val", "test"):
                if k not in self.paths:
                    raise TaskFileError(f"{task_file}: [data] format 'coco' needs '{k}' (a COCO json file)")
            self.classes = self._coco_classes()
            self.multi_label = False
        else:
            if "masks" not in self.paths:
                raise TaskFileError(f"{task_file}: [data] format 'masks' needs 'masks' (the mask folder)")
            classes = data.get("classes")
            if not classes or not isinstance(classes, list):
                raise TaskFileError(
                    f"{task_file}: [data] format 'masks' needs 'classes' (names of mask values 1..C)"
                )
            self.classes = tuple(str(c) for c in classes)
            # several classes: one sigmoid output and one binary mask per class (the heads' multi-label form)
            self.multi_label = len(self.classes) > 1

    def source(self) -> dict:
        return {"kind": "task file", "task_file": str(self.task_file)}

    def _coco_classes(self) -> tuple[str, ...]:
        cats = None
        for k in ("train", "val", "test"):
            doc = self._coco(k)
            these = [c["name"] for c in sorted(doc["categories"], key=lambda c: c["id"])]
            if not these:
                raise TaskFileError(f"{self.paths[k]}: COCO file has no 'categories'")
            if cats is not None and these != cats:
                raise TaskFileError(
                    f"{self.paths[k]}: categories {these} differ from the other splits' {cats}"
                )
            cats = these
        return tuple(cats)

    def _coco(self, split: str) -> dict:
        """A COCO file, its structure checked (``images`` / ``annotations`` lists of objects, categories
        with integer ids and names); the values of single images and annotations are checked per entry.

        Raises:
            TaskFileError: naming the file and the field.
        """
        path = self.paths[split]
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise TaskFileError(f"{path}: cannot read COCO json ({type(e).__name__}: {e})") from e
        if not isinstance(doc, dict):
            raise TaskFileError(f"{path}: a COCO file is a JSON object (images, annotations, categories)")
        for key in ("images", "annotations"):
            if not isinstance(doc.get(key), list):
                raise TaskFileError(f"{path}: COCO file has no '{key}' list")
            bad = next((i for i, e in enumerate(doc[key]) if not isinstance(e, dict)), None)
            if bad is not None:
                raise TaskFileError(f"{path}: {key}[{bad}] is not an object")
        cats = doc.get("categories", [])
        if not isinstance(cats, list):
            raise TaskFileError(f"{path}: categories must be a list of {{id, name}} objects")
        for i, c in enumerate(cats):
            if not (isinstance(c, dict) and _is_int(c.get("id")) and isinstance(c.get("name"), str)):
                raise TaskFileError(f"{path}: categories[{i}] must be {{\"id\": integer, \"name\": string}}")
        ids = [c["id"] for c in cats]
        if len(set(ids)) != len(ids):
            raise TaskFileError(f"{path}: categories: repeated id")
        return doc

    def check_layout(self) -> None:
        if not self.images.is_dir():
            raise TaskFileError(f"{self.task_file}: [data] images folder {self.images} does not exist")
        for key, p in self.paths.items():
            if not p.exists():
                raise TaskFileError(f"{self.task_file}: [data] {key} {p} does not exist")

    def parse(self) -> ParseResult:
        self.check_layout()
        return self._parse_coco() if self.format == "coco" else self._parse_masks()

    def _parse_coco(self) -> ParseResult:
        rows, failures, split_rows = [], [], []
        for split in ("train", "val", "test"):
            path = self.paths[split]
            doc = self._coco(split)
            cat_index = {c["id"]: i for i, c in enumerate(sorted(doc["categories"], key=lambda c: c["id"]))}
            boxes: dict[int, list] = {}
            for n, ann in enumerate(doc["annotations"]):
                bbox = ann.get("bbox")
                if (
                    not isinstance(bbox, list)
                    or len(bbox) != 4
                    or not all(_is_number(v) for v in bbox)
                    or bbox[2] <= 0
                    or bbox[3] <= 0
                    or not _is_int(ann.get("category_id"))
                    or ann.get("category_id") not in cat_index
                    or not (_is_int(ann.get("image_id")) or isinstance(ann.get("image_id"), str))
                ):
                    failures.append(
                        Failure(
                            str(path),
                            f"annotations[{n}]",
                            f"invalid bbox / category_id: {bbox!r}, {ann.get('category_id')!r}",
                        )
                    )
                    continue
                boxes.setdefault(ann.get("image_id"), []).append(
                    (list(map(float, bbox)), cat_index[ann["category_id"]])
                )
            for n, img in enumerate(doc["images"]):
                name = img.get("file_name")
                if not isinstance(name, str) or not name.strip() or "\x00" in name:
                    failures.append(Failure(str(path), f"images[{n}].file_name", f"not a file name: {name!r}"))
                    continue
                if not (_is_int(img.get("id")) or isinstance(img.get("id"), str)):
                    failures.append(Failure(str(path), f"images[{n}].id", f"not an integer or string: {img.get('id')!r}"))
                    continue
                file = self.images / name
                image_id = Path(name).stem
                if not file.is_file():
                    failures.append(
                        Failure(
                            str(file),
                            f"images[id={img.get('id')}].file_name",
                            "image file not found",
                            image_id,
                        )
                    )
                    continue
                anns = boxes.get(img.get("id"), [])
                rows.append(
                    {
                        "image_id": image_id,
                        "patient_id": str(img.get("patient_id", image_id)),
                        "file": str(file),
                        "boxes": [b for b, _ in anns],
                        "labels": [c for _, c in anns],
                        "mask_source": None,
                        "view": None,
                    }
                )
                split_rows.append((image_id, rows[-1]["patient_id"], split))
        samples = pd.DataFrame(
            rows, columns=["image_id", "patient_id", "file", "boxes", "labels", "mask_source", "view"]
        )
        dupes = samples["image_id"][samples["image_id"].duplicated()].tolist()
        if dupes:
            raise TaskFileError(
                f"{self.task_file}: image file names must be unique across splits; repeated: {', '.join(dupes[:5])}"
            )
        self._split_table = pd.DataFrame(split_rows, columns=["image_id", "patient_id", "split"])
        counts = {"images": len(samples), "boxes": int(sum(len(b) for b in samples["boxes"]))}
        return ParseResult(samples=samples, failures=failures, counts=counts)

    def _parse_masks(self) -> ParseResult:
        files = sorted(p for p in self.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise TaskFileError(f"{self.images}: no images ({', '.join(IMAGE_SUFFIXES)})")
        masks_dir = self.paths["masks"]
        patient: dict[str, str] = {}
        given: dict[str, str] = {}
        if "splits" in self.paths:
            try:
                table = pd.read_csv(self.paths["splits"], dtype=str, keep_default_na=False)
            except Exception as e:  # any unreadable CSV (bad quoting, ragged rows, binary): the file is named
                raise TaskFileError(
                    f"{self.paths['splits']}: cannot read the split CSV ({type(e).__name__}: {e})"
                ) from e
            for col in ("image_id", "split"):
                if col not in table.columns:
                    raise TaskFileError(
                        f"{self.paths['splits']}: missing column '{col}' (image_id, split[, patient_id])"
                    )
            bad = sorted(set(table["split"]) - {"train", "val", "test"})
            if bad:
                raise TaskFileError(
                    f"{self.paths['splits']}: column 'split' must be train/val/test, got {bad}"
                )
            given = dict(zip(table["image_id"], table["split"]))
            if "patient_id" in table.columns:
                patient = dict(zip(table["image_id"], table["patient_id"]))
        else:
            for split in ("train", "val", "test"):
                if split in self.paths:
                    try:
                        text = self.paths[split].read_text()
                    except (OSError, UnicodeDecodeError) as e:
                        raise TaskFileError(
                            f"{self.paths[split]}: cannot read the {split} id list ({type(e).__name__}: {e})"
                        ) from e
                    given.update({line.strip(): split for line in text.splitlines() if line.strip()})
        rows, failures = [], []
        for f in files:
            mask = masks_dir / f"{f.stem}.png"
            if not mask.is_file():
                failures.append(Failure(str(mask), "mask", "no mask PNG for this image", f.stem))
                continue
            if given and f.stem not in given:
                continue  # not in any split
            rows.append(
                {
                    "image_id": f.stem,
                    "patient_id": patient.get(f.stem, f.stem),
                    "file": str(f),
                    "boxes": [],
                    "labels": [],
                    "mask_source": str(mask),
                    "view": None,
                }
            )
        samples = pd.DataFrame(
            rows, columns=["image_id", "patient_id", "file", "boxes", "labels", "mask_source", "view"]
        )
        for image_id in sorted(
            set(given) - set(samples["image_id"]) - {r.image_id for r in failures if r.image_id}
        ):
            failures.append(
                Failure(
                    str(self.paths.get("splits", self.images)),
                    "image_id",
                    "listed in the split but no image file",
                    image_id,
                )
            )
        if given:
            self._split_table = pd.DataFrame(
                {
                    "image_id": samples["image_id"],
                    "patient_id": samples["patient_id"],
                    "split": samples["image_id"].map(given),
                }
            )
        else:
            self._split_table = None
        return ParseResult(samples=samples, failures=failures, counts={"images": len(samples)})

    def split(self, samples: pd.DataFrame) -> tuple[pd.DataFrame, str]:
        from tasks.splits import assign_fractions

        table = getattr(self, "_split_table", None)
        if table is None:
            return super().split(samples)
        table = table[table["image_id"].isin(set(samples["image_id"]))].copy()
        return assign_fractions(table, self.fractions), f"given by {self.task_file.name}"

    def load_pixels(self, sample: dict) -> np.ndarray:
        if sample["file"].lower().endswith(".dcm"):
            from tasks.dicom import read_dicom

            return read_dicom(sample["file"], image_id=sample["image_id"]).pixels
        from tasks.datasets.common import read_grey

        return read_grey(sample["file"], sample["file"], sample["image_id"])

    def load_mask(self, sample: dict, height: int, width: int) -> np.ndarray:
        if self.format == "coco":
            mask = np.zeros((height, width), dtype=np.uint8)
            for box, label in zip(sample["boxes"], sample["labels"]):
                boxes_to_mask([box], height, width, mask=mask, value=label + 1)
            return mask
        from PIL import Image

        path = sample["mask_source"]
        try:
            mask = np.asarray(Image.open(path))
        except Exception as e:
            raise SampleError(path, "mask", f"not a readable PNG ({e})", sample["image_id"]) from e
        if mask.ndim != 2:
            raise SampleError(
                path,
                "mask",
                f"expected a single-channel class-index PNG, got shape {mask.shape}",
                sample["image_id"],
            )
        if mask.shape != (height, width):
            raise SampleError(
                path,
                "mask",
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height}",
                sample["image_id"],
            )
        if int(mask.max()) > len(self.classes):
            raise SampleError(
                path,
                "mask",
                f"value {int(mask.max())} but only {len(self.classes)} classes are declared",
                sample["image_id"],
            )
        if self.multi_label:
            return np.stack([(mask == c + 1).astype(np.uint8) for c in range(len(self.classes))])
        return mask.astype(np.uint8)


def resolve_tasks(selector: str) -> tuple[list[TaskSpec], list[CustomTask]]:
    """Tasks from a comma-separated list of ids, dataset names, ``all`` and task FILES.

    Returns:
        All selected task specs in order, and the custom tasks among them (which need preparing).
    """
    from tasks.registry import select_tasks

    specs: list[TaskSpec] = []
    custom: list[CustomTask] = []
    builtin: list[str] = []

    def flush() -> None:
        if builtin:
            specs.extend(t for t in select_tasks(",".join(builtin)) if t not in specs)
            builtin.clear()

    for part in [p.strip() for p in selector.split(",") if p.strip()]:
        if is_task_file(part):
            flush()
            task = load_task_file(part)
            if task.spec.id in {s.id for s in specs}:
                raise TaskFileError(f"{task.path}: task id '{task.spec.id}' is selected twice")
            custom.append(task)
            specs.append(task.spec)
        else:
            builtin.append(part)
    flush()
    return specs, custom


def prepare_task_files(
    custom: list[CustomTask], data_root: str | os.PathLike, size: int | None = None, progress: bool = True
) -> None:
    """Prepare the datasets of task files under ``data_root`` like built-in datasets (resumable: a second call
    is quick), before they are evaluated; inputs that cannot be used are warned about on stderr.

    Args:
        size: the image side instead of each task file's.

    Raises:
        DatasetError: a task file has no usable training image after preparation.
    """
    from tasks.errors import DatasetError
    from tasks.prepare import prepare

    for c in custom:
        size_c = c.spec.size if size is None else size
        report = prepare(c.dataset, None, data_root, size=size_c, workers=2, progress=progress)
        for f in report.failures:
            print(f"warning: {c.path.name}: {f}", file=sys.stderr)
        if not report.manifest["subsets"].get("train"):
            raise DatasetError(f"{c.path}: no usable training images after preparation")
