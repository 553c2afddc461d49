"""Loss terms, presets and the settings of a pretraining run (frozen dataclasses, defaults in one place).

A pretraining objective is a weighted sum of named terms (:data:`TERMS`); a weight of 0 means the term is
not computed at all. Any combination of global, local-alignment, local-uniformity and prior terms is one
``weights`` mapping; the presets are named by what they compute.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from types import MappingProxyType

# name -> what it computes. Image-side local terms act on the 7 x 7 regions, report-side ones on the
# sentences; "l2att" anchors a region / sentence embedding z against the cross-modal attended z^{x->y} of
# the same sample, "att2l" the other way round.
TERMS: Mapping[str, str] = MappingProxyType(
    {
        "global_i2r": "global InfoNCE, image -> report (negatives: the other reports of the batch)",
        "global_r2i": "global InfoNCE, report -> image",
        "img_l2att_align": "image local InfoNCE (region -> attended report), alignment part",
        "img_l2att_uniform": "image local InfoNCE (region -> attended report), uniformity part",
        "img_att2l_align": "image local InfoNCE (attended report -> region), alignment part",
        "img_att2l_uniform": "image local InfoNCE (attended report -> region), uniformity part",
        "rep_l2att_align": "report local InfoNCE (sentence -> attended image), alignment part",
        "rep_l2att_uniform": "report local InfoNCE (sentence -> attended image), uniformity part",
        "rep_att2l_align": "report local InfoNCE (attended image -> sentence), alignment part",
        "rep_att2l_uniform": "report local InfoNCE (attended image -> sentence), uniformity part",
        "img_prior_gauss": "within-sample Gaussian-potential uniformity of the region embeddings",
        "rep_prior_gauss": "within-sample Gaussian-potential uniformity of the sentence embeddings",
        "img_prior_cov": "within-sample moment prior (shrunk covariance vs isotropic, KL) of the regions",
        "rep_prior_cov": "within-sample moment prior (shrunk covariance vs isotropic, KL) of the sentences",
        "img_prior_var": "within-sample variance hinge (VICReg-style) of the region embeddings",
        "rep_prior_var": "within-sample variance hinge (VICReg-style) of the sentence embeddings",
        "img_prior_swd": "sliced Wasserstein distance of the regions to the uniform sphere",
        "rep_prior_swd": "sliced Wasserstein distance of the sentences to the uniform sphere",
    }
)
LOCAL_TERMS = tuple(t for t in TERMS if t.startswith(("img_l2att", "img_att2l", "rep_l2att", "rep_att2l")))
PRIOR_TERMS = tuple(t for t in TERMS if "_prior_" in t)

LOVT_LOCAL = 0.375  # LoVT: L = L_global + 0.375 (sum of the four local InfoNCE terms)
GLOBAL = {"global_i2r": 0.75, "global_r2i": 0.25}


def _alignment_terms(weight: float) -> dict[str, float]:
    return {t: weight for t in LOCAL_TERMS if t.endswith("_align")}


def _uniformity_terms(weight: float) -> dict[str, float]:
    return {t: weight for t in LOCAL_TERMS if t.endswith("_uniform")}


@dataclass(frozen=True)
class Preset:
    """A named objective: loss weights plus the few model / data choices that belong to a method."""

    name: str
    description: str
    weights: Mapping[str, float]
    pool: str = "attention"  # global feature from the regions / sentences: attention | avg
    sentences: str = "all"  # all | one_random (a random sentence per step, as ConVIRT)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "clip",
            "global InfoNCE only (0.75 image->report + 0.25 report->image), attention pooling",
            dict(GLOBAL),
        ),
        Preset(
            "convirt",
            "global InfoNCE only, average pooling, one random sentence of the report per step",
            dict(GLOBAL),
            pool="avg",
            sentences="one_random",
        ),
        Preset(
            "lovt",
            "global InfoNCE + the four LoVT local InfoNCE terms (alignment + uniformity parts), 0.375 each",
            {**GLOBAL, **_alignment_terms(LOVT_LOCAL), **_uniformity_terms(LOVT_LOCAL)},
        ),
        Preset(
            "lovt_align_only",
            "global InfoNCE + only the alignment parts of the four local terms (no intra-sample negatives)",
            {**GLOBAL, **_alignment_terms(LOVT_LOCAL)},
        ),
        Preset(
            "lovt_uniform_only",
            "global InfoNCE + only the uniformity parts (log-sum-exp over the sample) of the four local terms",
            {**GLOBAL, **_uniformity_terms(LOVT_LOCAL)},
        ),
        Preset(
            "global_prior",
            "global InfoNCE + within-sample Gaussian-potential uniformity prior on regions and sentences; "
            "no cross-modal local terms",
            {**GLOBAL, "img_prior_gauss": LOVT_LOCAL, "rep_prior_gauss": LOVT_LOCAL},
        ),
        Preset(
            "align_prior",
            "global InfoNCE + local alignment parts + Gaussian-potential prior instead of the intra-sample "
            "negatives",
            {
                **GLOBAL,
                **_alignment_terms(LOVT_LOCAL),
                "img_prior_gauss": LOVT_LOCAL,
                "rep_prior_gauss": LOVT_LOCAL,
            },
        ),
    ]
}


@dataclass(frozen=True)
class LossConfig:
    """Weights of the terms and their hyper-parameters.

    Attributes:
        weights: term name (see :data:`TERMS`) -> weight; missing terms weigh 0 and are not computed.
        tau_global / tau_local: temperatures of the global and local InfoNCE.
        smooth_threshold / smooth_lambda: spatial smoothing of the image positives
            (``p_nm ~ 1[d <= threshold] exp(-lambda d)``, d relative to the grid diagonal).
        prior_t: Gaussian-potential scale t.
        cov_shrinkage: shrinkage a of the moment prior's covariance towards I/d.
        swd_directions: random directions of the sliced Wasserstein prior (fresh every step).
    """

    weights: Mapping[str, float] = field(default_factory=lambda: dict(GLOBAL))
    tau_global: float = 0.1
    tau_local: float = 0.3
    smooth_threshold: float = 0.5
    smooth_lambda: float = 1.0
    prior_t: float = 2.0
    cov_shrinkage: float = 0.5
    swd_directions: int = 64

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(TERMS))
        if unknown:
            raise ValueError(f"unknown loss term(s) {', '.join(unknown)}; known terms: {', '.join(TERMS)}")
        bad = {k: v for k, v in self.weights.items() if not isinstance(v, (int, float)) or v < 0}
        if bad:
            raise ValueError(f"loss weights must be numbers >= 0, got {bad}")
        object.__setattr__(self, "weights", {k: float(v) for k, v in self.weights.items() if v})
        if not self.weights:
            raise ValueError("every loss weight is 0: nothing to optimise")

    def active(self) -> tuple[str, ...]:
        """The terms with a nonzero weight, in :data:`TERMS` order."""
        return tuple(t for t in TERMS if self.weights.get(t, 0.0))

    def needs(self, *prefixes: str) -> bool:
        return any(t.startswith(prefixes) for t in self.active())

    @property
    def needs_cross_attention(self) -> bool:
        return self.needs("img_l2att", "img_att2l", "rep_l2att", "rep_att2l")

    @property
    def needs_local(self) -> bool:
        return self.needs_cross_attention or self.needs("img_prior", "rep_prior")


@dataclass(frozen=True)
class ModelConfig:
    """The image-text model (LoVT's architecture; see docs/spec pretraining.md).

    Attributes:
        image_arch: torchvision ResNet (``resnet50`` for exports the benchmark compares; ``resnet18`` for
            quick runs).
        image_init: ``imagenet`` (torchvision weights from the torch hub cache / ``$CXRBENCH_WEIGHTS_DIR``),
            ``random``, or a path to a torchvision-layout state dict.
        text_model: Hugging Face BERT name or local folder.
        text_frozen_layers: the embeddings and this many first encoder layers are frozen (LoVT: 6).
        max_tokens: the whole report is encoded at once, truncated to this many tokens.
        proj_hidden / proj_dim: projection MLPs d -> hidden -> dim.
        heads: heads of the attention pooling.
        pool: ``attention`` (LoVT, CLIP) or ``avg`` (ConVIRT) global pooling.
    """

    image_arch: str = "resnet50"
    image_init: str = "imagenet"
    text_model: str = "emilyalsentzer/Bio_ClinicalBERT"
    text_frozen_layers: int = 6
    max_tokens: int = 512
    proj_hidden: int = 2048
    proj_dim: int = 512
    heads: int = 8
    pool: str = "attention"

    def __post_init__(self) -> None:
        if self.pool not in ("attention", "avg"):
            raise ValueError(f"pool must be 'attention' or 'avg', got {self.pool!r}")


@dataclass(frozen=True)
class AugmentConfig:
    """Image and text augmentation (LoVT's; ``enabled=False`` for validation)."""

    enabled: bool = True
    crop_scale: tuple[float, float] = (0.6, 1.0)
    hflip_p: float = 0.5
    rotate_deg: float = 20.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.95, 1.05)
    brightness: tuple[float, float] = (0.6, 1.4)
    contrast: tuple[float, float] = (0.6, 1.4)
    blur_sigma: tuple[float, float] = (0.1, 3.0)
    sentence_swap_p: float = 0.4  # number of random sentence swaps ~ Geometric(p), support 0, 1, ...


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (LoVT's reference values as defaults)."""

    epochs: int = 100
    batch_size: int = 32
    accumulate: int = 16  # gradient accumulation; negatives come only from the batch of one forward pass
    lr: float = 1e-4
    weight_decay: float = 1e-6
    warmup_iters: int = 0
    patience: int = 10  # early stopping on the validation loss (epochs); 0 = off
    num_workers: int = 0
    amp: bool = False
    seed: int = 0
    image_size: int = 224
    checkpoint_interval: int = 1  # epochs
    log_interval: int = 50  # iterations


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that determines a pretraining run (written next to its results as ``config.json``)."""

    preset: str
    loss: LossConfig
    model: ModelConfig
    train: TrainConfig
    augment: AugmentConfig = AugmentConfig()
    sentences: str = "all"
    data: Mapping = field(default_factory=dict)  # where the pairs came from (kind, path, counts)

    def to_dict(self) -> dict:
        return asdict(self)

    def hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: Mapping) -> PretrainConfig:
        def build(klass, values):
            names = {f.name for f in fields(klass)}
            kept = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in names}
            return klass(**kept)

        return cls(
            preset=d["preset"],
            loss=build(LossConfig, d["loss"]),
            model=build(ModelConfig, d["model"]),
            train=build(TrainConfig, d["train"]),
            augment=build(AugmentConfig, d.get("augment", {})),
            sentences=d.get("sentences", "all"),
            data=d.get("data", {}),
        )


def preset_config(
    name: str,
    *,
    weights: Mapping[str, float] | None = None,
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
    augment: AugmentConfig | None = None,
    loss_overrides: Mapping | None = None,
    data: Mapping | None = None,
) -> PretrainConfig:
    """The config of a preset, with optional weight overrides (``{"img_prior_gauss": 0.5}``)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset '{name}'; known: {', '.join(PRESETS)}")
    p = PRESETS[name]
    w = dict(p.weights)
    w.update(weights or {})
    loss = LossConfig(weights=w, **dict(loss_overrides or {}))
    model = replace(model or ModelConfig(), pool=p.pool)
    return PretrainConfig(
        preset=name,
        loss=loss,
        model=model,
        train=train or TrainConfig(),
        augment=augment or AugmentConfig(),
        sentences=p.sentences,
        data=dict(data or {}),
    )


def parse_weight_overrides(items: list[str] | None) -> dict[str, float]:
    """``["img_prior_gauss=0.5", "global_r2i=0"]`` -> dict, with an error naming a bad item."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or name not in TERMS:
            raise ValueError(f"--weight expects TERM=VALUE with TERM one of {', '.join(TERMS)}; got {item!r}")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"--weight {item!r}: {value!r} is not a number") from None
    return out
