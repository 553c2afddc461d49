"""A pretraining run: pairs + config -> mmengine Runner -> checkpoints, history, exported backbone.

Run folder ``OUT/``::

    config.json            the resolved configuration (+ normalisation, data summary, versions)
    history.json           per epoch: mean training loss and terms, validation loss and terms, lr
    work/                  mmengine: epoch_N.pth, best_val_loss_epoch_N.pth, last_checkpoint, logs,
                           vis_data/scalars.json (every logged term per iteration)
    backbone.safetensors   the image encoder, torchvision ResNet keys, no fc   } see pretrain.export
    backbone.json          sidecar: preset, losses, data, epochs, hashes        }

Calling :func:`pretrain` again with the same configuration and OUT resumes from the last checkpoint (an
interrupted run) or returns the finished run; a different configuration in the same OUT is an error.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from cxrcore.io import write_json_atomic
from cxrcore.weights import CheckpointError, load_checkpoint, mmengine_path
from pretrain.config import PRESETS, PretrainConfig
from pretrain.data.records import PairSet
from pretrain.export import export_backbone, versions

# Settings that may differ when an interrupted run is resumed (they do not change the result).
RESUME_FREE = {"num_workers", "log_interval", "amp"}


class PretrainError(RuntimeError):
    """A pretraining run cannot start (conflicting output folder, too little data, ...)."""


@dataclass
class PretrainResult:
    """What a run produced."""

    out_dir: Path
    backbone: Path
    sidecar: Path
    epochs_run: int
    best_epoch: int | None
    history: list[dict] = field(default_factory=list)
    reused: bool = False  # an identical finished run was found and returned

    @property
    def info(self) -> dict:
        return json.loads(self.sidecar.read_text())


def _fingerprint(d: dict) -> dict:
    d = json.loads(json.dumps(d, default=str))
    for k in RESUME_FREE:
        d.get("train", {}).pop(k, None)
    return d


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def prepare_synthetic(
    out_dir: str | os.PathLike, n: int = 256, size: int = 128, seed: int = 0
) -> tuple[Path, Path]:
    """Synthetic pairs and a small random BERT for them under ``out_dir`` (idempotent, nothing downloaded).

    Returns:
        ``(manifest path, text model folder)``.
    """
    from pretrain.data.synthetic import vocabulary, write_synthetic_dataset
    from pretrain.text import write_local_bert

    out_dir = Path(out_dir)
    manifest = write_synthetic_dataset(out_dir / "synthetic-data", n=n, size=size, seed=seed)
    bert = out_dir / "text-model"
    if not (bert / "config.json").exists():
        write_local_bert(bert, vocabulary(), hidden=64, layers=2, heads=2, max_positions=256, seed=seed)
    return manifest, bert


def _datasets(cfg: PretrainConfig, pairs: PairSet, mean: float, std: float):
    from pretrain.data.dataset import PairDataset

    size = cfg.train.image_size
    train = PairDataset(pairs.split("train"), size, mean, std, cfg.augment, cfg.sentences, train=True)
    val_records = pairs.split("validate")
    val = PairDataset(val_records, size, mean, std, None, cfg.sentences) if val_records else None
    return train, val


def pretrain(
    cfg: PretrainConfig,
    pairs: PairSet,
    out_dir: str | os.PathLike,
    *,
    launcher: str = "none",
    progress: bool = True,
    verbose: bool = False,
    extra_hooks: Sequence = (),
    echo=print,
) -> PretrainResult:
    """Train (or resume, or reuse) one pretraining run and export its image encoder.

    Args:
        cfg: the run's configuration (see :func:`pretrain.config.preset_config`); ``cfg.data`` is
            filled in from ``pairs``.
        pairs: the image-report pairs (``train`` and, for validation / early stopping, ``validate``).
        out_dir: the run folder (see the module docstring).
        launcher: ``none`` or mmengine's ``pytorch`` (DDP under ``torchrun``), ``slurm``, ``mpi``.
        extra_hooks: additional mmengine hooks.

    Raises:
        PretrainError: OUT holds a run with another configuration, or there are too few pairs.
    """
    from mmengine.dist import is_main_process

    from pretrain.data.dataset import PairCollator, image_statistics
    from pretrain.engine import PretrainModel
    from pretrain.model import ImageTextModel
    from pretrain.text import load_text_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers are forked after the tokenizer is used
    n_train = len(pairs.split("train"))
    if n_train < 2:
        raise PretrainError(f"{n_train} training pair(s): contrastive pretraining needs at least 2")
    notes = []
    if n_train < cfg.train.batch_size:
        notes.append(f"batch size {cfg.train.batch_size} > {n_train} training pairs: reduced to {n_train}")
        cfg = replace(cfg, train=replace(cfg.train, batch_size=n_train))
    cfg = replace(cfg, data=pairs.summary())

    config_path = out_dir / "config.json"
    sidecar_path = out_dir / "backbone.json"
    work_dir = out_dir / "work"
    previous = json.loads(config_path.read_text()) if config_path.exists() else None
    if previous is not None:
        differences = _diff(_fingerprint(previous["config"]), _fingerprint(cfg.to_dict()))
        if differences:
            raise PretrainError(
                f"{out_dir} holds a pretraining run with another configuration ("
                + "; ".join(differences[:6])
                + f"{' ...' if len(differences) > 6 else ''}). Use another --out, or delete {out_dir}."
            )
        if sidecar_path.exists() and (out_dir / "backbone.safetensors").exists():
            info = json.loads(sidecar_path.read_text())
            echo(f"{out_dir}: this run is finished (backbone.safetensors); nothing to do")
            history = json.loads((out_dir / "history.json").read_text())["epochs"]
            return PretrainResult(
                out_dir, out_dir / "backbone.safetensors", sidecar_path, info["epochs_run"],
                info.get("best_epoch"), history, reused=True,
            )  # fmt: skip
    resume = (work_dir / "last_checkpoint").exists()

    if previous is not None and "normalization" in previous:
        mean, std = previous["normalization"]["mean"], previous["normalization"]["std"]
    else:
        mean, std = image_statistics(pairs.split("train"), cfg.train.image_size, seed=cfg.train.seed)
    tokenizer, bert = load_text_model(cfg.model.text_model)
    train_ds, val_ds = _datasets(cfg, pairs, mean, std)
    collator = PairCollator(
        tokenizer, min(cfg.model.max_tokens, getattr(bert.config, "max_position_embeddings", 512))
    )
    torch.manual_seed(cfg.train.seed)  # the heads' initialisation
    net = ImageTextModel(cfg.model, cfg.loss, bert)
    model = PretrainModel(net, cfg.loss)

    runner = _build_runner(
        cfg, model, train_ds, val_ds, collator, out_dir, launcher, progress, verbose, resume, extra_hooks
    )
    main = is_main_process()
    if main:
        write_json_atomic(
            config_path,
            {
                "config": cfg.to_dict(),
                "normalization": {"mean": mean, "std": std, "image_size": cfg.train.image_size},
                "notes": notes,
                "versions": versions(),
                "started_at": previous["started_at"] if previous else time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
        echo(pairs.describe())
        for n in notes:
            echo(f"note: {n}")
        echo(f"{'resuming' if resume else 'starting'} pretraining '{cfg.preset}' -> {out_dir}")
    runner.train()

    best = runner.message_hub.get_info("best_ckpt") if val_ds is not None else None
    last = work_dir / f"epoch_{runner.epoch}.pth"
    checkpoint = Path(best) if best and os.path.exists(best) else last
    history = (
        json.loads((out_dir / "history.json").read_text())["epochs"]
        if (out_dir / "history.json").exists()
        else []
    )
    if not main:
        return PretrainResult(
            out_dir, out_dir / "backbone.safetensors", sidecar_path, runner.epoch, None, history
        )
    if checkpoint.exists():
        state = load_checkpoint(checkpoint)[0]["state_dict"]
        from pretrain.engine import unwrap

        unwrap(runner.model).load_state_dict(state)
    with_val = [e for e in history if "val" in e]
    best_entry = min(with_val, key=lambda e: e["val"]["loss"]) if with_val else None
    weights, sidecar = export_backbone(
        net.image_encoder,
        out_dir,
        {
            "preset": cfg.preset,
            "description": PRESETS[cfg.preset].description if cfg.preset in PRESETS else "",
            "losses": {
                "weights": dict(cfg.loss.weights),
                **{k: v for k, v in cfg.to_dict()["loss"].items() if k != "weights"},
            },
            "model": cfg.to_dict()["model"],
            "train": cfg.to_dict()["train"],
            "augment": cfg.to_dict()["augment"],
            "sentences": cfg.sentences,
            "data": cfg.data,
            "normalization": {"mean": mean, "std": std, "image_size": cfg.train.image_size},
            "epochs_run": runner.epoch,
            "best_epoch": best_entry["epoch"] if best_entry else None,
            "val_loss": best_entry["val"]["loss"] if best_entry else None,
            "checkpoint": str(checkpoint) if checkpoint.exists() else None,
            "config_hash": cfg.hash(),
        },
    )
    echo(f"exported {weights} (+ {sidecar.name})")
    return PretrainResult(
        out_dir, weights, sidecar, runner.epoch, best_entry["epoch"] if best_entry else None, history
    )


def _build_runner(
    cfg, model, train_ds, val_ds, collator, out_dir, launcher, progress, verbose, resume, extra_hooks
):
    from mmengine.evaluator import Evaluator
    from mmengine.hooks import EarlyStoppingHook
    from mmengine.runner import Runner

    from cxrcore.mmengine_hooks import PlainCheckpointHook, ProgressHook
    from pretrain.engine import HistoryHook, LossGuardHook, PretrainLossMetric

    t = cfg.train
    cuda = torch.cuda.is_available()
    amp = bool(t.amp and cuda)

    def loader(ds, train: bool) -> dict:
        return dict(
            dataset=ds,
            batch_size=t.batch_size,
            num_workers=t.num_workers,
            persistent_workers=t.num_workers > 0,
            pin_memory=cuda,
            drop_last=train,  # in-batch negatives: every step sees a full batch
            sampler=dict(type="DefaultSampler", shuffle=train),
            collate_fn=collator,
        )

    schedulers = []
    if t.warmup_iters:
        schedulers.append(
            dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=t.warmup_iters)
        )
    schedulers.append(
        dict(
            type="CosineAnnealingLR",
            by_epoch=True,
            begin=0,
            end=t.epochs,
            T_max=t.epochs,
            eta_min=0.0,
            convert_to_iter_based=True,
        )
    )
    has_val = val_ds is not None
    hooks = [PlainCheckpointHook(), LossGuardHook(), HistoryHook(out_dir / "history.json")]
    if has_val and t.patience:
        hooks.append(EarlyStoppingHook(monitor="val/loss", rule="less", patience=t.patience, min_delta=0.0))
    if progress:
        hooks.append(
            ProgressHook(f"pretrain {cfg.preset}", "val/loss", label="val", metric_format=".4g", leave=True)
        )
    name = f"pretrain-{cfg.preset}-{int(time.time() * 1000)}"
    return Runner(
        model=model,
        work_dir=str(out_dir / "work"),
        experiment_name=name,
        train_dataloader=loader(train_ds, True),
        train_cfg=dict(by_epoch=True, max_epochs=t.epochs, val_interval=1),
        val_dataloader=loader(val_ds, False) if has_val else None,
        val_cfg=dict(fp16=amp) if has_val else None,
        val_evaluator=Evaluator(PretrainLossMetric()) if has_val else None,
        optim_wrapper=dict(
            type="AmpOptimWrapper" if amp else "OptimWrapper",
            optimizer=dict(type="AdamW", lr=t.lr, weight_decay=t.weight_decay),
            accumulative_counts=t.accumulate,
        ),
        param_scheduler=schedulers,
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=t.log_interval),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(
                type="CheckpointHook",
                interval=t.checkpoint_interval,
                by_epoch=True,
                max_keep_ckpts=2,
                save_last=True,
                save_best="val/loss" if has_val else None,
                rule="less" if has_val else None,
            ),
            sampler_seed=dict(type="DistSamplerSeedHook"),
        ),
        custom_hooks=[*hooks, *extra_hooks],
        launcher=launcher,
        env_cfg=dict(
            cudnn_benchmark=cuda,
            mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
            dist_cfg=dict(backend="nccl" if cuda else "gloo"),
        ),
        randomness=dict(seed=t.seed, deterministic=False),
        resume=resume,
        # mmengine would read the checkpoint with a bare torch.load: hand it cxrbench's one loader instead
        load_from=mmengine_path((out_dir / "work" / "last_checkpoint").read_text().strip()) if resume else None,
        log_level="INFO" if verbose else "WARNING",
        log_processor=dict(by_epoch=True),
        visualizer=dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend")], name=name),
    )


def find_run(path: str | os.PathLike) -> Path | None:
    """The run folder of ``path``: a run folder, its ``backbone.safetensors`` / ``backbone.json``, or one of
    its checkpoints (``OUT/work/epoch_N.pth``); None if ``path`` is none of these."""
    p = Path(path).expanduser()
    folder = (
        p if p.is_dir() else (p.parent.parent if p.suffix == ".pth" and p.parent.name == "work" else p.parent)
    )
    return folder if (folder / "config.json").is_file() and (folder / "backbone.json").is_file() else None


def load_run(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None):
    """The trained image-text model of a finished run (for analysis).

    Args:
        run_dir: the run folder.
        checkpoint: one of its mmengine checkpoints; default: the one the backbone was exported from.

    Returns:
        ``(net, tokenizer, config, normalization)``; ``net`` is in eval mode on the CPU.

    Raises:
        PretrainError: the run has no checkpoint with the full model any more.
    """
    from pretrain.model import ImageTextModel
    from pretrain.text import load_text_model

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    info = json.loads((run_dir / "backbone.json").read_text())
    cfg = PretrainConfig.from_dict(config["config"])
    ckpt = str(checkpoint) if checkpoint else info.get("checkpoint")
    if not ckpt or not Path(ckpt).is_file():
        raise PretrainError(
            f"{run_dir}: the checkpoint with the full image-text model ({ckpt}) is gone; only the image side "
            "can be analysed (use the exported backbone.safetensors with --image-only)"
        )
    tokenizer, bert = load_text_model(cfg.model.text_model)
    net = ImageTextModel(replace(cfg.model, image_init="random"), cfg.loss, bert)
    try:
        state = load_checkpoint(ckpt)[0]["state_dict"]
    except (CheckpointError, KeyError, TypeError) as e:
        raise PretrainError(f"{ckpt}: not a checkpoint of this pretraining run ({e})") from e
    state = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
    net.load_state_dict(state)
    return net.eval(), tokenizer, cfg, config["normalization"]
