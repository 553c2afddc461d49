"""Each transformer checkpoint format runs end to end: detected from its file, a linear head trained on the
frozen encoder over fake RSNA prepared at the protocol's 224 px (the small checkpoints were trained at
56 / 64 px: their position embeddings are interpolated), one record per run saying how the levels were made
and at which resolution the encoder ran."""

from __future__ import annotations

import math

import pytest
import torch

from benchmark.runs import RunOptions, evaluate
from tasks.registry import get_task
from tests.support.transformer_checkpoints import (
    make_biomedclip,
    make_chexzero,
    make_medclip_swin,
    make_mgca_vit,
    make_mrm,
    make_rad_dino,
)

pytestmark = pytest.mark.slow
pytest.importorskip("open_clip")

TASK = "rsna_linear_10"  # the fastest task: a frozen encoder and a linear head on C5


def save(name: str, folder):
    if name == "rad-dino":
        make_rad_dino(folder / "rad-dino", image_size=56)
        return folder / "rad-dino"
    builder = {
        "biomedclip": make_biomedclip,
        "chexzero": make_chexzero,
        "mrm": make_mrm,
        "mgca-vit": make_mgca_vit,
        "medclip-swin": make_medclip_swin,
    }[name]
    path = folder / f"{name}.pt"
    torch.save(builder()[0], path)
    return path


@pytest.mark.parametrize(
    "name,option",
    [
        ("rad-dino", ""),
        ("rad-dino", "#res=112"),
        ("biomedclip", ""),
        ("chexzero", ""),
        ("mrm", ""),
        ("mgca-vit", ""),
        ("medclip-swin", ""),
    ],
)
def test_format_end_to_end(name, option, data_root, tmp_path):
    spec = f"{save(name, tmp_path)}{option}"
    options = RunOptions(max_epochs=1, batch_size=4, device="cpu", progress=False)
    lines: list[str] = []
    (record,) = evaluate(
        spec, [get_task(TASK)], data_root, tmp_path / "out", seeds=[0], options=options, echo=lines.append,
        lr_search=False,
    )
    assert record["status"] == "ok", record.get("traceback")
    b = record["backbone"]
    assert b["format"] == name and b["encoder"]["family"] in ("vit", "swin-hf")
    assert "recognised" in lines[0] and "trained at" in lines[0]
    assert all(math.isfinite(v) for v in record["metrics"]["test"].values() if isinstance(v, float))
    assert record["normalization"]["convention"]  # the method's declared input convention
    enc = record["encoder_input"]
    if option:
        assert enc == enc | {"resolution": 112, "task_size": 224, "resized": True}
        assert b["resolution"] == 112 and b["name"].endswith("@112px")
        assert enc["pos_embed"].startswith("4x4 -> 8x8")
    else:
        assert enc["resolution"] == 224 and not enc["resized"] and enc["task_size"] == 224
        assert enc["train_resolution"] == b["encoder"]["train_resolution"]
    if b["encoder"]["family"] == "vit":
        assert len(b["levels"]) == 6 and ("max-pool" in b["levels"][5] or b["levels"][5].endswith("stride 32"))
        grid = b["encoder"]["train_grid"]
        expected = "as trained" if grid == enc["token_grid"] else f"{grid}x{grid} -> {enc['token_grid']}x"
        assert enc["pos_embed"].startswith(expected)  # biomedclip's trunk was built at 224: as trained
