"""Export-friendly by construction: every head's and tokenizer's sampling lowers through the
project's export chain (`vla_jax.export.convert`: jax2tf's TF-op path → tf2onnx, graph checks) and
ONNX Runtime reproduces JAX's actions — tf2onnx can exit 0 with a broken graph, so only running
the ONNX model proves anything."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from vla_jax.models import Policy, example_batch


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("head,tokenizers", [
    ("diffusion", "patches"), ("flow", "patches"), ("mse", "patches"), ("discrete", "patches"),
    ("diffusion", "learned"),  # The CPU quickstart's tokenizers: TokenLearner, CoordConv, byte conv.
])
def test_sampling_exports_to_onnx_and_matches_jax(make_tiny_config, head, tokenizers, tmp_path):
  from vla_jax.export import convert, parity
  from vla_jax.inference.onnx_runtime import run_fn
  from vla_jax.inference.bundle import PolicyBundle
  from vla_jax.inference.policy_fn import input_specs, make_policy_fn, normalisation
  from vla_jax.inference.testing import synthetic_statistics

  config = make_tiny_config(head)
  config.image.film = True
  if tokenizers == "learned":
    config.image.update(num_learned_tokens=3, coord_channels=True)
    config.language.byte_conv_kernel = 3
  config.head.diffusion.eta = 0.5  # Exercises the per-step noise input too.
  policy = Policy(config)
  params = jax.jit(policy.init)(jax.random.key(0), example_batch(config, 1, seed=0))
  # Non-trivial FiLM weights so the language → image path is part of the check.
  film = params["backbone"]["image_tokenizer_primary"]["film_0"]
  film["kernel"] = jax.random.normal(jax.random.key(1), film["kernel"].shape)
  stats = synthetic_statistics(config)
  bundle = PolicyBundle(policy=policy, params=jax.tree.map(np.asarray, params), action_stats=stats["action"],
                        proprio_stats=stats["proprio"], normalization="bounds", source={"kind": "test"})
  fn = make_policy_fn(bundle)
  module = convert.tf_module(fn, bundle.params, input_specs(policy))  # Refuses Xla* ops in the TF graph.
  convert.save_onnx(convert.to_onnx(module, 18), tmp_path / "policy.onnx")  # Refuses non-standard ONNX ops.
  run = run_fn(convert.ort_session(tmp_path / "policy.onnx"))
  inputs = parity.random_inputs(bundle, 2, seed=3)
  expected = np.asarray(jax.jit(fn)(params, inputs))
  error = parity.compare(run(inputs), expected, normalisation(bundle)["action"])  # Normalised units.
  assert error["max_abs_error"] <= 1e-4, error
