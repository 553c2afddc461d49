"""Hostile and broken inputs to ``prepare`` (issue 14): memory bounded by the input's real size, a killed
worker fails only its image, bad label rows are per-row failures, tiny images / objects outside the image /
header-only label files / unwritable output folders are clear errors."""

from __future__ import annotations

import os
import shutil
import signal
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks import image as image_mod
from tasks.datasets.rsna import RSNA
from tasks.errors import DatasetLayoutError
from tasks.image import Geometry, pad_to_square, prepare_image, prepare_mask
from tasks.prepare import MIN_IMAGE_SIDE, prepare
from tasks.rle import MAX_RLE_VALUE, RLEError, decode_siim_rle, parse_rle

REPO = Path(__file__).resolve().parents[2]


def copy(src, tmp_path, name="raw"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def reasons_of(report):
    return [str(f) for f in report.failures]


# --- pad and resize: Pillow's result on the padded square, bit for bit, without building the square -----


def pillow_on_padded_square(pixels, size):
    """What prepare did before issue 14: pad at full resolution in float32, then Pillow."""
    g = Geometry(*pixels.shape, size)
    square = pad_to_square(pixels.astype(np.float32), g)
    return np.asarray(Image.fromarray(square, mode="F").resize((size, size), Image.Resampling.BILINEAR))


def pillow_mask_on_padded_square(mask, size):
    g = Geometry(mask.shape[-2], mask.shape[-1], size)
    square = pad_to_square(mask.astype(np.uint8), g)
    one = lambda m: np.asarray(Image.fromarray(m).resize((size, size), Image.Resampling.NEAREST))  # noqa: E731
    return one(square) if square.ndim == 2 else np.stack([one(m) for m in square])


def test_exact_resize_is_pillow_bit_for_bit_on_many_shapes():
    rng = np.random.default_rng(1)
    for it in range(150):
        h, w = (int(v) for v in rng.integers(1, 500, size=2))
        if it % 3 == 0:
            h = int(rng.integers(1, 20))  # very long strips, the case the exact path is for
        size = int(rng.choice([224, 64, 100, 17, 448]))
        pixels = rng.random((h, w), dtype=np.float32)
        if it % 4 == 0:
            pixels = np.round(pixels * 4) / 4  # ties at .5 after * 255
        want = pillow_on_padded_square(pixels, size)
        got = image_mod._resize_padded_exact(pixels, Geometry(h, w, size))
        assert np.array_equal(want.view(np.uint32), got.view(np.uint32)), (h, w, size)
        masks = (rng.random((3, h, w)) < 0.3).astype(np.uint8) * 2
        assert np.array_equal(prepare_mask(masks[0], size), pillow_mask_on_padded_square(masks[0], size))
        assert np.array_equal(prepare_mask(masks, size), pillow_mask_on_padded_square(masks, size))


def test_size_equal_to_side_is_a_copy_in_both_paths():
    pixels = np.random.default_rng(0).random((224, 40), dtype=np.float32)
    want = pillow_on_padded_square(pixels, 224)
    assert np.array_equal(image_mod._resize_padded_exact(pixels, Geometry(224, 40, 224)), want)


@pytest.mark.parametrize("name", ["object_cxr", "covid_rural"])  # images of varying, non-square sizes
def test_prepared_dataset_is_identical_through_the_exact_path(name, fake_raw, tmp_path, monkeypatch):
    """The fake datasets prepared with the padded square (ordinary images) and with the exact path forced
    for every image: every PNG byte-identical."""
    normal = prepare(name, fake_raw[name], tmp_path / "a", size=100, progress=False).out_dir
    monkeypatch.setattr(image_mod, "PAD_BUDGET", 0)
    exact = prepare(name, fake_raw[name], tmp_path / "b", size=100, progress=False).out_dir
    pngs = sorted(p.relative_to(normal) for p in normal.rglob("*.png"))
    assert len(pngs) > 20 and pngs == sorted(p.relative_to(exact) for p in exact.rglob("*.png"))
    for p in pngs:
        assert (normal / p).read_bytes() == (exact / p).read_bytes(), p
    assert (normal / "stats.json").read_text() == (exact / "stats.json").read_text()


@pytest.mark.parametrize("shape", [(20000, 64), (64, 20000), (1, 70000), (70000, 1)])
def test_long_strips_need_memory_of_their_own_size(shape):
    """A 20000 x 64 image peaked at 3.2 GB (a float32 20000^2 square); a 1 x 70000 one would need ~20 GB."""
    pixels = np.ones(shape, dtype=np.float32)
    mask = np.ones(shape, dtype=np.uint8)
    tracemalloc.start()
    try:
        image = prepare_image(pixels, 224)
        small = prepare_mask(mask, 224)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert image.shape == small.shape == (224, 224)
    assert peak < 40e6, f"peak {peak / 1e6:.0f} MB for a {shape} image"  # the input is 5 MB at most
    g = Geometry(*shape, 224)
    rows = slice(int(g.top * g.scale) - 1, int((g.top + g.height) * g.scale) + 2)
    cols = slice(int(g.left * g.scale) - 1, int((g.left + g.width) * g.scale) + 2)
    outside = np.ones((224, 224), bool)
    outside[max(rows.start, 0) : rows.stop, max(cols.start, 0) : cols.stop] = False
    assert not image[outside].any()  # the strip, centred, in the padding
    assert image[~outside].any() == (min(shape) > 1)  # a 1 px line is under half a grey level at 224 px
    assert not small[outside].any()


# --- a killed worker ------------------------------------------------------------------------------------


class KillingRSNA(RSNA):
    """RSNA whose reader is killed (SIGKILL, as the out-of-memory killer does) on one image."""

    victim = ""

    def load_pixels(self, sample):
        if sample["image_id"] == self.victim:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().load_pixels(sample)


def test_a_killed_worker_fails_only_its_image(fake_rsna, tmp_path):
    ds = KillingRSNA(fake_rsna)
    ids = sorted(ds.parse().samples["image_id"])
    ds.victim = ids[3]
    report = prepare(ds, None, tmp_path / "out", workers=2, progress=False)
    reasons = reasons_of(report)
    assert len(reasons) == 1 and ids[3] in reasons[0], reasons
    assert ": image: the process preparing it died (killed by signal 9;" in reasons[0]
    assert report.manifest["counts"]["prepared_images"] == len(ids) - 1
    assert sorted(p.stem for p in (report.out_dir / "images").glob("*.png")) == ids[:3] + ids[4:]


# --- label rows -----------------------------------------------------------------------------------------


def test_rsna_row_with_a_seventh_field_is_a_row_failure(fake_rsna, tmp_path):
    raw = copy(fake_rsna, tmp_path)
    csv = raw / "stage_2_train_labels.csv"
    lines = csv.read_text().splitlines()
    pid = lines[5].split(",")[0]
    lines[5] += ",extra"
    csv.write_text("\n".join(lines) + "\n")
    report = prepare("rsna", raw, tmp_path / "out", progress=False)
    reasons = reasons_of(report)
    assert reasons == [f"{csv}: row 6: 7 fields, expected 6 (patientId,x,y,width,height,Target) [{pid}]"]
    n_images = len({line.split(",")[0] for line in lines[1:]})
    assert report.manifest["counts"]["prepared_images"] == n_images - 1  # that patient, not the others


def test_header_only_rsna_csv_is_an_error_with_a_nonzero_exit(fake_rsna, tmp_path, cli):
    raw = copy(fake_rsna, tmp_path)
    csv = raw / "stage_2_train_labels.csv"
    csv.write_text(csv.read_text().splitlines()[0] + "\n")
    with pytest.raises(DatasetLayoutError, match="header is there but no rows follow"):
        prepare("rsna", raw, tmp_path / "out", progress=False)
    assert cli("prepare", "rsna", "--raw", raw, "--out", tmp_path / "out", "--quiet").code == 2


def test_siim_rle_numbers_beyond_int64_and_near_2_63_are_row_failures(fake_raw, tmp_path):
    raw = copy(fake_raw["siim"], tmp_path)
    csv = raw / "train-rle.csv"
    rows = csv.read_text().splitlines()
    ids = sorted({r.split(",")[0] for r in rows[1:] if not r.endswith(", -1")})
    rows += [f"{ids[0]}, {2**64} 5", f"{ids[1]}, {2**63 - 10} 20 {2**63 - 10} 20"]
    csv.write_text("\n".join(rows) + "\n")
    report = prepare("siim", raw, tmp_path / "out", progress=False)
    reasons = reasons_of(report)
    assert len(reasons) == 2, reasons
    n = len(rows)
    assert reasons[0].startswith(f"{csv}: row {n - 1} EncodedPixels: malformed RLE: value {2**64} is too large")
    assert reasons[1].startswith(f"{csv}: row {n} EncodedPixels: malformed RLE: value {2**63 - 10} is too large")


def test_rle_values_that_would_wrap_round_never_give_a_mask():
    for pairs in ([[2**62, 2**62], [2**62, 2**62]], [[MAX_RLE_VALUE, 5]], [[3, MAX_RLE_VALUE]]):
        with pytest.raises(RLEError, match="outside 0..4096"):
            decode_siim_rle(np.array(pairs, dtype=np.int64), 64, 64)
    with pytest.raises(RLEError, match="too large"):
        parse_rle(f"1 {MAX_RLE_VALUE + 1}")
    with pytest.raises(RLEError, match="not an integer"):
        parse_rle("1 ٣")  # a Unicode digit is no RLE number
    assert decode_siim_rle(parse_rle("0 4096"), 64, 64).all()


def test_nih_patient_id_that_is_not_a_number_is_a_row_failure(fake_raw, tmp_path):
    raw = copy(fake_raw["nih"], tmp_path)
    entry = raw / "Data_Entry_2017_v2020.csv"
    lines = entry.read_text().splitlines()
    cells = lines[2].split(",")
    cells[3] = "²"
    lines[2] = ",".join(cells)
    entry.write_text("\n".join(lines) + "\n")
    report = prepare("nih", raw, tmp_path / "out", progress=False)
    reasons = reasons_of(report)
    assert reasons == [
        f"{entry}: row 3 Patient ID: must be a decimal number, got '²' [{cells[0][:-4]}]"
    ], reasons


# --- silently accepted before ---------------------------------------------------------------------------


def test_images_below_the_minimum_size_are_failures(fake_raw, tmp_path):
    raw = copy(fake_raw["covid_rural"], tmp_path)
    jpgs = sorted((raw / "jpgs").glob("*.jpg"))
    Image.new("L", (1, 1), 128).save(jpgs[0])
    Image.new("L", (MIN_IMAGE_SIDE - 1, 200), 128).save(jpgs[1])
    report = prepare("covid_rural", raw, tmp_path / "out", progress=False)
    reasons = [r for r in reasons_of(report) if "image size" in r]
    assert len(reasons) == 2, reasons_of(report)
    assert reasons[0].startswith(f"{jpgs[0]}: image size: 1x1 px; an image must be at least {MIN_IMAGE_SIDE} px")


def test_object_cxr_object_outside_its_image_is_a_failure(fake_raw, tmp_path):
    raw = copy(fake_raw["object_cxr"], tmp_path)
    csv = raw / "train.csv"
    lines = csv.read_text().splitlines()
    k = next(i for i, line in enumerate(lines[1:], start=1) if not line.split(",", 1)[1].strip())
    name = lines[k].split(",")[0]
    lines[k] = f"{name},0 5000 5000 5100 5100"  # far beyond a ~200 px image
    csv.write_text("\n".join(lines) + "\n")
    report = prepare("object_cxr", raw, tmp_path / "out", progress=False)
    reasons = reasons_of(report)
    assert len(reasons) == 1, reasons
    assert reasons[0].startswith(f"{csv}: row {k + 1} annotation: object 1 (rectangle with bounding box x=5000")
    assert "lies entirely outside the" in reasons[0]
    assert not (report.out_dir / "images" / f"{Path(name).stem}.png").exists()
    images = {i["image_id"] for i in __import__("json").loads((report.out_dir / "annotations/train.json").read_text())["images"]}
    assert Path(name).stem not in images


def test_rsna_box_outside_its_image_is_a_failure(fake_rsna, tmp_path):
    raw = copy(fake_rsna, tmp_path)
    csv = raw / "stage_2_train_labels.csv"
    lines = csv.read_text().splitlines()
    k = next(i for i, line in enumerate(lines[1:], start=1) if line.endswith(",1"))
    cells = lines[k].split(",")
    pid = cells[0]
    cells[1] = "5000"  # x beyond the 1024 px image
    lines[k] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    report = prepare("rsna", raw, tmp_path / "out", progress=False)
    reasons = reasons_of(report)
    assert len(reasons) == 1 and reasons[0].startswith(str(raw / "stage_2_train_images" / f"{pid}.dcm")), reasons
    assert ": box " in reasons[0] and "lies entirely outside the 1024x1024 image" in reasons[0]
    assert not (report.out_dir / "images" / f"{pid}.png").exists()


# --- an unwritable output folder -----------------------------------------------------------------------


def test_unwritable_output_folder_has_its_own_exit_code(fake_rsna, tmp_path, cli):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = ["prepare", "rsna", "--raw", fake_rsna, "--quiet"]
    done = cli.run(*cmd, "--out", blocker / "out", env=env)
    assert done.code == 3, done.err
    assert "Traceback" not in done.err
    assert f"cannot write the prepared dataset to {blocker / 'out' / 'rsna'}" in done.err
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        done = cli.run(*cmd, "--out", ro, env=env)
        assert done.code == 3 and "choose a writable --out folder" in done.err


@pytest.mark.parametrize("workers", [1, 2])
def test_a_write_failure_midway_is_an_output_error_not_input_failures(fake_rsna, tmp_path, monkeypatch, workers):
    import errno

    import tasks.prepare as prepare_mod
    from tasks.errors import OutputError

    def full(path, array):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(prepare_mod, "save_png_atomic", full)  # workers are forked: they see it too
    with pytest.raises(OutputError, match="cannot write under .*No space left on device"):
        prepare("rsna", fake_rsna, tmp_path / "out", workers=workers, progress=False)
