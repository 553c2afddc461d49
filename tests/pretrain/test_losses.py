"""Pretraining losses: vectorised == brute-force loops (with padding), parts add up, descent, priors' extremes."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import beta

from pretrain import losses as L
from pretrain.config import PRESETS, TERMS, LossConfig, parse_weight_overrides, preset_config
from pretrain.objective import compute_terms, total_loss


@pytest.fixture(autouse=True)
def _float64():
    """Exact comparisons against the loops: every test of this module runs in float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def cos(u, v) -> float:
    return float(torch.dot(u, v) / (u.norm() * v.norm()))


def padded_batch(seed=0, b=4, n=6, d=5):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(b, n, d, generator=g)
    c = torch.randn(b, n, d, generator=g)
    w = torch.rand(b, n, generator=g)
    lengths = [n, 1, 3, n - 1][:b]
    mask = torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]
    # garbage in the padding must not matter
    a = torch.where(mask[..., None], a, torch.full_like(a, 1e3))
    c = torch.where(mask[..., None], c, torch.full_like(c, -7.0))
    return a, c, w, mask


# ------------------------------------------------------------------------------------ brute force


def global_loop(zi, zr, tau):
    b = zi.shape[0]
    i2r = r2i = 0.0
    for i in range(b):
        num = math.exp(cos(zi[i], zr[i]) / tau)
        i2r -= math.log(num / sum(math.exp(cos(zi[i], zr[k]) / tau) for k in range(b)))
        r2i -= math.log(num / sum(math.exp(cos(zi[k], zr[i]) / tau) for k in range(b)))
    return i2r / b, r2i / b


def local_loop(anchors, candidates, pos, weights, mask, tau):
    b, n, _ = anchors.shape
    align_total = uniform_total = 0.0
    for i in range(b):
        real = [m for m in range(n) if mask is None or bool(mask[i, m])]
        wsum = sum(float(weights[i, m]) for m in real)
        for a in real:
            p = pos[i] if pos.ndim == 3 else pos
            psum = sum(float(p[a, m]) for m in real)
            sims = {m: cos(anchors[i, a], candidates[i, m]) / tau for m in real}
            align = -sum(float(p[a, m]) / psum * sims[m] for m in real)
            uniform = math.log(sum(math.exp(sims[m]) for m in real))
            align_total += float(weights[i, a]) / wsum * align
            uniform_total += float(weights[i, a]) / wsum * uniform
    return align_total / b, uniform_total / b


def gauss_loop(z, mask, t):
    values = []
    for i in range(z.shape[0]):
        real = [m for m in range(z.shape[1]) if mask is None or bool(mask[i, m])]
        zn = [z[i, m] / z[i, m].norm() for m in real]
        pairs = [
            math.exp(-t * float((zn[p] - zn[q]).pow(2).sum()))
            for p in range(len(zn))
            for q in range(len(zn))
            if p != q
        ]
        if pairs:
            values.append(math.log(sum(pairs) / len(pairs)))
    return sum(values) / len(values)


def cov_loop(z, mask, a):
    values = []
    d = z.shape[-1]
    for i in range(z.shape[0]):
        x = torch.stack(
            [z[i, m] / z[i, m].norm() for m in range(z.shape[1]) if mask is None or bool(mask[i, m])]
        )
        if len(x) < 2:
            continue
        mu = x.mean(0)
        cov = torch.cov(x.T)  # unbiased, d x d
        s = (1 - a) * cov + a * torch.eye(d) / d
        target = torch.eye(d) / d
        kl = 0.5 * (
            torch.trace(torch.linalg.inv(target) @ s)
            + mu @ torch.linalg.inv(target) @ mu
            - d
            + torch.logdet(target)
            - torch.logdet(s)
        )
        values.append(float(kl) / d)
    return sum(values) / len(values)


def var_loop(z, mask, eps=1e-4):
    values = []
    d = z.shape[-1]
    for i in range(z.shape[0]):
        x = torch.stack(
            [z[i, m] / z[i, m].norm() for m in range(z.shape[1]) if mask is None or bool(mask[i, m])]
        )
        if len(x) < 2:
            continue
        hinge = [max(0.0, 1 / math.sqrt(d) - math.sqrt(float(x[:, j].var()) + eps)) for j in range(d)]
        values.append(sum(hinge) / d)
    return sum(values) / len(values)


def swd_loop(z, mask, directions):
    values = []
    d = z.shape[-1]
    for i in range(z.shape[0]):
        x = [z[i, m] / z[i, m].norm() for m in range(z.shape[1]) if mask is None or bool(mask[i, m])]
        n = len(x)
        q = [2 * beta.ppf((k + 0.5) / n, (d - 1) / 2, (d - 1) / 2) - 1 for k in range(n)]
        per_dir = []
        for theta in directions:
            proj = sorted(float(v @ theta) for v in x)
            per_dir.append(sum((p - qq) ** 2 for p, qq in zip(proj, q)) / n)
        values.append(sum(per_dir) / len(per_dir))
    return sum(values) / len(values)


