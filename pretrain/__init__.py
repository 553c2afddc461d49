"""cxrbench pretraining: image-text encoders with global, local and uniformity losses.

The benchmark never imports this package: a pretraining run hands it a weights file.
"""
