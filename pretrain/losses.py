"""Image-text contrastive losses and uniformity priors as small pure functions.

Conventions shared by every function here:

- Embeddings are not assumed normalised: each function L2-normalises what it compares (s(u, v) is the
  cosine similarity), so callers pass projections as they come.
- Local embeddings are ``(B, N, d)`` tensors (B samples, N regions or sentences). ``mask`` is a ``(B, N)``
  boolean tensor, True where an entry is real and False where it is padding (reports have different
  numbers of sentences). ``None`` means every entry is real.
- Losses are means over the batch; the ``*_per_sample`` variants return one value per sample.

The LoVT local InfoNCE term of an anchor n,

    l_n = - sum_m p_nm s(a_n, c_m)/tau + log sum_m exp(s(a_n, c_m)/tau),

is computed as its two parts: the LOCAL ALIGNMENT part (the first sum: pull the anchor towards its
cross-modal positives) and the LOCAL UNIFORMITY part (the log-sum-exp: push it away from the other
candidates of the same sample). :func:`local_infonce_parts` returns both; :func:`local_infonce` computes the
whole term independently (soft-target cross-entropy), and they add up exactly because sum_m p_nm = 1.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "global_infonce",
    "spatial_positive_weights",
    "identity_positive_weights",
    "normalize_anchor_weights",
    "local_infonce_parts",
    "local_infonce",
    "gaussian_potential_per_sample",
    "gaussian_potential_prior",
    "covariance_prior_per_sample",
    "covariance_prior",
    "variance_prior_per_sample",
    "variance_prior",
    "sliced_wasserstein_prior_per_sample",
    "sliced_wasserstein_prior",
    "random_directions",
    "PRIOR_FAMILIES",
    "prior_per_sample",
    "prior_range",
    "normalized_prior",
]


def _valid(mask: Tensor | None, z: Tensor) -> Tensor:
    return torch.ones(z.shape[:2], dtype=torch.bool, device=z.device) if mask is None else mask.bool()


def _masked_sample_mean(values: Tensor, counted: Tensor) -> Tensor:
    """Mean of per-sample values over the samples where ``counted`` (samples with too few entries drop out)."""
    counted = counted.to(values.dtype)
    return (values * counted).sum() / counted.sum().clamp_min(1.0)


# --------------------------------------------------------------------------------------------- global


def global_infonce(z_img: Tensor, z_rep: Tensor, tau: float = 0.1) -> tuple[Tensor, Tensor]:
    """Global InfoNCE in both directions; the negatives are the other pairs of the batch.

    Args:
        z_img: ``(B, d)`` global image embeddings.
        z_rep: ``(B, d)`` global report embeddings; row i is the positive of image i.
        tau: temperature.

    Returns:
        ``(L_i2r, L_r2i)``: image->report (an image must pick its report among the batch's reports) and
        report->image, each a mean over the batch. LoVT weights them 0.75 / 0.25.
    """
    logits = F.normalize(z_img, dim=-1) @ F.normalize(z_rep, dim=-1).T / tau
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels), F.cross_entropy(logits.T, labels)


# ------------------------------------------------------------------------------------ local InfoNCE


@functools.lru_cache(maxsize=32)
def _spatial_weights_np(height: int, width: int, threshold: float, lam: float) -> np.ndarray:
    yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.float64)
    d = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)) / math.sqrt(height**2 + width**2)
    p = (d <= threshold) * np.exp(-lam * d)
    return p / p.sum(axis=1, keepdims=True)


def spatial_positive_weights(
    height: int,
    width: int,
    threshold: float = 0.5,
    lam: float = 1.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """LoVT's spatially smoothed positives for the regions of an ``height x width`` grid.

    ``d(n, m)`` is the distance between the grid positions of regions n and m divided by the grid
    diagonal; ``p_nm = 1[d <= threshold] exp(-lam d) / sum_m' (same)``.

    Returns:
        ``(N, N)`` with N = height * width (row-major region order, as ``flatten(2)`` gives); rows sum to 1.
    """
    p = _spatial_weights_np(int(height), int(width), float(threshold), float(lam))
    return torch.as_tensor(p, dtype=dtype or torch.get_default_dtype(), device=device)


def identity_positive_weights(n: int, device=None, dtype: torch.dtype | None = None) -> Tensor:
    """Positives for sentences: a sentence is only the positive of itself."""
    return torch.eye(n, device=device, dtype=dtype or torch.get_default_dtype())


def normalize_anchor_weights(weights: Tensor | None, mask: Tensor | None, like: Tensor) -> Tensor:
    """Anchor weights that are zero on padding and sum to 1 over each sample's real entries.

    ``weights=None`` gives every real entry the same weight. The weights are detached: LoVT uses the
    attention-pooling weights only to say which regions / sentences matter, not to train the pooling.
    """
    valid = _valid(mask, like).to(like.dtype)
    w = valid if weights is None else weights.detach().to(like.dtype) * valid
    return w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(like.dtype).tiny)


def _prepare_local(anchors, candidates, positives, weights, mask):
    if anchors.shape != candidates.shape:
        raise ValueError(
            f"anchors {tuple(anchors.shape)} and candidates {tuple(candidates.shape)} must have the same shape"
        )
    b, n, _ = anchors.shape
    valid = _valid(mask, anchors)
    p = positives.to(anchors.dtype)
    if p.ndim == 2:
        p = p.expand(b, n, n)
    # positives only among real candidates, renormalised per anchor
    p = p * valid[:, None, :].to(p.dtype)
    p = p / p.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    w = normalize_anchor_weights(weights, valid, anchors)
    s = torch.bmm(F.normalize(anchors, dim=-1), F.normalize(candidates, dim=-1).transpose(1, 2))
    return s, p, w, valid


def local_infonce_parts(
    anchors: Tensor,
    candidates: Tensor,
    positives: Tensor,
    weights: Tensor | None = None,
    mask: Tensor | None = None,
    tau: float = 0.3,
    per_sample: bool = False,
) -> tuple[Tensor, Tensor]:
    """The alignment and uniformity parts of a within-sample (LoVT) local InfoNCE term.

    For sample i and anchor n (a region or sentence of one view, e.g. z^I), over the candidates m of the
    other view of the SAME sample (e.g. the cross-modal z^{R->I}):

        align_{i,n}   = - sum_m p_nm s(a_{i,n}, c_{i,m}) / tau
        uniform_{i,n} = log sum_m exp(s(a_{i,n}, c_{i,m}) / tau)
        A = (1/B) sum_i sum_n w_{i,n} align_{i,n},     U = (1/B) sum_i sum_n w_{i,n} uniform_{i,n}

    Args:
        anchors: ``(B, N, d)``.
        candidates: ``(B, N, d)``; candidate m of sample i is what anchor m of sample i corresponds to.
        positives: ``(N, N)`` or ``(B, N, N)`` positive weights p_nm (rows are renormalised over the real
            candidates, so padding may be left in).
        weights: ``(B, N)`` anchor weights (attention-pooling weights; detached, zeroed on padding and
            renormalised); ``None`` = uniform over real anchors.
        mask: ``(B, N)`` True for real entries (anchors and candidates share it).
        tau: temperature.
        per_sample: return ``(B,)`` values instead of the batch means.

    Returns:
        ``(A, U)``; ``A + U`` equals :func:`local_infonce`.
    """
    s, p, w, valid = _prepare_local(anchors, candidates, positives, weights, mask)
    logits = s / tau
    align = -(p * logits).sum(-1)
    uniform = torch.logsumexp(logits.masked_fill(~valid[:, None, :], float("-inf")), dim=-1)
    # padded anchors have weight 0; torch.where keeps a -inf/NaN there (no real candidate) out of the sum
    align = torch.where(valid, align * w, torch.zeros_like(align)).sum(-1)
    uniform = torch.where(valid, uniform * w, torch.zeros_like(uniform)).sum(-1)
    if per_sample:
        return align, uniform
    return align.mean(), uniform.mean()


def local_infonce(
    anchors: Tensor,
    candidates: Tensor,
    positives: Tensor,
    weights: Tensor | None = None,
    mask: Tensor | None = None,
    tau: float = 0.3,
) -> Tensor:
    """The whole LoVT local InfoNCE term, as a soft-target cross-entropy (same arguments as the parts).

    ``-(1/B) sum_i sum_n w_{i,n} sum_m p_nm log softmax_m(s(a_{i,n}, c_{i,m}) / tau)``.
    """
    s, p, w, valid = _prepare_local(anchors, candidates, positives, weights, mask)
    log_probs = torch.log_softmax((s / tau).masked_fill(~valid[:, None, :], float("-inf")), dim=-1)
    # p is zero on padded candidates, whose log-probability is -inf: mask the product, not just p
    ce = -torch.where(p > 0, p * log_probs, torch.zeros_like(log_probs)).sum(-1)
    return torch.where(valid, ce * w, torch.zeros_like(ce)).sum(-1).mean()


# ------------------------------------------------------------------------------------------ priors


def gaussian_potential_per_sample(z: Tensor, mask: Tensor | None = None, t: float = 2.0) -> Tensor:
    """Within-sample Gaussian-potential uniformity (Wang & Isola 2020, applied per sample).

    ``U_b = log mean_{n != m} exp(-t ||z_{b,n} - z_{b,m}||^2)`` over the real entries of sample b, on
    L2-normalised embeddings. 0 when all entries coincide (collapse, the maximum); lower the more the
    entries spread over the sphere.

    Returns:
        ``(B,)``; NaN for samples with fewer than 2 real entries (no pair to compare).
    """
    valid = _valid(mask, z)
    zn = F.normalize(z, dim=-1)
    sq = (2.0 - 2.0 * torch.bmm(zn, zn.transpose(1, 2))).clamp_min(0.0)
    eye = torch.eye(z.shape[1], dtype=torch.bool, device=z.device)
    pairs = valid[:, :, None] & valid[:, None, :] & ~eye
    count = pairs.flatten(1).sum(-1)
    lse = torch.logsumexp((-t * sq).masked_fill(~pairs, float("-inf")).flatten(1), dim=-1)
    out = lse - count.clamp_min(1).to(z.dtype).log()
    return torch.where(count > 0, out, torch.full_like(out, float("nan")))


def gaussian_potential_prior(z: Tensor, mask: Tensor | None = None, t: float = 2.0) -> Tensor:
    """Mean of :func:`gaussian_potential_per_sample` over the samples with at least 2 real entries."""
    values = gaussian_potential_per_sample(z, mask, t)
    counted = ~torch.isnan(values)
    return _masked_sample_mean(torch.nan_to_num(values), counted)


def _centered(z: Tensor, mask: Tensor | None):
    valid = _valid(mask, z)
    vf = valid.to(z.dtype)[..., None]
    zn = F.normalize(z, dim=-1) * vf
    n = vf.sum(1)  # (B, 1)
    mean = zn.sum(1) / n.clamp_min(1.0)
    xc = (zn - mean[:, None, :]) * vf
    return xc, mean, n.squeeze(-1), valid


def covariance_prior_per_sample(z: Tensor, mask: Tensor | None = None, shrinkage: float = 0.5) -> Tensor:
    """A moment prior: KL divergence from the within-sample Gaussian moments to those of the uniform sphere.

    The entries of a sample (L2-normalised) have mean mu and covariance C (over its real entries). With
    49 regions in 512 dimensions C is singular, so it is shrunk towards the isotropic target:
    ``C~ = (1 - a) C + a I/d``. The value is ``KL(N(mu, C~) || N(0, I/d)) / d``: zero mean and isotropic
    covariance (what the uniform distribution on the sphere has) are the minimum; a collapsed sample
    (C = 0, ||mu|| = 1) gives the maximum ``(a - ln a) / 2``. The log-determinant uses the n x n Gram
    matrix (matrix determinant lemma), so the cost is independent of d.

    Returns:
        ``(B,)``; NaN for samples with fewer than 2 real entries.
    """
    if not 0.0 < shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in (0, 1], got {shrinkage}")
    xc, mean, n, _ = _centered(z, mask)
    d = z.shape[-1]
    big_n = z.shape[1]
    a = shrinkage
    c = a / d
    scale = (1.0 - a) / (n - 1).clamp_min(1.0)  # (B,)
    gram = torch.bmm(xc, xc.transpose(1, 2))  # (B, N, N); zero rows/cols on padding
    eye = torch.eye(big_n, dtype=z.dtype, device=z.device)
    m = c * eye + scale[:, None, None] * gram
    logdet = (d - big_n) * math.log(c) + torch.linalg.cholesky(m).diagonal(dim1=1, dim2=2).log().sum(-1) * 2
    trace_c = xc.pow(2).sum((1, 2)) / (n - 1).clamp_min(1.0)
    trace = (1.0 - a) * trace_c + a
    mu2 = mean.pow(2).sum(-1)
    # KL(N(mu, S) || N(0, I/d)) = 0.5 (d tr S + d |mu|^2 - d - d ln d - ln det S)
    kl = 0.5 * (d * trace + d * mu2 - d - d * math.log(d) - logdet)
    out = kl / d
    return torch.where(n >= 2, out, torch.full_like(out, float("nan")))


def covariance_prior(z: Tensor, mask: Tensor | None = None, shrinkage: float = 0.5) -> Tensor:
    """Mean of :func:`covariance_prior_per_sample` over the samples with at least 2 real entries."""
    values = covariance_prior_per_sample(z, mask, shrinkage)
    return _masked_sample_mean(torch.nan_to_num(values), ~torch.isnan(values))


def variance_prior_per_sample(
    z: Tensor, mask: Tensor | None = None, gamma: float | None = None, eps: float = 1e-4
) -> Tensor:
    """A VICReg-style variance hinge computed within each sample.

    ``mean_j relu(gamma - sqrt(Var_n z_{b,n,j} + eps))`` over the dimensions j, the variance taken over
    the real entries of sample b (unbiased), on L2-normalised embeddings. ``gamma`` defaults to
    ``1/sqrt(d)``, the per-coordinate standard deviation of the uniform distribution on the sphere.

    Returns:
        ``(B,)``; NaN for samples with fewer than 2 real entries.
    """
    xc, _, n, _ = _centered(z, mask)
    d = z.shape[-1]
    g = 1.0 / math.sqrt(d) if gamma is None else gamma
    var = xc.pow(2).sum(1) / (n - 1).clamp_min(1.0)[:, None]
    out = F.relu(g - torch.sqrt(var + eps)).mean(-1)
    return torch.where(n >= 2, out, torch.full_like(out, float("nan")))


def variance_prior(z: Tensor, mask: Tensor | None = None, gamma: float | None = None) -> Tensor:
    """Mean of :func:`variance_prior_per_sample` over the samples with at least 2 real entries."""
    values = variance_prior_per_sample(z, mask, gamma)
    return _masked_sample_mean(torch.nan_to_num(values), ~torch.isnan(values))


def random_directions(
    n: int, d: int, generator: torch.Generator | None = None, device=None, dtype: torch.dtype | None = None
) -> Tensor:
    """``n`` directions drawn uniformly on the unit sphere in ``d`` dimensions (``(n, d)``)."""
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    return F.normalize(x, dim=-1).to(device=device, dtype=dtype or torch.get_default_dtype())


@functools.lru_cache(maxsize=64)
def sphere_projection_quantiles(d: int, n: int) -> np.ndarray:
    """Quantiles at (k + 1/2)/n, k < n, of <u, theta> for u uniform on the sphere S^{d-1} (any unit theta).

    That projection t has density proportional to (1 - t^2)^((d-3)/2), i.e. (t + 1)/2 ~ Beta((d-1)/2, (d-1)/2).
    """
    from scipy.special import betaincinv

    a = (d - 1) / 2.0
    levels = (np.arange(n) + 0.5) / n
    return 2.0 * betaincinv(a, a, levels) - 1.0


def sliced_wasserstein_prior_per_sample(
    z: Tensor, mask: Tensor | None = None, directions: Tensor | None = None, n_directions: int = 64
) -> Tensor:
    """Sliced Wasserstein-2 distance between a sample's entries and the uniform distribution on the sphere.

    For each direction theta the real entries of sample b (L2-normalised) are projected, sorted, and
    compared with the quantiles of the projection of the uniform distribution (exact, from the Beta law of
    ``<u, theta>``, so there is no sampling noise besides the directions):
    ``SW_b = mean_theta (1/n_b) sum_k (sorted_k - q_k(n_b))^2``. Zero is the ideal; a collapsed sample
    scores about ``<z, theta>^2 + 1/d``.

    Args:
        directions: ``(P, d)`` unit directions (fixed ones make the value deterministic); default:
            ``n_directions`` fresh random directions.

    Returns:
        ``(B,)``; NaN for samples without real entries.
    """
    valid = _valid(mask, z)
    b, big_n, d = z.shape
    if directions is None:
        directions = random_directions(n_directions, d, device=z.device, dtype=z.dtype)
    proj = F.normalize(z, dim=-1) @ directions.to(z.dtype).T  # (B, N, P)
    proj = proj.masked_fill(~valid[..., None], float("inf"))  # padding sorts last
    proj, _ = proj.sort(dim=1)
    counts = valid.sum(-1)
    table = np.zeros((big_n + 1, big_n))
    for k in range(1, big_n + 1):
        table[k, :k] = sphere_projection_quantiles(d, k)
    q = torch.as_tensor(table, dtype=z.dtype, device=z.device)[counts]  # (B, N)
    keep = torch.arange(big_n, device=z.device)[None, :] < counts[:, None]  # (B, N)
    sq = torch.where(keep[..., None], (proj - q[..., None]) ** 2, torch.zeros_like(proj))
    out = sq.sum(1).mean(-1) / counts.clamp_min(1).to(z.dtype)
    return torch.where(counts > 0, out, torch.full_like(out, float("nan")))


def sliced_wasserstein_prior(
    z: Tensor, mask: Tensor | None = None, directions: Tensor | None = None, n_directions: int = 64
) -> Tensor:
    """Mean of :func:`sliced_wasserstein_prior_per_sample` over the samples with real entries."""
    values = sliced_wasserstein_prior_per_sample(z, mask, directions, n_directions)
    return _masked_sample_mean(torch.nan_to_num(values), ~torch.isnan(values))


# ------------------------------------------------------------------------ priors on a common scale

PRIOR_FAMILIES = ("gauss", "cov", "var", "swd")


def prior_per_sample(
    family: str,
    z: Tensor,
    mask: Tensor | None = None,
    *,
    t: float = 2.0,
    shrinkage: float = 0.5,
    n_directions: int = 64,
    directions: Tensor | None = None,
) -> Tensor:
    """The raw per-sample value of a prior family (``gauss``, ``cov``, ``var``, ``swd``); ``(B,)``."""
    if family == "gauss":
        return gaussian_potential_per_sample(z, mask, t)
    if family == "cov":
        return covariance_prior_per_sample(z, mask, shrinkage)
    if family == "var":
        return variance_prior_per_sample(z, mask)
    if family == "swd":
        return sliced_wasserstein_prior_per_sample(z, mask, directions, n_directions)
    raise ValueError(f"unknown prior family {family!r}; known: {', '.join(PRIOR_FAMILIES)}")


@functools.lru_cache(maxsize=4096)
def prior_range(
    family: str,
    n: int,
    d: int,
    t: float = 2.0,
    shrinkage: float = 0.5,
    n_directions: int = 64,
    draws: int = 256,
) -> tuple[float, float]:
    """``(uniform, collapsed)``: a prior's raw value for n entries in d dimensions at the two ends.

    - collapsed (all n entries equal), exact: gauss 0; cov ``(a - ln a) / 2``; var
      ``relu(1/sqrt(d) - sqrt(eps))``; swd ``1/d + mean_k q_k(n)^2`` (its expectation over directions:
      ``E <z, theta>^2 = 1/d``, and the quantiles q_k average to 0).
    - uniform: the mean value over ``draws`` samples of n entries drawn independently and uniformly on
      the sphere (measured once per (family, n, d, ...) with a fixed seed, float64; for swd with fresh
      random directions per draw set, as in training). Not the population value 0 (cov, var, swd) or
      ``log E exp(-t ||u - v||^2)`` (gauss): n points cannot be more uniform than n random points, and with
      49 regions in 512 dimensions the moment prior of random points is far from 0.
    """
    if family not in PRIOR_FAMILIES:
        raise ValueError(f"unknown prior family {family!r}; known: {', '.join(PRIOR_FAMILIES)}")
    if n < 2:
        return math.nan, math.nan
    if family == "gauss":
        collapsed = 0.0
    elif family == "cov":
        collapsed = (shrinkage - math.log(shrinkage)) / 2.0
    elif family == "var":
        collapsed = max(0.0, 1.0 / math.sqrt(d) - math.sqrt(1e-4))
    else:
        collapsed = 1.0 / d + float(np.mean(sphere_projection_quantiles(d, n) ** 2))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(draws, n, d, generator=g, dtype=torch.float64)
    directions = random_directions(n_directions, d, generator=g, dtype=torch.float64)
    values = prior_per_sample(
        family, z, None, t=t, shrinkage=shrinkage, n_directions=n_directions, directions=directions
    )
    return float(values.mean()), collapsed


def normalized_prior(
    family: str,
    z: Tensor,
    mask: Tensor | None = None,
    *,
    t: float = 2.0,
    shrinkage: float = 0.5,
    n_directions: int = 64,
    directions: Tensor | None = None,
    per_sample: bool = False,
) -> Tensor:
    """A prior on the common scale: ``(raw_b - uniform(n_b)) / (collapsed(n_b) - uniform(n_b))``.

    0 = as uniform as n_b random points on the sphere, 1 = collapsed, for every family, so one weight means
    the same for each (see :func:`prior_range`; n_b = the real entries of sample b). Mean over the samples
    with at least 2 real entries (``per_sample``: the ``(B,)`` values, NaN for the others).
    """
    raw = prior_per_sample(
        family, z, mask, t=t, shrinkage=shrinkage, n_directions=n_directions, directions=directions
    )
    counts = _valid(mask, z).sum(-1)
    ends = {
        int(c): prior_range(family, int(c), z.shape[-1], float(t), float(shrinkage), int(n_directions))
        for c in counts.unique().tolist()
    }
    uniform = torch.tensor([ends[int(c)][0] for c in counts.tolist()], dtype=raw.dtype, device=raw.device)
    collapsed = torch.tensor([ends[int(c)][1] for c in counts.tolist()], dtype=raw.dtype, device=raw.device)
    values = (raw - uniform) / (collapsed - uniform)
    if per_sample:
        return values
    return _masked_sample_mean(torch.nan_to_num(values), ~torch.isnan(values))
