"""Errors of the data side, each naming the file and the field at fault and saying what to do."""

from __future__ import annotations

from dataclasses import asdict, dataclass


class DatasetError(Exception):
    """Base class of dataset errors."""


class DatasetLayoutError(DatasetError):
    """The raw folder is not the official layout (missing label file, empty folder, ...): nothing to do."""


class OutputError(DatasetError):
    """The output folder cannot be written (read-only, no permission, disk full): nothing is the inputs'
    fault, so it is not a per-input failure; ``cxrbench prepare`` exits with its own code (3)."""


@dataclass(frozen=True)
class Failure:
    """One input that could not be used. Preparation records it and goes on with the rest.

    Attributes:
        file: the file at fault (label CSV, image, mask).
        field: what in that file (a column and row, ``PixelData``, ``header``, ...).
        reason: what is wrong and, where it helps, what to do.
        image_id: the sample affected, when there is one.
    """

    file: str
    field: str
    reason: str
    image_id: str | None = None

    def __str__(self) -> str:
        who = f" [{self.image_id}]" if self.image_id else ""
        return f"{self.file}: {self.field}: {self.reason}{who}"

    def to_dict(self) -> dict:
        return asdict(self)


class SampleError(DatasetError):
    """An error tied to one file and field; converts to a :class:`Failure`."""

    def __init__(self, file: str, field: str, reason: str, image_id: str | None = None) -> None:
        self.failure = Failure(str(file), field, reason, image_id)
        super().__init__(str(self.failure))


class MissingPluginError(SampleError):
    """Compressed DICOM pixel data and no installed plugin can decode it."""
