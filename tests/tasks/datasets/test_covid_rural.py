"""COVID Rural: file naming and patient ids, RGB JPGs averaged, 0/1 masks of the image's size."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from tasks.datasets.covid_rural import CovidRural


def test_parse_counts_and_patients(fake_covid_rural):
    result = CovidRural(fake_covid_rural).parse()
    assert not result.failures
    jpgs = sorted(p.stem for p in (fake_covid_rural / "jpgs").glob("*.jpg"))
    masks = sorted(p.stem for p in (fake_covid_rural / "pngs_masks").glob("*.png"))
    assert (
        result.counts["images"] == len(masks)
        and result.counts["images_without_mask"] == len(jpgs) - len(masks) == 2
    )
    for s in result.samples.to_dict("records"):
        assert s["patient_id"] == s["image_id"].split("_")[0] and s["patient_id"].startswith("COVID-19-AR-")
    assert result.counts["patients"] == 10 and len(result.samples) > 10  # several dates per patient


def test_repository_root_is_accepted(fake_covid_rural, tmp_path):
    import shutil

    shutil.copytree(fake_covid_rural, tmp_path / "repo" / "covid_rural_annot")
    ds = CovidRural(tmp_path / "repo")
    assert ds.root.name == "covid_rural_annot" and len(ds.parse().samples) == len(
        CovidRural(fake_covid_rural).parse().samples
    )


def test_rgb_is_averaged_and_masks_exact(fake_covid_rural):
    ds = CovidRural(fake_covid_rural)
    samples = ds.parse().samples.to_dict("records")
    modes = set()
    for s in samples:
        with Image.open(s["file"]) as img:
            modes.add(img.mode)
            raw = np.asarray(img, dtype=np.float32)
        pixels = ds.load_pixels(s)
        want = (raw.mean(axis=-1) if raw.ndim == 3 else raw) / 255.0
        assert np.allclose(pixels, want, atol=1e-6)
        mask = ds.load_mask(s, *pixels.shape)
        png = np.asarray(Image.open(s["mask_file"]))
        assert mask.sum() == png.sum() and set(np.unique(png)) <= {0, 1}
    assert modes == {"L", "RGB"}


def test_prepared(prepared_all, fake_covid_rural):
    out = prepared_all / "covid_rural"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["opacity"] and manifest["counts"]["images_without_mask"] == 2
    assert manifest["differs_from_release"]["images"]["expected"] == 221
    fg = 0
    for p in (out / "masks").iterdir():
        m = np.asarray(Image.open(p))
        assert m.shape == (224, 224) and set(np.unique(m)) <= {0, 1}
        fg += int(m.any())
    assert fg >= 8