# ------------------------------------------------------------------------------- equal to the loops


def test_global_infonce_matches_loop():
    g = torch.Generator().manual_seed(1)
    zi, zr = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    i2r, r2i = L.global_infonce(zi, zr, tau=0.1)
    ref = global_loop(zi, zr, 0.1)
    assert float(i2r) == pytest.approx(ref[0], rel=1e-10) and float(r2i) == pytest.approx(ref[1], rel=1e-10)


@pytest.mark.parametrize("image_side", [True, False])
def test_local_infonce_parts_match_loop_and_add_up(image_side):
    if image_side:  # a 2 x 3 grid of regions, spatially smoothed positives, no padding
        a, c, w, _ = padded_batch(seed=2, n=6)
        pos, mask = L.spatial_positive_weights(2, 3, threshold=0.5), None
    else:  # sentences: identity positives, padding
        a, c, w, mask = padded_batch(seed=3, n=6)
        pos = L.identity_positive_weights(6)
    align, uniform = L.local_infonce_parts(a, c, pos, w, mask, tau=0.3)
    ref_align, ref_uniform = local_loop(a, c, pos, w, mask, 0.3)
    assert float(align) == pytest.approx(ref_align, rel=1e-10, abs=1e-12)
    assert float(uniform) == pytest.approx(ref_uniform, rel=1e-10)
    # the two parts are exactly the LoVT term (computed independently as a soft-target cross-entropy)
    whole = L.local_infonce(a, c, pos, w, mask, tau=0.3)
    assert float(align + uniform) == pytest.approx(float(whole), rel=1e-12, abs=1e-12)
    per_a, per_u = L.local_infonce_parts(a, c, pos, w, mask, tau=0.3, per_sample=True)
    assert per_a.shape == (4,) and float(per_a.mean()) == pytest.approx(float(align), rel=1e-12)


def test_spatial_positive_weights():
    p = L.spatial_positive_weights(7, 7, threshold=0.5, lam=1.0)
    assert p.shape == (49, 49) and torch.allclose(p.sum(1), torch.ones(49))
    # hand-computed: the corner region (0, 0) of a 2 x 2 grid; distances / diagonal sqrt(8)
    q = L.spatial_positive_weights(2, 2, threshold=0.5, lam=1.0)
    d1 = 1 / math.sqrt(8)
    e = [1.0, math.exp(-d1), math.exp(-d1), math.exp(-math.sqrt(2) / math.sqrt(8))]
    assert q[0].tolist() == pytest.approx([x / sum(e) for x in e])
    # beyond the threshold there is no positive
    far = L.spatial_positive_weights(7, 7, threshold=0.2)
    assert far[0, 48] == 0 and far[0, 0] > far[0, 1] > 0


def test_padding_does_not_change_the_value():
    a, c, w, mask = padded_batch(seed=4)
    pos = L.identity_positive_weights(6)
    a2 = torch.where(mask[..., None], a, torch.randn_like(a))
    dirs = L.random_directions(8, 5)
    for f in (
        lambda x: L.local_infonce_parts(x, c, pos, w, mask)[0],
        lambda x: L.local_infonce_parts(x, c, pos, w, mask)[1],
        lambda x: L.gaussian_potential_prior(x, mask),
        lambda x: L.covariance_prior(x, mask),
        lambda x: L.variance_prior(x, mask),
        lambda x: L.sliced_wasserstein_prior(x, mask, directions=dirs),
    ):
        assert float(f(a)) == pytest.approx(float(f(a2)), rel=1e-12)


def test_gaussian_potential_matches_loop():
    a, _, _, mask = padded_batch(seed=5)
    assert float(L.gaussian_potential_prior(a, mask, t=2.0)) == pytest.approx(
        gauss_loop(a, mask, 2.0), rel=1e-10
    )
    per = L.gaussian_potential_per_sample(a, mask)
    assert torch.isnan(per[1]) and not torch.isnan(per[[0, 2, 3]]).any()  # one entry: no pair


@pytest.mark.parametrize("n,d", [(6, 5), (4, 9)])  # fewer and more dimensions than entries
def test_covariance_prior_matches_loop(n, d):
    a, _, _, mask = padded_batch(seed=6, n=n, d=d)
    assert float(L.covariance_prior(a, mask, shrinkage=0.3)) == pytest.approx(
        cov_loop(a, mask, 0.3), rel=1e-9
    )


def test_variance_prior_matches_loop():
    a, _, _, mask = padded_batch(seed=7, d=40)  # low variance per dimension: the hinge is active
    value = float(L.variance_prior(a, mask))
    assert value > 0 and value == pytest.approx(var_loop(a, mask), rel=1e-10)


