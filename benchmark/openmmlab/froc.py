"""FROC of the Object-CXR challenge (MIDL 2020), as pure functions.

Predictions are points (box centres) with a probability. Walking the predictions in decreasing
probability (ties: in the order given), a prediction inside one or more ground-truth objects hits them
(each object counts once); a prediction inside none is a false positive. FROC = mean sensitivity at the
false-positive rates 0.125, 0.25, 0.5, 1, 2, 4, 8 per image.

Two definitions, which differ in how a sensitivity is read at a rate:

- :func:`froc` (the primary ``froc``): the challenge's ``froc.py`` exactly as LoVT computes it
  (``FrocMetric.compute``, github.com/philip-mueller/lovt ``src/metrics/detection_metrics.py``): after
  every prediction, hit or not, the NEXT unrecorded rate is recorded once the false positives per image
  reach it (one rate per prediction); rates never recorded take the last recorded sensitivity; when no
  rate is recorded at all, the sensitivity of all predictions. This is the definition of the published
  numbers.
- :func:`froc_all_predictions` (the secondary ``froc_all_predictions`` / ``froc_shape``): every rate the
  false positives reach is recorded at that false positive, and rates never reached take the sensitivity
  of ALL predictions (including the hits after the last false positive). It reads higher than
  :func:`froc` for detectors whose false positives run out before 8 per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

FROC_FPS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _order(scores: Sequence[float]) -> np.ndarray:
    """Decreasing probability, ties in the order given (Python's stable ``sorted(reverse=True)``)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def froc(
    scores: Sequence[float],
    hits: Sequence[Sequence[int]],
    num_images: int,
    num_objects: int,
    fps: Sequence[float] = FROC_FPS,
) -> tuple[list[float], float]:
    """The challenge's FROC as LoVT computes it: sensitivities at each rate, and their mean.

    Args:
        scores: probability of each prediction, in the order LoVT would see them (image by image).
        hits: for each prediction, the ids of the ground-truth objects its point lies inside (empty: a
            false positive).
        num_images: images evaluated (with and without objects).
        num_objects: ground-truth objects in those images.
        fps: false positives per image at which the sensitivity is read.

    Returns:
        (sensitivities, FROC). Without any object: 1.0 when no rate is reached (LoVT's value) and NaN
        otherwise (LoVT divides by zero there).
    """
    if len(scores) != len(hits):
        raise ValueError(f"froc: {len(scores)} scores but {len(hits)} hit lists")
    hit_objects: set[int] = set()
    false_positives = 0
    sens: list[float] = []
    for i in _order(scores):
        if hits[i]:
            hit_objects.update(hits[i])
        else:
            false_positives += 1
        if false_positives / num_images >= fps[len(sens)]:
            if num_objects == 0:
                return [math.nan] * len(fps), math.nan
            sens.append(len(hit_objects) / num_objects)
            if len(sens) == len(fps):
                break
    if not sens:
        value = 1.0 if num_objects == 0 else len(hit_objects) / num_objects
        return [value] * len(fps), value
    sens += [sens[-1]] * (len(fps) - len(sens))
    return sens, float(np.mean(sens))


def froc_all_predictions(
    scores: Sequence[float],
    hits: Sequence[Sequence[int]],
    num_images: int,
    num_objects: int,
    fps: Sequence[float] = FROC_FPS,
) -> tuple[list[float], float]:
    """FROC with every reached rate read at its false positive and unreached rates filled with the
    sensitivity of all predictions (cxrbench's definition before the published one became primary).

    Arguments as :func:`froc`. Returns (sensitivities, FROC); NaN when there are no objects.
    """
    if num_objects == 0 or num_images == 0:
        return [math.nan] * len(fps), math.nan
    hit_objects: set[int] = set()
    false_positives = 0
    sens: list[float] = []
    for i in _order(scores):
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
