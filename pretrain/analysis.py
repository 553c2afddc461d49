"""Representation analysis: alignment, uniformity (global and per-sample local) and embedding spread.

Definitions (Wang & Isola 2020), on L2-normalised embeddings:

- alignment = mean ||x - y||^2 over positive pairs (lower = closer);
- uniformity = log mean_{a != b} exp(-2 ||z_a - z_b||^2) (lower = more spread out; 0 = collapsed);
- global metrics are over the images / reports of the analysed set; local ones are computed within each
  sample (its regions, its sentences) and averaged over samples ("per-sample");
- std = mean over dimensions of the standard deviation of the normalised embeddings (about 1/sqrt(d) when
  spread over the sphere, 0 when collapsed); ``std_x_sqrt_d`` rescales it to ~1.

- local alignment: in a space shared by both modalities, to the nearest entry of the other modality of
  the same sample (``alignment_nearest``; every model) and, where the model has cross attention, to the
  attended counterpart (``alignment_to_attended_*``).

:func:`analyze_model` measures a pretraining model of any preset in the same local spaces (:data:`SPACES`:
the unprojected features, the global head applied to each region / sentence, and where the model has
them the local projections); :func:`analyze_image_features` measures any image encoder from its last
feature map (image side only).
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


def _nearest_alignment(img: list[Tensor], rep: list[Tensor], masks: list[Tensor]) -> tuple[float, float]:
    """Within each sample: mean ||s - r*||^2 of each sentence to its nearest region, and of each region to
    its nearest real sentence (normalised embeddings; the positive is the best match, no model needed)."""
    s2r, r2s = [], []
    for x, y, m in zip(img, rep, masks):
        cos = torch.bmm(F.normalize(x.float(), dim=-1), F.normalize(y.float(), dim=-1).transpose(1, 2))
        s2r.append((2 - 2 * cos.max(1).values)[m])
        r2s.append((2 - 2 * cos.masked_fill(~m[:, None, :], -2.0).max(2).values).flatten())
    return float(torch.cat(s2r).mean()), float(torch.cat(r2s).mean())


def local_metrics(
    img: list[Tensor],
    rep: list[Tensor] | None = None,
    rep_masks: list[Tensor] | None = None,
    *,
    shared_space: bool = False,
    img_cross: list[Tensor] | None = None,
    rep_cross: list[Tensor] | None = None,
) -> dict:
    """Local metrics of one embedding space (lists hold one ``(B, N, d)`` tensor per batch).

    ``image`` / ``report``: per-sample uniformity (t = 2, within each sample's regions / real sentences),
    uniformity over all entries, spread. With ``shared_space`` (both modalities in one space) also
    ``alignment_nearest`` (to the nearest entry of the other modality of the same sample); with the
    cross-attended embeddings ``alignment_to_attended_report`` / ``_image``.
    """
    regions = torch.cat([_masked_rows(x, None) for x in img])
    out = {
        "image": {
            "per_sample_uniformity": _per_sample_uniformity(img, [None] * len(img)),
            "uniformity": uniformity(regions),
            **spread(regions),
        }
    }
    if rep is None:
        return out
    masks = rep_masks or [torch.ones(x.shape[:2], dtype=torch.bool) for x in rep]
    sentences = torch.cat([_masked_rows(x, m) for x, m in zip(rep, masks)])
    out["report"] = {
        "per_sample_uniformity": _per_sample_uniformity(rep, masks),
        "uniformity": uniformity(sentences),
        **spread(sentences),
    }
    if shared_space:
        s2r, r2s = _nearest_alignment(img, rep, masks)
        out["image"]["alignment_nearest"] = r2s
        out["report"]["alignment_nearest"] = s2r
    if img_cross is not None:
        out["image"]["alignment_to_attended_report"] = alignment(torch.cat(img), torch.cat(img_cross))
    if rep_cross is not None:
        out["report"]["alignment_to_attended_image"] = alignment(
            sentences, torch.cat([_masked_rows(x, m) for x, m in zip(rep_cross, masks)])
        )
    return out


# the local embedding spaces, in the order they are reported
SPACES = {
    "features": "unprojected: conv5 regions, sentence features (BERT, before any projection)",
    "global_head": "regions / sentences through the global head (pooling value + output projection, global MLP)",
    "local_head": "local projections (+ cross attention): the spaces the local losses act on",
}


def summarize(img_global: Tensor, rep_global: Tensor | None, local: dict[str, dict]) -> dict:
    """Global metrics from ``(n, d)`` embeddings, with the local ones (space -> :func:`local_metrics`)."""
    g = {"image": {"uniformity": uniformity(img_global), **spread(img_global)}}
    if rep_global is not None:
        g["report"] = {"uniformity": uniformity(rep_global), **spread(rep_global)}
        g["alignment"] = alignment(img_global, rep_global)
    return {"n_samples": len(img_global), "global": g, "local": local}


@torch.no_grad()
def analyze_model(
    net, batches: Iterable[dict], device: str | torch.device = "cpu", max_samples: int = 512
) -> dict:
    """Metrics of a pretraining model (:class:`pretrain.model.ImageTextModel`) on collated batches.

    Every model, whatever its preset, gets the same local numbers in the ``features`` and ``global_head``
    spaces; models with local projections also in ``local_head`` (else a note says why not).
    """
    net = net.to(device).eval()
    keep: dict[str, list] = {}
    n = 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        out = net(**batch)
        mask = out["rep_mask"].bool()
        out["img_tokens"] = net.tokens_in_global_space("image", out["img_regions"])
        out["rep_tokens"] = net.tokens_in_global_space("text", out["rep_sentences"], mask)
        for key in (
            "img_global", "rep_global", "img_regions", "rep_sentences", "img_tokens", "rep_tokens",
            "img_local", "rep_local", "img_cross", "rep_cross",
        ):  # fmt: skip
            if key in out:
                keep.setdefault(key, []).append(out[key].float().cpu())
        keep.setdefault("rep_mask", []).append(mask.cpu())
        n += batch["images"].shape[0]
        if n >= max_samples:
            break
    if not keep:
        raise ValueError("no data to analyse")
    masks = keep["rep_mask"]
    local = {
        "features": local_metrics(keep["img_regions"], keep["rep_sentences"], masks),
        "global_head": local_metrics(keep["img_tokens"], keep["rep_tokens"], masks, shared_space=True),
    }
    if "img_local" in keep:
        local["local_head"] = local_metrics(
            keep["img_local"],
            keep["rep_local"],
            masks,
            shared_space=True,
            img_cross=keep.get("img_cross"),
            rep_cross=keep.get("rep_cross"),
        )
    else:
        local["local_head"] = {"note": "no local projections (the preset has no local terms)"}
    result = summarize(torch.cat(keep["img_global"]), torch.cat(keep["rep_global"]), local)
    result["embeddings"] = "global: projected (the space of the global loss); local: see SPACES"
    return result


@torch.no_grad()
def analyze_image_features(
    features: Callable[[Tensor], Tensor],
    images: Iterable[Tensor],
    device: str | torch.device = "cpu",
    max_samples: int = 512,
) -> dict:
    """Image-side metrics of any encoder from its last feature map ``(B, C, h, w)``.

    Global embedding = the average-pooled map; local embeddings = its h x w regions (space ``features``).
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
    result = summarize(torch.cat(glob), None, {"features": local_metrics(loc)})
    result["embeddings"] = "encoder feature map (average-pooled for global, regions for local)"
    return result


# the columns of the local table: (key, header)
LOCAL_COLUMNS = (
    ("per_sample_uniformity", "unif/sample"),
    ("uniformity", "unif/all"),
    ("std_x_sqrt_d", "std*sqrt(d)"),
    ("alignment_nearest", "align/nearest"),
    ("alignment_to_attended_report", "align/attended"),
    ("alignment_to_attended_image", "align/attended"),
)


def flat_local(result: dict) -> dict[str, float]:
    """``{"<space>.<side>.<metric>": value}`` for every local number (the columns of ablate's table)."""
    out = {}
    for space, sides in result.get("local", {}).items():
        for side in ("image", "report"):
            for key, value in sides.get(side, {}).items():
                if key != "std":
                    out[f"{space}.{side}.{key}"] = value
    return out


def format_report(result: dict, title: str = "") -> str:
    """A small text table of :func:`analyze_model` / :func:`analyze_image_features` output.

    The local table always has the same rows (space x regions / sentences) and columns; '-' marks a number
    a model does not have.
    """
    lines = [title] if title else []
    lines.append(f"samples: {result.get('n_samples')}   embeddings: {result.get('embeddings', '')}")

    def num(d: dict, k: str) -> str:
        v = d.get(k)
        return f"{v:.4f}" if isinstance(v, float) and v == v else "-"

    g = result.get("global", {})
    lines.append("global")
    if "alignment" in g:
        lines.append(f"  {'image-report':<22} alignment={g['alignment']:.4f}")
    for side in ("image", "report"):
        if side in g:
            lines.append(
                f"  {side:<22} uniformity={num(g[side], 'uniformity')}  std={num(g[side], 'std')}  "
                f"std_x_sqrt_d={num(g[side], 'std_x_sqrt_d')}"
            )
    loc = result.get("local", {})
    lines.append("local   " + "".join(f"{h:>15}" for h in dict.fromkeys(h for _, h in LOCAL_COLUMNS)))
    for space in SPACES:
        d = loc.get(space, {})
        for side, label in (("image", "regions"), ("report", "sentences")):
            cells = {}
            for key, head in LOCAL_COLUMNS:
                if head not in cells or cells[head] == "-":
                    cells[head] = num(d.get(side, {}), key)
            lines.append(f"  {space + ' ' + label:<22}" + "".join(f"{c:>15}" for c in cells.values()))
    for space in SPACES:
        if "note" in loc.get(space, {}):
            lines.append(f"  {space}: {loc[space]['note']}")
    lines += [f"  {k}: {v}" for k, v in SPACES.items() if k in loc]
    return "\n".join(lines)


# ---------------------------------------------------------------- measuring a run or an encoder on pairs


def analyze_backbone(
    backbone: str,
    data,
    *,
    build_encoder: Callable | None = None,
    split: str = "validate",
    image_only: bool = False,
    image_size: int | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    max_samples: int = 512,
) -> tuple[dict, str]:
    """What ``cxrbench analyze`` measures: a pretraining run (both modalities, :func:`analyze_model`) or any
    image encoder (image side, :func:`analyze_image_features`) on the pairs of ``split`` (all pairs when it
    has none).

    Args:
        backbone: a pretraining run folder, its ``backbone.safetensors`` or a checkpoint ``OUT/work/*.pth``;
            with ``image_only`` or when it is no run, any backbone spec ``build_encoder`` accepts (a run
            folder stands for its ``backbone.safetensors``).
        data: the :class:`pretrain.runs.DataOptions` of the pairs (synthetic pairs are generated in a
            temporary folder).
        build_encoder: spec -> ``(encoder, info)`` with ``info.name`` and an encoder that returns its feature
            levels, the last (index 5) its final feature map - the benchmark's ``build_encoder`` (this package
            does not import the benchmark); needed for plain encoders only.
        image_size: plain encoders' input side (default: the sidecar's, else 224).

    Returns:
        ``(result, title)`` for :func:`format_report`.
    """
    import json
    import sys
    import tempfile
    from pathlib import Path

    from pretrain.data.dataset import PairCollator, PairDataset, image_statistics
    from pretrain.runs import load_pairs
    from pretrain.train import find_run, load_run

    run = None if image_only else find_run(backbone)
    with tempfile.TemporaryDirectory(prefix="cxrbench-analyze-") as tmp:
        pairs, _ = load_pairs(data, tmp, with_text_model=False)
        records = pairs.split(split) or pairs.records
        if not pairs.split(split):
            print(f"note: no '{split}' pairs; analysing all {len(records)} pairs", file=sys.stderr)
        if run is not None:
            given = Path(backbone)
            net, tokenizer, cfg, norm = load_run(run, given if given.suffix == ".pth" else None)
            ds = PairDataset(records, norm["image_size"], norm["mean"], norm["std"], None, cfg.sentences)
            loader = torch.utils.data.DataLoader(
                ds, batch_size=batch_size, collate_fn=PairCollator(tokenizer, cfg.model.max_tokens)
            )
            result = analyze_model(net, loader, device, max_samples)
            return result, f"{run} (preset {cfg.preset}, both modalities)"
        spec = backbone
        if Path(spec).is_dir() and (Path(spec) / "backbone.safetensors").is_file():
            spec = str(Path(spec) / "backbone.safetensors")  # a run folder with --image-only
        encoder, info = build_encoder(spec)
        sidecar = Path(spec).with_suffix(".json")
        norm = json.loads(sidecar.read_text()).get("normalization") if sidecar.is_file() else None
        size = image_size or (norm or {}).get("image_size", 224)
        if norm is None:
            mean, std = image_statistics(records, size)
        else:
            mean, std = norm["mean"], norm["std"]
        ds = PairDataset(records, size, mean, std)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=batch_size, collate_fn=lambda b: torch.stack([x["image"] for x in b])
        )
        encoder = encoder.to(device).eval()
        result = analyze_image_features(
            lambda x: encoder(x.expand(-1, 3, -1, -1))[5], loader, device, max_samples
        )
        return result, f"{info.name} (image side)"
