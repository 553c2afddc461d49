"""cxrbench benchmark: HOW an encoder is measured - backbones, OpenMMLab heads, runs, records, CLI."""

__version__ = "0.1.0"
