"""Pretrained, frozen instruction encoders (all-MiniLM-L6-v2 today), below `data` and `models`.

`tokenizer` is numpy-only (for JAX-free runtimes); `minilm` is the Flax module and its weight
loader; `encoder` is the cached strings → features service the pipeline, evaluation and export use.
Import the submodules directly: this package's import loads neither JAX nor TensorFlow.
"""
