"""What the encoder receives in a run: the resolution it runs at (:func:`encoder_input`) and how its input is
normalised (:func:`normalization_plan`: the task's statistics, or the convention its format declares)."""

from __future__ import annotations

from benchmark.backbones.spec import BackboneInfo


def encoder_input(info: BackboneInfo, task_size: int) -> dict:
    """At which resolution the encoder runs in a run of a task prepared at ``task_size`` px (for records)."""
    out: dict = {
        "resolution": info.resolution or task_size,
        "task_size": task_size,
        "resized": bool(info.resolution and info.resolution != task_size),
    }
    if info.resolution:
        out["how"] = f"input resized to {info.resolution} px (bilinear) before the encoder (SPEC#res)"
    if info.encoder:
        e = info.encoder
        out["train_resolution"] = e["train_resolution"]
        if e["family"] == "vit":
            grid = (info.resolution or task_size) // e["patch"]
            out["token_grid"] = grid
            out["pos_embed"] = (
                "as trained" if grid == e["train_grid"] else f"{e['train_grid']}x{e['train_grid']} -> {grid}x{grid}: {e['pos_embed']}"
            )
    return out


def normalization_plan(
    info: BackboneInfo, task_mean: float, task_std: float, source: str = "task training-split statistics"
) -> dict:
    """How inputs are normalised for a backbone, and what the record says about it.

    The protocol normalises with the task's own training statistics (one channel, in the data preprocessor).
    An encoder whose format declares another convention gets its input on [0, 1] from the preprocessor and
    the per-channel convention inside :class:`CXRBackbone`, after the grey channel is repeated to three.

    Returns:
        ``mean`` / ``std`` for the data preprocessor (on the [0, 1] scale), ``input_norm`` for
        :class:`CXRBackbone` (None or the convention), and ``record`` for the run record.
    """
    if info.normalization is None:
        return {
            "mean": task_mean,
            "std": task_std,
            "input_norm": None,
            "record": {"mean": task_mean, "std": task_std, "source": source},
        }
    n = info.normalization
    return {
        "mean": 0.0,
        "std": 1.0,
        "input_norm": {"mean": list(n["mean"]), "std": list(n["std"])},
        "record": {
            "convention": n["name"],
            "mean": list(n["mean"]),
            "std": list(n["std"]),
            "scale": "[0, 1] image repeated to 3 channels",
            "source": n["source"],
            "task_mean": task_mean,
            "task_std": task_std,
        },
    }

