"""`Policy.denoising_steps`: every step of the iterative heads' sampling loop, for inspection."""

from __future__ import annotations

import jax
import numpy as np
import pytest


@pytest.mark.parametrize("head", ["diffusion", pytest.param("flow", marks=pytest.mark.slow)])
def test_steps_start_at_the_noise_and_end_at_the_sampled_chunk(tiny_policy, jit, head):
  policy, params, batch, _ = tiny_policy(head)
  obs, task = batch["observation"], batch["task"]
  noise = policy.make_noise(jax.random.key(5), 4)
  steps = np.asarray(jit(policy.denoising_steps)(params, obs, task, noise))
  cfg = policy.config.head
  num_steps = cfg.diffusion.num_sample_steps if head == "diffusion" else cfg.flow.num_integration_steps
  assert steps.shape == (num_steps + 1, 4, policy.config.action_horizon, policy.config.action_dim)
  np.testing.assert_array_equal(steps[0], np.asarray(noise["initial"]))
  final = np.asarray(jit(policy.sample_actions_from_noise)(params, obs, task, noise))
  np.testing.assert_allclose(steps[-1], final, atol=1e-6)


def test_a_one_step_head_has_no_denoising_steps(tiny_policy):
  policy, params, batch, _ = tiny_policy("mse")
  with pytest.raises(ValueError, match="samples in one step"):
    policy.denoising_steps(params, batch["observation"], batch["task"], {})
