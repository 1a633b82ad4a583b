"""vla_jax: vision-language-action robot policies in JAX.

Layers, lowest first (a layer never imports a higher one):
  envs -> data -> models -> training -> evaluation / export.
"""

__version__ = "0.1.0"
