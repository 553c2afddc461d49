"""Which argument types do the commands share? Checked numbers (``number``, ``POSITIVE_INT``, ``COUNT``):
a bad value is a usage error (exit 2) that names the option and the value."""

from __future__ import annotations

import argparse


def number(kind: type, low: float, high: float | None = None, low_open: bool = False):
    """An argparse ``type``: an int / a finite float within [low, high] ((low, high] if ``low_open``);
    anything else is a usage error (exit 2) that names the option and the value."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if (value <= low) if low_open else (value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low:g}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


POSITIVE_INT = number(int, 1)
COUNT = number(int, 0)
