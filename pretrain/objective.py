"""Model outputs + a :class:`~pretrain.config.LossConfig` -> the value of every active term and the total."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from pretrain import losses as L
from pretrain.config import LossConfig


def _f(x: Tensor) -> Tensor:
    # losses in (at least) float32, also under mixed precision
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def compute_terms(out: Mapping[str, Tensor], cfg: LossConfig) -> dict[str, Tensor]:
    """The unweighted value of every term with a nonzero weight (nothing else is computed).

    ``out`` is what :class:`pretrain.model.ImageTextModel` returns: ``img_global``, ``rep_global``
    ``(B, d)``; ``img_local``, ``img_cross`` ``(B, N, d)``; ``rep_local``, ``rep_cross`` ``(B, S, d)``;
    ``img_weights (B, N)``, ``rep_weights (B, S)``, ``rep_mask (B, S)``, ``grid`` (h, w).
    """
    active = set(cfg.active())
    terms: dict[str, Tensor] = {}
    if active & {"global_i2r", "global_r2i"}:
        i2r, r2i = L.global_infonce(_f(out["img_global"]), _f(out["rep_global"]), cfg.tau_global)
        terms.update(global_i2r=i2r, global_r2i=r2i)
    if any(t.startswith(("img_l2att", "img_att2l")) for t in active):
        h, w = (int(v) for v in out["grid"])
        pos = L.spatial_positive_weights(
            h, w, cfg.smooth_threshold, cfg.smooth_lambda, device=out["img_local"].device
        )
        z, za = _f(out["img_local"]), _f(out["img_cross"])
        for name, (anchors, candidates) in {"img_l2att": (z, za), "img_att2l": (za, z)}.items():
            if {f"{name}_align", f"{name}_uniform"} & active:
                a, u = L.local_infonce_parts(
                    anchors, candidates, pos, out["img_weights"], None, cfg.tau_local
                )
                terms.update({f"{name}_align": a, f"{name}_uniform": u})
    if any(t.startswith(("rep_l2att", "rep_att2l")) for t in active):
        mask = out["rep_mask"]
        pos = L.identity_positive_weights(mask.shape[1], device=mask.device)
        z, za = _f(out["rep_local"]), _f(out["rep_cross"])
        for name, (anchors, candidates) in {"rep_l2att": (z, za), "rep_att2l": (za, z)}.items():
            if {f"{name}_align", f"{name}_uniform"} & active:
                a, u = L.local_infonce_parts(
                    anchors, candidates, pos, out["rep_weights"], mask, cfg.tau_local
                )
                terms.update({f"{name}_align": a, f"{name}_uniform": u})
    for side, key, mask in (("img", "img_local", None), ("rep", "rep_local", out.get("rep_mask"))):
        for family in L.PRIOR_FAMILIES:
            if f"{side}_prior_{family}" in active:
                terms[f"{side}_prior_{family}"] = L.normalized_prior(
                    family,
                    _f(out[key]),
                    mask,
                    t=cfg.prior_t,
                    shrinkage=cfg.cov_shrinkage,
                    n_directions=cfg.swd_directions,
                )
    return {k: v for k, v in terms.items() if k in active}


def total_loss(terms: Mapping[str, Tensor], cfg: LossConfig) -> Tensor:
    """``sum_t weight_t * term_t`` over the active terms."""
    return torch.stack([cfg.weights[k] * v for k, v in terms.items()]).sum()
