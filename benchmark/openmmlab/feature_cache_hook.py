"""Frozen tasks trained on cached encoder features, through the same mmengine Runner as every other run.

:func:`use_feature_cache` turns a run's config into its cached form with three swaps and nothing else:

- the backbone becomes :class:`CachedBackbone`: built exactly like :class:`~benchmark.backbones.CXRBackbone`
  (so the random-number stream, and with it the head's initialisation, is the same as without the cache),
  it computes the features while the cache is built and then drops its encoder; afterwards it passes the
  features it receives through;
- the data preprocessor is wrapped in :class:`CachedFeaturePreprocessor`: the task's own preprocessor runs
  unchanged (normalisation, padding, the meta information heads and metrics rely on), then the batch's
  images are replaced by their cached features, looked up by image id; C0 (the input image, used by the
  U-Net) is not cached but taken from the normalised image as the backbone would;
- :class:`FeatureCacheHook` (``before_run``) gets or builds the cache entries of the train, val and test
  subsets (:mod:`benchmark.runs.feature_store`) and connects them to the preprocessor.

Datasets, pipelines, heads, losses, loops, metrics, hooks and checkpoints stay those of the uncached run.
Only frozen tasks qualify: their encoder is in eval mode with fixed weights and the protocol has no
augmentation, so an image's features are the same in every epoch.
"""

from __future__ import annotations

import copy
import hashlib
import random
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.config import ConfigDict
from mmengine.dataset import pseudo_collate
from mmengine.hooks import Hook
from mmengine.model import BaseDataPreprocessor, is_model_wrapper
from mmengine.registry import DATASETS, MODELS
from mmengine.runner.amp import autocast
from PIL import Image

from benchmark.backbones import CXRBackbone
from benchmark.runs.feature_store import FeatureStore, entry_key, human_bytes
from cxrcore.hashing import sha256_file

SUBSETS = ("train", "val", "test")


def _image_id(sample) -> str:
    return Path(sample.metainfo["img_path"]).stem


class PlaceholderImage(BaseTransform):
    """Stands in for ``LoadImageFromFile`` when no head reads the pixels (its features are cached): a zero
    image of the file's shape, read from the PNG header instead of decoding the image. Shapes, and so all
    meta information the heads and metrics use, are those the real loader would give."""

    def __init__(self, color_type: str = "grayscale") -> None:
        self.color_type = color_type

    def transform(self, results: dict) -> dict:
        with Image.open(results["img_path"]) as im:
            width, height = im.size
        shape = (height, width) if self.color_type == "grayscale" else (height, width, 3)
        results["img"] = np.zeros(shape, dtype=np.uint8)
        results["img_shape"] = (height, width)
        results["ori_shape"] = (height, width)
        return results


