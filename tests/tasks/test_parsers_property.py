"""Property-based tests (hypothesis) of every parser that reads user files: RSNA / NIH label rows, SIIM
RLE, the Object-CXR annotation grammar, COCO files and mask folders of custom tasks, and task files.

Whatever the input, a parser either returns well-formed results or raises its documented error naming
the file (per-row problems are failures, never exceptions), within a time and memory bound per input."""

from __future__ import annotations

import json
import math
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tasks.custom import TaskFileError, load_task_file
from tasks.datasets.nih import NIH
from tasks.datasets.object_cxr import parse_annotation
from tasks.datasets.rsna import RSNA
from tasks.errors import DatasetLayoutError
from tasks.prepare import prepare
from tasks.rle import MAX_RLE_VALUE, RLEError, decode_siim_rle, encode_siim_rle, parse_rle

SECONDS = 5.0  # per input, on a shared 2-core machine
PEAK_BYTES = 64e6
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def bounded(fn, *args, **kwargs):
    """Call ``fn``; fail if it took more than SECONDS or allocated more than PEAK_BYTES (Python + numpy)."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert seconds < SECONDS, f"{fn.__name__} took {seconds:.1f} s"
        assert peak < PEAK_BYTES, f"{fn.__name__} peaked at {peak / 1e6:.0f} MB"


# cells: numbers of every kind, near-integers, huge values, unicode digits, CSV specials
NUMBERISH = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "-1", "nan", "inf", "1e400", "²", "٣", "１", "0x10", "1_0", '"', ",", "\n", "\x00"]),
    st.text(max_size=12),
)
CELL = st.one_of(NUMBERISH, st.text(alphabet="abcdef0123456789-", max_size=40))


def csv_line(cells: list[str]) -> str:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf).writerow(cells)
    return buf.getvalue()


# --- SIIM RLE -------------------------------------------------------------------------------------------


@SETTINGS
@given(text=st.one_of(st.text(max_size=200), st.lists(NUMBERISH, max_size=30).map(" ".join)))
def test_parse_rle_any_text(text):
    try:
        pairs = bounded(parse_rle, text)
    except RLEError as e:
        assert str(e)
        return
    assert pairs.dtype == np.int64 and pairs.ndim == 2 and pairs.shape[1] == 2
    assert (pairs[:, 0] >= 0).all() and (pairs[:, 1] > 0).all() and (pairs <= MAX_RLE_VALUE).all()


@SETTINGS
@given(
    pairs=st.lists(st.tuples(st.integers(0, 2**63 - 1), st.integers(1, 2**63 - 1)), max_size=20),
    h=st.integers(1, 64),
    w=st.integers(1, 64),
    encoding=st.sampled_from(["relative", "absolute"]),
)
def test_decode_rle_never_wraps_round(pairs, h, w, encoding):
    arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    try:
        mask = bounded(decode_siim_rle, arr, h, w, encoding)
    except RLEError:
        return
    assert mask.shape == (h, w)
    if encoding == "relative":  # runs never overlap: exactly the lengths are foreground
        assert int(mask.sum()) == int(arr[:, 1].sum())
    assert (arr <= h * w).all()  # nothing beyond the pixel count was accepted


@SETTINGS
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_rle_round_trip(h, w, seed):
    mask = (np.random.default_rng(seed).random((h, w)) < 0.3).astype(np.uint8)
    assert np.array_equal(decode_siim_rle(parse_rle(encode_siim_rle(mask)), h, w), mask)


# --- Object-CXR annotation grammar ----------------------------------------------------------------------

TOKEN = st.one_of(NUMBERISH, st.sampled_from(["0", "1", "2", ";", " ", "  "]))


@SETTINGS
@given(text=st.one_of(st.text(max_size=300), st.lists(TOKEN, max_size=60).map(" ".join)))
def test_object_cxr_annotation_any_text(text):
    try:
        shapes = bounded(parse_annotation, text)
    except ValueError as e:
        assert str(e).startswith("object ")
        return
    for s in shapes:
        assert s["kind"] in ("rectangle", "ellipse", "polygon")
        flat = [v for p in s["points"] for v in p]
        assert all(math.isfinite(v) for v in flat)
        xs, ys = flat[0::2], flat[1::2]
        assert max(xs) > min(xs) and max(ys) > min(ys)


COORD = st.integers(0, 3000)


@SETTINGS
@given(
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from([0, 1]), st.lists(COORD, min_size=4, max_size=4)),
            st.tuples(st.just(2), st.lists(COORD, min_size=6, max_size=20).filter(lambda v: len(v) % 2 == 0)),
        ),
        max_size=6,
    )
)
def test_object_cxr_well_formed_annotations_parse_back(objects):
    text = ";".join(f"{kind} " + " ".join(map(str, values)) for kind, values in objects)
    try:
        shapes = parse_annotation(text)
    except ValueError as e:  # only a degenerate (zero width or height) shape is refused
        assert "zero width or height" in str(e)
        return
    assert [s["kind"] for s in shapes] == [("rectangle", "ellipse", "polygon")[k] for k, _ in objects]
    for s, (_, values) in zip(shapes, objects):
        assert [v for p in s["points"] for v in p] == [float(v) for v in values]


# --- RSNA and NIH label rows ----------------------------------------------------------------------------

ROW = st.lists(CELL, min_size=0, max_size=8)


def _failures_name_the_file(result, files):
    for f in result.failures:
        assert any(f.file.startswith(str(p)) for p in files), f
        assert f.field and f.reason


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(ROW, max_size=25))
def test_rsna_rows(rows):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "stage_2_train_images").mkdir()
        csv = root / "stage_2_train_labels.csv"
        csv.write_text("patientId,x,y,width,height,Target\n" + "".join(csv_line(r) for r in rows))
        try:
            result = bounded(RSNA(root).parse)
        except DatasetLayoutError as e:
            assert str(csv) in str(e)
            return
        _failures_name_the_file(result, [csv, root / "stage_2_train_images"])
        assert len(result.samples) == 0  # no image files: every labelled image is a failure


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bbox=st.lists(ROW, max_size=20), entry=st.lists(ROW, max_size=20))
def test_nih_rows(bbox, entry):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "BBox_List_2017.csv").write_text(
            "Image Index,Finding Label,Bbox [x,y,w,h],,,\n" + "".join(csv_line(r) for r in bbox)
        )
        (root / "Data_Entry_2017_v2020.csv").write_text(
            "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"
            + "".join(csv_line(r) for r in entry)
        )
        (root / "test_list.txt").write_text("".join(f"{r[0]}\n" for r in entry if r and "\n" not in r[0]))
        try:
            result = bounded(NIH(root).parse)
        except DatasetLayoutError as e:
            assert str(root) in str(e)
            return
        _failures_name_the_file(result, [root])


# --- custom tasks: task files, COCO files and mask folders ----------------------------------------------

JSONISH = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text(max_size=10)
    ),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12,
)
TASK_VALUES = st.fixed_dictionaries(
    {"id": st.one_of(st.just("mine"), JSONISH), "head": st.sampled_from(["linear", "unet", "yolov3", 3]), "lr": JSONISH},
    optional={
        k: JSONISH
        for k in ("frozen", "batch_size", "lr_grid", "max_epochs", "patience", "size", "metric", "warmup_steps", "plateau_factor")
    },
)


@SETTINGS
@given(values=TASK_VALUES, data=st.dictionaries(st.sampled_from(["format", "images", "masks", "classes", "equalize"]), JSONISH))
def test_task_files(values, data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "task.json"
        path.write_text(json.dumps({**values, "data": data}))
        try:
            task = bounded(load_task_file, path)
        except TaskFileError as e:
            assert str(e).startswith(str(path))
            return
        spec = task.spec
        assert isinstance(spec.frozen, bool) and isinstance(spec.batch_size, int) and spec.batch_size >= 1
        assert isinstance(spec.lr, float) and 0 < spec.lr <= 10
        assert all(isinstance(v, float) and 0 < v for v in spec.lr_grid)
        assert type(spec.size) is int and spec.size % 32 == 0
        assert isinstance(task.dataset.equalize, bool)


COCO_IMAGE = st.fixed_dictionaries(
    {"id": st.one_of(st.integers(0, 5), JSONISH), "file_name": st.one_of(st.sampled_from(["a.png", "b.png", "../x.png", ""]), JSONISH)}
)
COCO_ANN = st.fixed_dictionaries(
    {
        "image_id": st.one_of(st.integers(0, 5), JSONISH),
        "category_id": st.one_of(st.integers(0, 3), JSONISH),
        "bbox": st.one_of(st.lists(st.one_of(st.integers(-5, 50), st.floats()), min_size=4, max_size=4), JSONISH),
    }
)
COCO_DOC = st.one_of(
    st.fixed_dictionaries(
        {
            "images": st.lists(COCO_IMAGE, max_size=4),
            "annotations": st.lists(COCO_ANN, max_size=6),
            "categories": st.one_of(
                st.just([{"id": 1, "name": "lesion"}]),
                st.lists(st.fixed_dictionaries({"id": JSONISH, "name": JSONISH}), max_size=3),
                JSONISH,
            ),
        }
    ),
    JSONISH,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=COCO_DOC)
def test_coco_files_of_custom_tasks(doc):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "images").mkdir()
        for name in ("a", "b"):
            Image.fromarray(np.full((40, 48), 100, np.uint8)).save(root / "images" / f"{name}.png")
        good = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [], "categories": [{"id": 1, "name": "lesion"}]}
        (root / "train.json").write_text(json.dumps(doc))
        for split in ("val", "test"):
            (root / f"{split}.json").write_text(json.dumps(good | {"images": [{"id": 1, "file_name": "b.png"}]}))
        (root / "task.toml").write_text(
            'id = "mine"\nhead = "yolov3"\nlr = 1e-3\n[data]\nformat = "coco"\nimages = "images"\n'
            'train = "train.json"\nval = "val.json"\ntest = "test.json"\n'
        )
        try:
            task = bounded(load_task_file, root / "task.toml")
            result = bounded(task.dataset.parse)
        except TaskFileError as e:
            assert str(root) in str(e)
            return
        _failures_name_the_file(result, [root])
        for boxes in result.samples["boxes"]:
            for b in boxes:
                assert len(b) == 4 and all(math.isfinite(v) for v in b) and b[2] > 0 and b[3] > 0


MASK = st.tuples(
    st.sampled_from(["L", "I;16", "RGB", "1", "P", "LA"]), st.integers(1, 60), st.integers(1, 60), st.integers(0, 255)
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(masks=st.lists(st.one_of(MASK, st.binary(max_size=64)), min_size=3, max_size=3))
def test_mask_folders_of_custom_tasks(masks):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "images").mkdir()
        (root / "masks").mkdir()
        for i, m in enumerate(masks):
            Image.fromarray(np.full((48, 40), 120, np.uint8)).save(root / "images" / f"i{i}.png")
            if isinstance(m, bytes):
                (root / "masks" / f"i{i}.png").write_bytes(m)  # not a PNG at all
            else:
                mode, w, h, value = m
                Image.new(mode, (w, h), value if mode != "RGB" else (value, 0, 0)).save(root / "masks" / f"i{i}.png")
        lines = ["image_id,split", "i0,train", "i1,val", "i2,test"]
        (root / "splits.csv").write_text("\n".join(lines) + "\n")
        (root / "task.toml").write_text(
            'id = "mine"\nhead = "unet"\nlr = 1e-3\n[data]\nformat = "masks"\nimages = "images"\n'
            'masks = "masks"\nclasses = ["a", "b"]\nsplits = "splits.csv"\n'
        )
        task = load_task_file(root / "task.toml")
        report = bounded(prepare, task.dataset, None, root / "out", size=32, progress=False)
        _failures_name_the_file(report, [root])
        good = {
            f"i{i}"
            for i, m in enumerate(masks)
            if not isinstance(m, bytes) and m[0] in ("L", "P", "1", "I;16") and (m[1], m[2]) == (40, 48)
            and (m[3] <= 2 if m[0] in ("L", "P", "I;16") else True)
        }
        assert set(p.stem for p in (root / "out" / "mine-32px" / "images").glob("*.png")) == good, report.failures


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(max_size=300), st.lists(st.lists(CELL, max_size=4), max_size=8).map(lambda rows: "image_id,split\n" + "".join(csv_line(r) for r in rows))), raw=st.binary(max_size=40))
def test_split_files_of_mask_tasks(text, raw):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "images").mkdir()
        (root / "masks").mkdir()
        for i in range(2):
            Image.fromarray(np.full((40, 40), 120, np.uint8)).save(root / "images" / f"i{i}.png")
            Image.fromarray(np.zeros((40, 40), np.uint8)).save(root / "masks" / f"i{i}.png")
        (root / "splits.csv").write_text(text)
        (root / "ids.txt").write_bytes(raw)
        for data in ('splits = "splits.csv"', 'train = "ids.txt"\nval = "ids.txt"'):
            (root / "task.toml").write_text(
                'id = "mine"\nhead = "unet"\nlr = 1e-3\n[data]\nformat = "masks"\nimages = "images"\n'
                f'masks = "masks"\nclasses = ["a"]\n{data}\n'
            )
            try:
                result = bounded(load_task_file(root / "task.toml").dataset.parse)
            except TaskFileError as e:
                assert str(root) in str(e)
                continue
            _failures_name_the_file(result, [root])


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
