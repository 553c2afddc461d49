"""The one corner of cxrbench that imports mmdet and mmseg.

Importing this package (1) provides ``mmcv._ext`` when mmcv's compiled ops are absent (mmcv-lite): NMS
through torchvision, every other op a clear error - this must happen before mmdet/mmseg are imported;
(2) registers :class:`benchmark.backbones.CXRBackbone` and the suite's hooks, loop and metrics in mmengine's
root registries (names prefixed ``CXR``), which mmdet's and mmseg's (separate) child registries both fall
back to, so configs name them by string and stay printable; (3) silences two mmseg warnings that are noise
for the suite's own, correct usage (mmseg's ``BaseDecodeHead`` calls its own deprecated ``build_loss``;
multi-label masks are (C, H, W) by design). Nothing else here has import-time effects.
"""

from __future__ import annotations

from benchmark.openmmlab.nms import install as _install_mmcv_ops

NMS_PROVIDER = _install_mmcv_ops()

import warnings  # noqa: E402

import mmdet  # noqa: E402
import mmseg  # noqa: E402
from mmengine.registry import HOOKS, LOOPS, METRICS, MODELS, TRANSFORMS  # noqa: E402

from benchmark.backbones import CXRBackbone  # noqa: E402
from benchmark.openmmlab import feature_cache_hook, heads, hooks, loops, losses, metrics  # noqa: E402
from cxrcore.mmengine_hooks import PlainCheckpointHook, ProgressHook  # noqa: E402

warnings.filterwarnings("ignore", message="``build_loss`` would be deprecated", module="mmseg.models.builder")
warnings.filterwarnings(
    "ignore", message="Please pay attention your ground truth", module="mmseg.datasets.transforms.formatting"
)

for _registry, _classes in (
    (
        MODELS,
        [
            CXRBackbone,
            feature_cache_hook.CachedBackbone,
            feature_cache_hook.CachedFeaturePreprocessor,
            losses.DiceLoss,
            heads.UNetHead,
            heads.SigmoidFCNHead,
            heads.MultiLabelFCNHead,
            heads.MultiLabelUNetHead,
            heads.MultiLabelEncoderDecoder,
            heads.ObjectnessYOLOV3Head,
        ],
    ),
    (TRANSFORMS, [heads.LoadMultiLabelMasks, feature_cache_hook.PlaceholderImage]),
    (
        HOOKS,
        [
            PlainCheckpointHook,
            hooks.FinetuneWarmupHook,
            hooks.LossGuardHook,
            hooks.HistoryHook,
            ProgressHook,
            feature_cache_hook.FeatureCacheHook,
        ],
    ),
    (LOOPS, [loops.ValLossLoop]),
    (METRICS, [metrics.DetectionMetric, metrics.FROCMetric, metrics.SegMetric]),
):
    for _cls in _classes:
        _name = _cls.__name__ if _cls.__name__.startswith("CXR") else f"CXR{_cls.__name__}"
        _registry.register_module(name=_name, module=_cls, force=True)

from benchmark.openmmlab.config import build_config  # noqa: E402
from benchmark.openmmlab.runner import RunOutcome, train_and_test, watch_runners  # noqa: E402

__all__ = ["NMS_PROVIDER", "RunOutcome", "build_config", "train_and_test", "watch_runners", "mmdet", "mmseg"]
