"""Image-report pairs for pretraining: MIMIC-CXR, a generic manifest, synthetic phantoms."""

from pretrain.data.records import SPLITS, PairDataError, PairRecord, PairSet

__all__ = ["SPLITS", "PairDataError", "PairRecord", "PairSet"]
