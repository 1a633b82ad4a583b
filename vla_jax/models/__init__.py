"""Models: tokenizers → block-masked transformer backbone → action heads, behind `Policy`.

Public API:
  model_config(size, head, language)  → ConfigDict (see config.py for every key)
  Policy(config).init / loss / sample_actions / sample_actions_from_noise
  Policy(config).denoising_steps: the chunk after every diffusion / flow step (inspection)
  example_batch(config, batch_size, seed), count_params(params)
"""

from vla_jax.models.config import get_config, model_config
from vla_jax.models.policy import Policy, count_params, example_batch

__all__ = ["Policy", "count_params", "example_batch", "get_config", "model_config"]
