"""Export-friendly by construction: `sample_actions_from_noise` lowers through jax2tf's TF-op path
and tf2onnx, and ONNX Runtime reproduces JAX's actions (TOOLCHAIN.md: tf2onnx can exit 0 with a
broken graph, so only running the ONNX model proves anything)."""

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
def test_sampling_exports_to_onnx_and_matches_jax(make_tiny_config, head, tokenizers):
  tf = pytest.importorskip("tensorflow")
  tf2onnx = pytest.importorskip("tf2onnx")
  ort = pytest.importorskip("onnxruntime")
  from jax.experimental import jax2tf

  config = make_tiny_config(head)
  config.image.film = True
  if tokenizers == "learned":
    config.image.update(num_learned_tokens=3, coord_channels=True)
    config.language.byte_conv_kernel = 3
  config.head.diffusion.eta = 0.5  # Exercises the per-step noise input too.
  policy = Policy(config)
  batch = example_batch(config, 1, seed=0)
  params = jax.jit(policy.init)(jax.random.key(0), batch)
  # Non-trivial FiLM weights so the language → image path is part of the check.
  film = params["backbone"]["image_tokenizer_primary"]["film_0"]
  film["kernel"] = jax.random.normal(jax.random.key(1), film["kernel"].shape)
  inputs = (batch["observation"], batch["task"],
            {k: np.asarray(v) for k, v in policy.make_noise(jax.random.key(2), 1).items()})

  def sample(observation, task, noise):
    return policy.sample_actions_from_noise(params, observation, task, noise)

  expected = np.asarray(jax.jit(sample)(*inputs))
  flat, treedef = jax.tree_util.tree_flatten(inputs)
  signature = [tf.TensorSpec(x.shape, tf.as_dtype(x.dtype), name=f"input_{i}")
               for i, x in enumerate(flat)]
  converted = jax2tf.convert(sample, native_serialization=False, enable_xla=False)

  @tf.function(autograph=False)
  def sample_tf(*args):
    return converted(*jax.tree_util.tree_unflatten(treedef, args))

  graph_ops = {op.type for op in sample_tf.get_concrete_function(*signature).graph.get_operations()}
  assert not graph_ops & {"XlaCallModule", "XlaDotV2", "XlaConvV2", "XlaGather"}, graph_ops
  onnx_model, _ = tf2onnx.convert.from_function(sample_tf, input_signature=signature, opset=18)
  session = ort.InferenceSession(onnx_model.SerializeToString())
  got = session.run(None, {i.name: x for i, x in zip(session.get_inputs(), flat)})[0]
  np.testing.assert_allclose(got, expected, atol=1e-4)
