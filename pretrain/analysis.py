"""Representation analysis: alignment, uniformity (global and per-sample local) and embedding spread.

Definitions (Wang & Isola 2020), on L2-normalised embeddings:

- alignment = mean ||x - y||^2 over positive pairs (lower = closer);
- uniformity = log mean_{a != b} exp(-2 ||z_a - z_b||^2) (lower = more spread out; 0 = collapsed);
- global metrics are over the images / reports of the analysed set; local ones are computed within each
  sample (its regions, its sentences) and averaged over samples ("per-sample");
- std = mean over dimensions of the standard deviation of the normalised embeddings (about 1/sqrt(d) when
  spread over the sphere, 0 when collapsed); ``std_x_sqrt_d`` rescales it to ~1.

:func:`analyze_model` measures a pretraining model (both modalities, projected embeddings);
:func:`analyze_image_features` measures any image encoder from its last feature map (image side only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from pretrain.losses import gaussian_potential_per_sample


def alignment(x: Tensor, y: Tensor, mask: Tensor | None = None) -> float:
    """Mean squared distance between normalised positive pairs (rows of ``x`` and ``y``; mask selects rows)."""
    d = (F.normalize(x.float(), dim=-1) - F.normalize(y.float(), dim=-1)).pow(2).sum(-1)
    if mask is not None:
        d = d[mask]
    return float(d.mean())


def uniformity(z: Tensor, t: float = 2.0, max_points: int = 4096) -> float:
    """``log mean_{a != b} exp(-t ||z_a - z_b||^2)`` over the rows of ``z`` (subsampled beyond max_points)."""
    z = F.normalize(z.float(), dim=-1)
    if len(z) > max_points:
        z = z[torch.randperm(len(z), generator=torch.Generator().manual_seed(0))[:max_points]]
    if len(z) < 2:
        return float("nan")
    sq = torch.pdist(z).pow(2)
    return float(torch.logsumexp(-t * sq, 0) - math.log(len(sq)))


def spread(z: Tensor) -> dict[str, float]:
    """Standard deviation of the normalised embeddings (collapse detector)."""
    z = F.normalize(z.float(), dim=-1)
    std = float(z.std(0).mean()) if len(z) > 1 else float("nan")
    return {"std": std, "std_x_sqrt_d": std * math.sqrt(z.shape[-1])}


def _per_sample_uniformity(parts: list[Tensor], masks: list[Tensor | None]) -> float:
    values = torch.cat([gaussian_potential_per_sample(p.float(), m) for p, m in zip(parts, masks)])
    values = values[~torch.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def _masked_rows(x: Tensor, mask: Tensor | None) -> Tensor:
    return x.reshape(-1, x.shape[-1]) if mask is None else x[mask]


def summarize(
    img_global: Tensor,
    rep_global: Tensor | None,
    img_local: list[Tensor],
    rep_local: list[Tensor] | None = None,
    rep_masks: list[Tensor] | None = None,
    img_cross: list[Tensor] | None = None,
    rep_cross: list[Tensor] | None = None,
) -> dict:
    """Metrics from collected embeddings (lists hold one ``(B, N, d)`` tensor per batch)."""
    out: dict = {"n_samples": len(img_global)}
    g = {"image": {"uniformity": uniformity(img_global), **spread(img_global)}}
    if rep_global is not None:
        g["report"] = {"uniformity": uniformity(rep_global), **spread(rep_global)}
        g["alignment"] = alignment(img_global, rep_global)
    out["global"] = g
    regions = torch.cat([_masked_rows(x, None) for x in img_local])
    loc = {
        "image": {
            "per_sample_uniformity": _per_sample_uniformity(img_local, [None] * len(img_local)),
            "uniformity": uniformity(regions),
            **spread(regions),
        }
    }
    if rep_local is not None:
        masks = rep_masks or [None] * len(rep_local)
        sentences = torch.cat([_masked_rows(x, m) for x, m in zip(rep_local, masks)])
        loc["report"] = {
            "per_sample_uniformity": _per_sample_uniformity(rep_local, masks),
            "uniformity": uniformity(sentences),
            **spread(sentences),
        }
    if img_cross is not None:
        loc["image"]["alignment_to_attended_report"] = alignment(torch.cat(img_local), torch.cat(img_cross))
    if rep_cross is not None and rep_local is not None:
        masks = rep_masks or [None] * len(rep_local)
        loc["report"]["alignment_to_attended_image"] = alignment(
            torch.cat([_masked_rows(x, m) for x, m in zip(rep_local, masks)]),
            torch.cat([_masked_rows(x, m) for x, m in zip(rep_cross, masks)]),
        )
    out["local"] = loc
    return out


@torch.no_grad()
def analyze_model(
    net, batches: Iterable[dict], device: str | torch.device = "cpu", max_samples: int = 512
) -> dict:
    """Metrics of a pretraining model (:class:`pretrain.model.ImageTextModel`) on collated batches."""
    net = net.to(device).eval()
    keep: dict[str, list] = {}
    n = 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        out = net(**batch)
        for key in (
            "img_global",
            "rep_global",
            "img_local",
            "rep_local",
            "img_cross",
            "rep_cross",
            "rep_mask",
        ):
            if key in out:
                keep.setdefault(key, []).append(out[key].float().cpu())
        n += batch["images"].shape[0]
        if n >= max_samples:
            break
    if not keep:
        raise ValueError("no data to analyse")
    img_global = torch.cat(keep["img_global"])
    has_local = "img_local" in keep
    result = summarize(
        img_global,
        torch.cat(keep["rep_global"]),
        keep["img_local"] if has_local else [img_global[:, None]],
        keep.get("rep_local"),
        [m.bool() for m in keep["rep_mask"]] if "rep_local" in keep else None,
        keep.get("img_cross"),
        keep.get("rep_cross"),
    )
    if not has_local:
        result["local"] = {"note": "this model has no local projections (its preset has no local terms)"}
    result["embeddings"] = "projected (the spaces the losses act on)"
    return result


@torch.no_grad()
def analyze_image_features(
    features: Callable[[Tensor], Tensor],
    images: Iterable[Tensor],
    device: str | torch.device = "cpu",
    max_samples: int = 512,
) -> dict:
    """Image-side metrics of any encoder from its last feature map ``(B, C, h, w)``.

    Global embedding = the average-pooled map; local embeddings = its h x w regions.
    """
    glob, loc = [], []
    n = 0
    for x in images:
        fmap = features(x.to(device)).float().cpu()
        regions = fmap.flatten(2).transpose(1, 2)
        glob.append(regions.mean(1))
        loc.append(regions)
        n += len(x)
        if n >= max_samples:
            break
    if not glob:
        raise ValueError("no images to analyse")
    result = summarize(torch.cat(glob), None, loc)
    result["embeddings"] = "encoder feature map (average-pooled for global, regions for local)"
    return result


def format_report(result: dict, title: str = "") -> str:
    """A small text table of :func:`summarize`'s output."""
    lines = [title] if title else []
    lines.append(f"samples: {result.get('n_samples')}   embeddings: {result.get('embeddings', '')}")

    def row(name: str, d: dict) -> str:
        keys = (
            "alignment_to_attended_report",
            "alignment_to_attended_image",
            "per_sample_uniformity",
            "uniformity",
            "std",
            "std_x_sqrt_d",
        )
        cells = [f"{k}={d[k]:.4f}" for k in keys if k in d and d[k] == d[k]]
        return f"  {name:<16} " + "  ".join(cells)

    g = result.get("global", {})
    lines.append("global")
    if "alignment" in g:
        lines.append(f"  {'image-report':<16} alignment={g['alignment']:.4f}")
    for side in ("image", "report"):
        if side in g:
            lines.append(row(side, g[side]))
    loc = result.get("local", {})
    lines.append("local")
    if "note" in loc:
        lines.append(f"  {loc['note']}")
    for side in ("image", "report"):
        if side in loc:
            lines.append(row("regions" if side == "image" else "sentences", loc[side]))
    return "\n".join(lines)