class CachedBackbone(CXRBackbone):
    """A frozen :class:`~benchmark.backbones.CXRBackbone` whose features come from the cache.

    Until :meth:`release_encoder` it behaves exactly like a frozen ``CXRBackbone``; afterwards ``forward``
    receives the batch's features (a tuple, from :class:`CachedFeaturePreprocessor`) and returns them.
    """

    def __init__(
        self, spec: str, out_indices: Sequence[int] = (3, 4, 5), frozen: bool = True, **kwargs
    ) -> None:
        if not frozen:
            raise ValueError("cached features need a frozen backbone (finetuning changes them every step)")
        super().__init__(spec, out_indices=out_indices, frozen=True, **kwargs)

    def weights_digest(self) -> str:
        """sha256 of the encoder's weights and buffers (BatchNorm statistics), in key order."""
        h = hashlib.sha256()
        for name, tensor in sorted(self.encoder.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
        return h.hexdigest()

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """The levels ``out_indices`` for preprocessed images, exactly as ``forward`` computes them (the
        backbone's own input convention, the encoder's resolution and the parameter-free resampling
        included)."""
        return dict(zip(self.out_indices, CXRBackbone.forward(self, x)))

    def release_encoder(self) -> None:
        """Drop the encoder once the features are cached (frees its memory; checkpoints get smaller)."""
        self.encoder = None

    def train(self, mode: bool = True) -> CachedBackbone:
        if self.encoder is None:
            torch.nn.Module.train(self, mode)
            return self
        return super().train(mode)

    def forward(self, x):
        if isinstance(x, (tuple, list)):
            return tuple(x)
        if self.encoder is None:
            raise RuntimeError("CachedBackbone: the encoder was released; it expects cached features")
        return super().forward(x)


class CachedFeaturePreprocessor(BaseDataPreprocessor):
    """The task's data preprocessor, then the images replaced by their cached features.

    Args:
        preprocessor: config of the task's own data preprocessor (e.g. ``DetDataPreprocessor``).
        out_indices: the backbone's levels, in order; level 0 is the normalised image itself.
    """

    def __init__(
        self, preprocessor: dict, out_indices: Sequence[int], placeholder_images: bool = False
    ) -> None:
        super().__init__()
        self.preprocessor = MODELS.build(preprocessor)
        self.out_indices = tuple(out_indices)
        self.placeholder_images = placeholder_images
        self._entries: list = []
        self._lookup: dict[str, tuple[int, int]] | None = None

    @property
    def attached(self) -> bool:
        return self._lookup is not None

    def attach(self, entries: Sequence) -> None:
        """Serve features from these cache entries (one per subset)."""
        self._entries = list(entries)
        self._lookup = {}
        for e, entry in enumerate(self._entries):
            for image_id, row in entry.rows().items():
                self._lookup[image_id] = (e, row)

    def gather(self, image_ids: Sequence[str]) -> dict[int, torch.Tensor]:
        """Cached features of these images per level, as float32 tensors on the preprocessor's device."""
        try:
            where = [self._lookup[i] for i in image_ids]
        except KeyError as e:
            raise KeyError(f"feature cache: no features for image {e.args[0]}") from None
        out = {}
        for level in self.out_indices:
            if level == 0:
                continue
            first = self._entries[where[0][0]].arrays[level]
            batch = np.empty((len(where), *first.shape[1:]), dtype=first.dtype)
            for b, (e, row) in enumerate(where):
                batch[b] = self._entries[e].arrays[level][row]
            out[level] = torch.from_numpy(batch).to(self.device, non_blocking=True).float()
        return out

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.preprocessor(data, training)
        if self._lookup is None:  # not attached (yet): the backbone computes the features
            if self.placeholder_images:
                raise RuntimeError("the images are placeholders but no feature cache is attached")
            return data
        cached = self.gather([_image_id(s) for s in data["data_samples"]])
        image = data["inputs"]
        feats = tuple(
            (image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image) if level == 0 else cached[level]
            for level in self.out_indices
        )
        return {"inputs": feats, "data_samples": data["data_samples"]}


@contextmanager
def _rng_preserved():
    """Leave the global random state as it was: the head's initialisation and everything after must not
    depend on whether features were computed first."""
    py, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


def _plain(obj):
    return obj.to_dict() if isinstance(obj, ConfigDict) else obj


class FeatureCacheHook(Hook):
    """Gets or builds the cache entries of the run's three subsets before the run; records what it did.

    Args:
        root: the cache folder (see :mod:`benchmark.runs.feature_store`).
        dtype: storage dtype (``float16``: half the memory of float32; results agree to ~1e-3).
        amp: features computed under autocast, as a mixed-precision run would compute them.
        batch_size: images per encoder pass while building.
        num_workers: data-loader processes while building.
        provenance: stored in each entry's index (backbone spec, seed) for people reading the cache.
    """

    priority = "VERY_HIGH"

    def __init__(
        self,
        root: str,
        dtype: str = "float16",
        amp: bool = False,
        batch_size: int = 32,
        num_workers: int = 0,
        provenance: dict | None = None,
        source_pipelines: dict | None = None,
    ) -> None:
        self.store = FeatureStore(root)
        # the subsets' pipelines with the real image loader, when the run's own load placeholders
        self.source_pipelines = dict(source_pipelines or {})
        self.dtype = dtype
        self.amp = amp
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.provenance = dict(provenance or {})
        self.report: dict | None = None

    def before_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        pre, backbone = model.data_preprocessor, model.backbone
        if not isinstance(pre, CachedFeaturePreprocessor) or not isinstance(backbone, CachedBackbone):
            raise TypeError(
                "FeatureCacheHook needs CachedFeaturePreprocessor and CachedBackbone (use_feature_cache)"
            )
        if pre.attached:  # runner.test() after runner.train(): already connected
            return
        started = time.time()
        levels = [i for i in backbone.out_indices if i != 0]
        encoder = {
            "arch": backbone.info.arch,
            "weights_digest": backbone.weights_digest(),
            # what CXRBackbone.forward applies besides the weights
            "input_norm": None if backbone.input_mean is None else [backbone.input_mean.flatten().tolist(), backbone.input_std.flatten().tolist()],
            "resolution": backbone.resolution,
        }
        entries, reports = [], {}
        with _rng_preserved():
            for subset_name in SUBSETS:
                ds_cfg = _plain(runner.cfg[f"{subset_name}_dataloader"]["dataset"])
                if subset_name in self.source_pipelines:
                    ds_cfg = dict(ds_cfg, pipeline=_plain(self.source_pipelines[subset_name]))
                prepared = Path(ds_cfg["data_root"])
                ann = prepared / ds_cfg["ann_file"]
                payload = {
                    "encoder": encoder,
                    "dataset": {
                        "manifest_sha256": sha256_file(prepared / "manifest.json"),
                        "ann_file": ds_cfg["ann_file"],
                        "ann_sha256": sha256_file(ann),
                    },
                    # normalisation (the training split's mean / std), padding, resolution, transforms
                    "preprocessor": _plain(runner.cfg.model.data_preprocessor.preprocessor),
                    "pipeline": ds_cfg["pipeline"],
                    "levels": levels,
                    "dtype": self.dtype,
                    "amp": self.amp,
                }
                key = entry_key(payload)
                entry, report = self.store.get_or_build(
                    key,
                    payload,
                    ids=lambda ds_cfg=ds_cfg: _dataset_ids(ds_cfg),
                    shapes=None,
                    fill=lambda writer, ds_cfg=ds_cfg: self._fill(writer, ds_cfg, pre, backbone, levels),
                    dtype=self.dtype,
                    provenance=self.provenance | {"subset": Path(ds_cfg["ann_file"]).stem},
                )
                entries.append(entry)
                reports[Path(ds_cfg["ann_file"]).stem] = report
        pre.attach(entries)
        backbone.release_encoder()
        total = sum(r["bytes"] for r in reports.values())
        # "built": not there when the run started (computed here, or by a concurrent process we waited for)
        built = [name for name, r in reports.items() if r["built"] or r["waited_for_other_process"]]
        self.report = {
            "used": True,
            "root": str(self.store.root),
            "bytes": total,
            "size": human_bytes(total),
            "built": built,
            "reused": [name for name in reports if name not in built],
            "seconds": round(time.time() - started, 3),
            "entries": reports,
        }
        runner.logger.info(
            f"feature cache {self.store.root}: {human_bytes(total)} for {', '.join(reports)} "
            f"(built: {', '.join(built) or 'none'}; {self.report['seconds']:.1f} s)"
        )

    def _fill(
        self, writer, ds_cfg: dict, pre: CachedFeaturePreprocessor, backbone: CachedBackbone, levels
    ) -> None:
        dataset = DATASETS.build(ds_cfg)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=pseudo_collate,
        )
        backbone.eval()
        for batch in loader:
            data = pre.preprocessor(batch, False)  # exactly the run's normalisation and padding
            with torch.no_grad(), autocast(enabled=self.amp):
                feats = backbone.encode(data["inputs"])
            writer.write(
                [_image_id(s) for s in data["data_samples"]],
                {level: feats[level].float().cpu().numpy() for level in levels},
            )


