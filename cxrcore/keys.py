"""Which wrapper prefixes does a state dict carry in front of the model's own key names? The one
``normalize_keys`` that strips them (``module.`` from DataParallel, ``model.`` / ``backbone.`` / ... from
training frameworks), for the benchmark's checkpoint formats and pretraining's ``--image-init`` alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

# Prefixes that training frameworks put in front of all keys of a plain model.
STRIP_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "image_encoder.", "visual.", "net.")
# pretrain's ImageEncoder keeps its torchvision ResNet as ``.resnet``: a state dict of that encoder alone has
# every key under ``resnet.``, and pretraining's ``--image-init`` strips it too (pretrain.model.strip_prefixes).
# The benchmark does not: ``cxrbench evaluate`` refuses such a file ("no known checkpoint layout"), and the
# restructure that merged the two copies (issue 13) kept the benchmark's behaviour. The copies had drifted
# apart; they now differ only by this one, named prefix (pretrain gained ``visual.`` in the merge: a
# ``visual.``-wrapped torchvision ResNet, refused before, is now read by ``--image-init``).
PRETRAIN_PREFIXES = (*STRIP_PREFIXES, "resnet.")


def normalize_keys(
    state: Mapping[str, torch.Tensor], prefixes: Iterable[str] = STRIP_PREFIXES
) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes shared by all keys (``module.``, ``backbone.``, ...)."""
    prefixes = tuple(prefixes)
    state = dict(state)
    changed = True
    while changed and state:
        changed = False
        for prefix in prefixes:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state

