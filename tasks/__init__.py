"""cxrbench tasks: WHAT is measured - the raw datasets, splits, prepared data and the 18-task registry."""

__version__ = "0.1.0"
