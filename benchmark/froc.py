"""FROC of the Object-CXR challenge (MIDL 2020), as a pure function.

Predictions are points (box centres) with a probability. Walking the predictions in decreasing
probability, a prediction inside one or more ground-truth objects hits them (each object counts once); a
prediction inside none is a false positive. The sensitivity at a rate r (false positives per image) is
the fraction of objects hit when the false positives first reach r per image; a rate the predictions
never reach gets the sensitivity of all predictions. FROC = mean sensitivity over the rates
0.125, 0.25, 0.5, 1, 2, 4, 8.

This is the challenge's ``froc.py`` without its two quirks: it records at most one rate per prediction
(so a hit after a false positive could count for the next rate before another false positive happened),
and it fills unreached rates with the last RECORDED sensitivity (missing the hits after the last false
positive; it crashes when no rate is reached).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

FROC_FPS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def froc(
    scores: Sequence[float],
    hits: Sequence[Sequence[int]],
    num_images: int,
    num_objects: int,
    fps: Sequence[float] = FROC_FPS,
) -> tuple[list[float], float]:
    """Sensitivities at each false-positive rate, and their mean.

    Args:
        scores: probability of each prediction.
        hits: for each prediction, the ids of the ground-truth objects its point lies inside (empty: a
            false positive).
        num_images: images evaluated (with and without objects).
        num_objects: ground-truth objects in those images.
        fps: false positives per image at which the sensitivity is read.

    Returns:
        (sensitivities, FROC). NaN when there are no objects.
    """
    if num_objects == 0 or num_images == 0:
        return [math.nan] * len(fps), math.nan
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hit_objects: set[int] = set()
    false_positives = 0
    sens: list[float] = []
    for i in order:
        if hits[i]:
            hit_objects.update(hits[i])
        else:
            false_positives += 1
            while len(sens) < len(fps) and false_positives / num_images >= fps[len(sens)]:
                sens.append(len(hit_objects) / num_objects)
            if len(sens) == len(fps):
                break
    final = len(hit_objects) / num_objects
    sens += [final] * (len(fps) - len(sens))
    return sens, float(np.mean(sens))
