"""vla_jax: vision-language-action robot policies in JAX.

Layers, lowest first (a layer never imports a higher one):
  envs -> language -> data -> models -> training -> inference -> evaluation / export / serving.
"""

__version__ = "0.1.0"