def _dataset_ids(ds_cfg: dict) -> list[str]:
    """Image ids of a dataset config, in dataset order (parses the annotations; no images)."""
    cfg = dict(ds_cfg, pipeline=[], lazy_init=False)
    dataset = DATASETS.build(cfg)
    return [Path(dataset.get_data_info(i)["img_path"]).stem for i in range(len(dataset))]


def use_feature_cache(
    cfg: dict,
    root: str | Path,
    dtype: str = "float16",
    amp: bool = False,
    batch_size: int = 32,
    num_workers: int = 0,
    provenance: dict | None = None,
) -> dict:
    """Turn a frozen run's config (a plain dict from ``build_config``) into its cached form (in place)."""
    model = cfg["model"]
    backbone = model["backbone"]
    if not backbone.get("frozen"):
        raise ValueError("the feature cache applies to frozen tasks only")
    backbone["type"] = "CXRCachedBackbone"
    placeholders = 0 not in backbone["out_indices"]  # no head reads the pixels: do not decode them
    source_pipelines = {}
    if placeholders:
        for subset_name in SUBSETS:
            dataset = cfg[f"{subset_name}_dataloader"]["dataset"]
            source_pipelines[subset_name] = copy.deepcopy(dataset["pipeline"])
            dataset["pipeline"] = [
                dict(type="CXRPlaceholderImage", color_type=step.get("color_type", "color"))
                if step.get("type") == "LoadImageFromFile"
                else step
                for step in dataset["pipeline"]
            ]
    model["data_preprocessor"] = dict(
        type="CXRCachedFeaturePreprocessor",
        preprocessor=model["data_preprocessor"],
        out_indices=tuple(backbone["out_indices"]),
        placeholder_images=placeholders,
    )
    cfg["custom_hooks"].insert(
        0,
        dict(
            type="CXRFeatureCacheHook",
            root=str(root),
            dtype=dtype,
            amp=amp,
            batch_size=batch_size,
            num_workers=num_workers,
            provenance=dict(provenance or {}),
            source_pipelines=source_pipelines,
        ),
    )
    return cfg