def test_sliced_wasserstein_matches_loop():
    a, _, _, mask = padded_batch(seed=8)
    dirs = L.random_directions(7, 5, generator=torch.Generator().manual_seed(0))
    value = L.sliced_wasserstein_prior(a, mask, directions=dirs)
    assert float(value) == pytest.approx(swd_loop(a, mask, dirs), rel=1e-8)


# ------------------------------------------------------------------------------ descent, gradients


def _descend(fn, *params, steps=60, lr=0.05):
    opt = torch.optim.Adam(params, lr=lr)
    first = float(fn().detach())
    for _ in range(steps):
        opt.zero_grad()
        loss = fn()
        loss.backward()
        for p in params:
            assert p.grad is None or torch.isfinite(p.grad).all()
        opt.step()
    return first, float(fn().detach())


LOCAL_LOSSES = {
    "global_i2r": lambda a, c, w, m: L.global_infonce(a[:, 0], c[:, 0])[0],
    "global_r2i": lambda a, c, w, m: L.global_infonce(a[:, 0], c[:, 0])[1],
    "align": lambda a, c, w, m: L.local_infonce_parts(a, c, L.identity_positive_weights(6), w, m)[0],
    "uniform": lambda a, c, w, m: L.local_infonce_parts(a, c, L.identity_positive_weights(6), w, m)[1],
    "lovt_local": lambda a, c, w, m: L.local_infonce(a, c, L.spatial_positive_weights(2, 3), w, None),
    "gauss": lambda a, c, w, m: L.gaussian_potential_prior(a, m),
    "cov": lambda a, c, w, m: L.covariance_prior(a, m),
    "var": lambda a, c, w, m: L.variance_prior(a, m),
    "swd": lambda a, c, w, m: L.sliced_wasserstein_prior(
        a, m, directions=L.random_directions(16, 5, torch.Generator().manual_seed(1))
    ),
}


@pytest.mark.parametrize("name", list(LOCAL_LOSSES))
def test_each_loss_goes_down_when_optimised(name):
    a, c, w, mask = padded_batch(seed=9)
    a = torch.where(mask[..., None], a, torch.zeros_like(a)).requires_grad_()
    c = torch.where(mask[..., None], c, torch.zeros_like(c)).requires_grad_()
    first, last = _descend(lambda: LOCAL_LOSSES[name](a, c, w, mask), a, c)
    assert last < first - 1e-3, (name, first, last)


def test_gradients_finite_with_single_sentence_samples():
    """Samples with one sentence (no pair for a prior) and padding must not produce NaN gradients."""
    a, c, w, mask = padded_batch(seed=10)
    mask[1] = False
    mask[1, 0] = True
    a.requires_grad_()
    c.requires_grad_()
    pos = L.identity_positive_weights(6)
    total = (
        sum(L.local_infonce_parts(a, c, pos, w, mask))
        + L.gaussian_potential_prior(a, mask)
        + L.covariance_prior(a, mask)
        + L.variance_prior(a, mask)
        + L.sliced_wasserstein_prior(a, mask)
    )
    total.backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(c.grad).all()
    assert (a.grad[~mask] == 0).all()  # padding receives no gradient


# ---------------------------------------------------------------------------- priors' extremes

PRIORS = {
    "gauss": L.gaussian_potential_prior,
    "cov": L.covariance_prior,
    "var": L.variance_prior,
    "swd": lambda z, m=None: L.sliced_wasserstein_prior(
        z, m, directions=L.random_directions(64, z.shape[-1], torch.Generator().manual_seed(2))
    ),
}


