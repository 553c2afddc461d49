"""What ``benchmark`` and ``pretrain`` share without importing each other (``pretrain`` may not import
``benchmark``): reading weight files without running code from them (:mod:`cxrcore.weights`)."""
