"""From command-line style options to a configured run: data source, defaults, overrides.

Two sets of defaults:

- real data (``--data`` MIMIC-CXR, ``--manifest``): the reference protocol - ResNet-50 from ImageNet,
  224 px, Bio_ClinicalBERT with 6 frozen layers, AdamW lr 1e-4, batch 32 x 16 accumulation, 100 epochs,
  early stopping after 10 epochs without a better validation loss;
- ``--synthetic``: a CPU demo that needs no download - generated phantom pairs, ResNet-18 from scratch at
  128 px, a small random BERT written next to the data, lr 1e-3, batch 16, 5 epochs, no augmentation
  (and no horizontal flip when ``--augment`` turns it on: the synthetic sentences name sides).

Every option given explicitly overrides the defaults of either set.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pretrain.config import AugmentConfig, ModelConfig, PretrainConfig, TrainConfig, preset_config
from pretrain.data.records import PairDataError, PairSet


@dataclass(frozen=True)
class DataOptions:
    """Where the pairs come from: exactly one of ``mimic`` (folder), ``manifest`` (file), ``synthetic``."""

    mimic: str | None = None
    reports: str | None = None
    manifest: str | None = None
    synthetic: bool = False
    synthetic_n: int = 256
    synthetic_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        given = [bool(self.mimic), bool(self.manifest), bool(self.synthetic)]
        if sum(given) != 1:
            raise PairDataError(
                "give exactly one data source: --data MIMIC_DIR, --manifest FILE or --synthetic"
            )

    @classmethod
    def from_args(cls, args) -> DataOptions:
        """From the parsed data options of ``pretrain`` / ``analyze`` / ``ablate`` (``--data``, ``--reports``,
        ``--manifest``, ``--synthetic*``, ``--seed``)."""
        return cls(
            mimic=args.data,
            reports=args.reports,
            manifest=args.manifest,
            synthetic=args.synthetic,
            synthetic_n=args.synthetic_n,
            synthetic_size=args.synthetic_size,
            seed=args.seed,
        )


@dataclass(frozen=True)
class RunOptions:
    """The options of ``cxrbench pretrain`` (``None`` = the default of the data kind)."""

    preset: str
    epochs: int | None = None
    batch_size: int | None = None
    accumulate: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    warmup_iters: int | None = None
    patience: int | None = None
    image_arch: str | None = None
    image_init: str | None = None
    image_size: int | None = None
    text_model: str | None = None
    text_frozen_layers: int | None = None
    weights: dict = field(default_factory=dict)
    augment: bool | None = None
    hflip: float | None = None
    workers: int = 0
    amp: bool = False
    seed: int = 0

    @classmethod
    def from_args(cls, args, preset: str) -> RunOptions:
        """From the parsed training options of ``pretrain`` / ``ablate``, for ``preset``."""
        from pretrain.config import parse_weight_overrides

        return cls(
            preset=preset,
            epochs=args.epochs,
            batch_size=args.batch_size,
            accumulate=args.accumulate,
            lr=args.lr,
            weight_decay=args.weight_decay,
            warmup_iters=args.warmup_iters,
            patience=args.patience,
            image_arch=args.image_arch,
            image_init=args.image_init,
            image_size=args.image_size,
            text_model=args.text_model,
            text_frozen_layers=args.text_frozen_layers,
            weights=parse_weight_overrides(args.weight),
            augment=args.augment,
            hflip=args.hflip,
            workers=args.workers,
            amp=args.amp,
            seed=args.seed,
        )


def user_errors() -> tuple[type[Exception], ...]:
    """The errors of a pretraining command that are the user's to fix (bad data, options, missing models):
    the command line reports them as ``error: ...`` with exit code 2."""
    from pretrain.model import ImageWeightsUnavailableError
    from pretrain.text import TextModelUnavailableError
    from pretrain.train import PretrainError

    return (PairDataError, PretrainError, TextModelUnavailableError, ImageWeightsUnavailableError, ValueError)


def load_pairs(
    data: DataOptions, work_dir: str | os.PathLike, with_text_model: bool = True
) -> tuple[PairSet, Path | None]:
    """Read the pairs; for ``--synthetic`` also write them (and a small BERT) under ``work_dir``.

    Returns:
        ``(pairs, text model folder for synthetic data or None)``.
    """
    from pretrain.data.manifest import read_manifest

    if data.synthetic:
        from pretrain.train import prepare_synthetic

        manifest, bert = prepare_synthetic(
            work_dir, n=data.synthetic_n, size=data.synthetic_size, seed=data.seed
        )
        pairs = read_manifest(manifest)
        pairs.source["kind"] = "synthetic"
        return pairs, bert
    if data.manifest:
        return read_manifest(data.manifest), None
    from pretrain.data.mimic import read_mimic

    return read_mimic(data.mimic, data.reports), None


def _given(**values):
    """The options the user set (not None), as keyword overrides for ``dataclasses.replace``."""
    return {k: v for k, v in values.items() if v is not None}


def build_config(
    opts: RunOptions, synthetic: bool, synthetic_text_model: Path | None = None
) -> PretrainConfig:
    """The run configuration: the preset, the defaults of the data kind, then the explicit options."""
    # The demo learns within minutes without augmentation (a few dozen steps from scratch); with it, it does
    # not flip: horizontal flips swap the sides that its "left" / "right" sentences name (LoVT flips, p 0.5).
    augment = opts.augment if opts.augment is not None else not synthetic
    hflip = opts.hflip if opts.hflip is not None else (0.0 if synthetic else AugmentConfig().hflip_p)
    if synthetic:
        model = ModelConfig(
            image_arch="resnet18",
            image_init="random",
            text_model=str(synthetic_text_model),
            text_frozen_layers=1,
            max_tokens=256,
        )
        train = TrainConfig(
            epochs=5, batch_size=16, accumulate=1, lr=1e-3, image_size=128, patience=0, log_interval=10
        )
    else:
        model, train = ModelConfig(), TrainConfig()
    model = replace(
        model,
        **_given(
            image_arch=opts.image_arch,
            image_init=opts.image_init,
            text_model=opts.text_model,
            text_frozen_layers=opts.text_frozen_layers,
        ),
    )
    train = replace(
        train,
        num_workers=opts.workers,
        amp=opts.amp,
        seed=opts.seed,
        **_given(
            epochs=opts.epochs,
            batch_size=opts.batch_size,
            accumulate=opts.accumulate,
            lr=opts.lr,
            weight_decay=opts.weight_decay,
            warmup_iters=opts.warmup_iters,
            patience=opts.patience,
            image_size=opts.image_size,
        ),
    )
    for name, value in (
        ("epochs", train.epochs),
        ("batch_size", train.batch_size),
        ("accumulate", train.accumulate),
    ):
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return preset_config(
        opts.preset,
        weights=opts.weights,
        model=model,
        train=train,
        augment=AugmentConfig(enabled=augment, hflip_p=hflip),
    )


def preset_runs(
    data: DataOptions,
    options: RunOptions,
    out_dir: str | os.PathLike,
    *,
    launcher: str = "none",
    progress: bool = True,
) -> Callable[[str], Path]:
    """The pretraining of a loss ablation: a function preset -> its exported backbone, which pretrains (or
    resumes / reuses) ``OUT/pretrain/<preset>`` with ``options`` but the preset. The pairs are read once, on
    the first call (after the caller's own checks), for all presets."""
    from pretrain.train import pretrain

    out = Path(out_dir)
    loaded: dict = {}

    def pretrain_one(preset: str) -> Path:
        if not loaded:  # read the pairs once, after the task check, for all presets
            loaded["pairs"], loaded["text_model"] = load_pairs(data, out)
        cfg = build_config(replace(options, preset=preset), data.synthetic, loaded["text_model"])
        run = pretrain(cfg, loaded["pairs"], out / "pretrain" / preset, launcher=launcher, progress=progress)
        return run.backbone

    return pretrain_one