def _spread(b, n, d, seed=0):
    """n entries per sample as far apart as possible: a random orthonormal frame with +- signs (n <= 2d)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(b):
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
        frame = torch.cat([q.T, -q.T])[:n]
        out.append(frame)
    return torch.stack(out)


@pytest.mark.parametrize("name", list(PRIORS))
def test_prior_minimal_for_spread_out_maximal_for_collapsed(name):
    b, n, d = 3, 16, 8
    f = PRIORS[name]
    g = torch.Generator().manual_seed(3)
    collapsed = torch.randn(b, 1, d, generator=g).expand(b, n, d).contiguous()
    spread = _spread(b, n, d)
    clustered = collapsed + 0.3 * torch.randn(b, n, d, generator=g)
    random = torch.randn(b, n, d, generator=g)
    values = {
        k: float(f(v))
        for k, v in dict(collapsed=collapsed, clustered=clustered, random=random, spread=spread).items()
    }
    assert values["collapsed"] > values["clustered"] > values["random"] >= values["spread"] - 1e-9, values
    if name == "gauss":
        assert values["collapsed"] == pytest.approx(0.0, abs=1e-12)  # log mean exp(0)
    if name == "cov":
        a = 0.5
        assert values["collapsed"] == pytest.approx((a - math.log(a)) / 2, rel=1e-6)
    if name == "var":
        assert values["collapsed"] == pytest.approx(1 / math.sqrt(d) - 1e-2, rel=1e-6)
    # optimising the prior from a collapsed start spreads the embeddings out
    z = (clustered.clone()).requires_grad_()
    first, last = _descend(lambda: f(z), z, steps=80, lr=0.05)
    assert last < first


# ------------------------------------------------------------------------------- config, objective


def test_presets_and_weights():
    assert set(PRESETS) == {
        "clip",
        "convirt",
        "lovt",
        "lovt_align_only",
        "lovt_uniform_only",
        "global_prior",
        "align_prior",
    }
    for p in PRESETS.values():
        assert set(p.weights) <= set(TERMS)
    lovt = LossConfig(PRESETS["lovt"].weights)
    assert lovt.needs_cross_attention and lovt.needs_local
    gp = LossConfig(PRESETS["global_prior"].weights)
    assert not gp.needs_cross_attention and gp.needs_local
    assert not LossConfig(PRESETS["clip"].weights).needs_local
    with pytest.raises(ValueError, match="unknown loss term"):
        LossConfig({"global": 1.0})
    with pytest.raises(ValueError, match="nothing to optimise"):
        LossConfig({"global_i2r": 0.0})
    assert parse_weight_overrides(["img_prior_cov=0.5"]) == {"img_prior_cov": 0.5}
    with pytest.raises(ValueError, match="TERM=VALUE"):
        parse_weight_overrides(["bogus=1"])
    cfg = preset_config("clip", weights={"img_prior_swd": 0.2})
    assert cfg.loss.weights["img_prior_swd"] == 0.2 and cfg.model.pool == "attention"
    assert preset_config("convirt").model.pool == "avg" and preset_config("convirt").sentences == "one_random"


def _fake_outputs(seed=0, b=4, h=2, w=3, s=5, d=6):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    mask = torch.arange(s)[None, :] < torch.tensor([5, 2, 3, 1])[:, None]
    return {
        "img_global": r(b, d),
        "rep_global": r(b, d),
        "img_local": r(b, h * w, d),
        "img_cross": r(b, h * w, d),
        "rep_local": r(b, s, d),
        "rep_cross": r(b, s, d),
        "img_weights": torch.softmax(r(b, h * w), -1),
        "rep_weights": torch.softmax(r(b, s).masked_fill(~mask, -torch.inf), -1),
        "rep_mask": mask,
        "grid": torch.tensor([h, w]),
    }


def test_objective_lovt_equals_the_spec_formula():
    """L = L_global + 0.375 (four local InfoNCE terms), each term computed here the independent way."""
    out = _fake_outputs()
    cfg = LossConfig(PRESETS["lovt"].weights)
    terms = compute_terms(out, cfg)
    assert set(terms) == set(cfg.active())
    i2r, r2i = L.global_infonce(out["img_global"], out["rep_global"], 0.1)
    sp = L.spatial_positive_weights(2, 3)
    ident = L.identity_positive_weights(5)
    local = (
        L.local_infonce(out["img_local"], out["img_cross"], sp, out["img_weights"], None, 0.3)
        + L.local_infonce(out["img_cross"], out["img_local"], sp, out["img_weights"], None, 0.3)
        + L.local_infonce(out["rep_local"], out["rep_cross"], ident, out["rep_weights"], out["rep_mask"], 0.3)
        + L.local_infonce(out["rep_cross"], out["rep_local"], ident, out["rep_weights"], out["rep_mask"], 0.3)
    )
    expected = 0.75 * i2r + 0.25 * r2i + 0.375 * local
    assert float(total_loss(terms, cfg)) == pytest.approx(float(expected), rel=1e-10)
    # the alignment-only and uniformity-only presets split that local sum between them
    a = total_loss(
        compute_terms(out, LossConfig(PRESETS["lovt_align_only"].weights)),
        LossConfig(PRESETS["lovt_align_only"].weights),
    )
    u = total_loss(
        compute_terms(out, LossConfig(PRESETS["lovt_uniform_only"].weights)),
        LossConfig(PRESETS["lovt_uniform_only"].weights),
    )
    g = 0.75 * i2r + 0.25 * r2i
    assert float(a - g + u - g) == pytest.approx(float(0.375 * local), rel=1e-10)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_computes_exactly_its_terms(preset):
    cfg = LossConfig(PRESETS[preset].weights)
    terms = compute_terms(_fake_outputs(), cfg)
    assert list(terms) == [t for t in TERMS if t in cfg.weights]
    assert all(torch.isfinite(v) for v in terms.values())
