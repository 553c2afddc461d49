"""What ``benchmark``, ``pretrain`` and ``tasks`` share without importing each other (``pretrain`` may not
import ``benchmark`` or ``tasks``; this package imports none of them, nor mmdet / mmseg):

- :mod:`cxrcore.weights`: reading weight files without running code from them (THE loader);
- :mod:`cxrcore.io`: atomic writes (bytes, text, JSON, PNG);
- :mod:`cxrcore.hashing`: the sha256 of a file;
- :mod:`cxrcore.keys`: the wrapper prefixes stripped from state-dict keys (``module.``, ``backbone.``, ...);
- :mod:`cxrcore.mmengine_hooks`: the mmengine hooks both trainings run (plain checkpoints that load under
  ``weights_only=True``, the progress bar).
"""
