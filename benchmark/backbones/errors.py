"""What can go wrong when a backbone spec or weights file is turned into an encoder: every error type of
:mod:`benchmark.backbones`, in one place.

All of them are :class:`BackboneError` (a ``ValueError``), which the CLI reports as one line. The two file
errors are also :mod:`cxrcore.weights`' own types, so code that catches the hardened loader's errors catches
these too.
"""

from __future__ import annotations

from cxrcore import weights as _core


class BackboneError(ValueError):
    """A backbone spec or weights file cannot be turned into an encoder."""


class WeightsFileError(BackboneError, _core.CheckpointError):
    """A weights file cannot be read."""


class UnsafeCheckpointError(WeightsFileError, _core.UnsafeCheckpointError):
    """A checkpoint's pickle refers to something that only code execution would need."""


class BackboneKeyError(BackboneError):
    """The weights do not match the architecture's keys or shapes."""


class WeightsUnavailableError(BackboneError):
    """Pretrained weights are not on disk and could not be downloaded."""


class FormatError(BackboneError):
    """A weights file does not have the layout of the format it was given as (or of any known format)."""


class UnmappedKeysError(FormatError):
    """Keys of the image encoder that no rule maps or knowingly ignores."""


class TimmError(BackboneError):
    """A timm spec cannot be served."""


class TransformerConfigError(BackboneError):
    """The converted keys do not describe a buildable transformer."""
