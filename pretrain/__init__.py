"""cxrbench pretraining: image-text encoders with global, local and uniformity losses.

The benchmark never imports this package, nor this package the benchmark: a pretraining run hands it a
weights file (``OUT/backbone.safetensors``, torchvision ResNet keys, see :mod:`pretrain.export`). What both
need (the weights loader, atomic writes, the file hash, key prefixes, the plain-checkpoint and progress hooks)
lives in the neutral package :mod:`cxrcore`.

Modules: :mod:`pretrain.losses` (pure loss functions), :mod:`pretrain.config` (terms, presets, settings),
:mod:`pretrain.objective` (model outputs -> terms), :mod:`pretrain.model` (the LoVT model),
:mod:`pretrain.text` (sections, sentences, BERT loading), :mod:`pretrain.data` (MIMIC-CXR, manifest,
synthetic pairs, dataset), :mod:`pretrain.engine` / :mod:`pretrain.train` (mmengine training),
:mod:`pretrain.export`, :mod:`pretrain.analysis`, :mod:`pretrain.runs`
(command-line options -> a run).
"""
