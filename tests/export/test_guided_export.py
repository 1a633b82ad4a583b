"""Real-time chunking samplers through the export chain: policy.rtc.onnx / policy.hard.onnx."""

from __future__ import annotations

import numpy as np
import pytest

from vla_jax.export import export_config, export_policy, parity
from vla_jax.inference import policy_fn
from vla_jax.inference.artifacts import GUIDED_FILES
from vla_jax.inference.onnx_runtime import ort_session, run_fn
from vla_jax.models.heads import realtime


@pytest.mark.slow
def test_guided_samplers_export_with_parity_and_hard_inpainting_keeps_the_prefix(tiny_bundle, tmp_path):
  config = export_config()
  config.variants = ()
  config.save_optimized_onnx = False
  config.guided_samplers = ("rtc", "hard")
  manifest = export_policy(tiny_bundle, tmp_path / "x", config, log=lambda *_: None)
  for mode in ("rtc", "hard"):
    result = manifest["guided_samplers"][mode]
    assert result["passed"] and result["max_abs_error"] <= config.parity_tolerance, (mode, result)
    names = [s["name"] for s in manifest["artifacts"][f"onnx_{mode}"]["inputs"]]
    assert names[-2:] == ["prefix_actions", "prefix_weights"]
  # The exported hard inpainting executes the frozen actions as given (env units in, env units out).
  run = run_fn(ort_session(tmp_path / "x" / GUIDED_FILES["hard"]))
  inputs = parity.random_inputs(tiny_bundle, 3, seed=4, guidance="hard")
  a = policy_fn.normalisation(tiny_bundle)["action"]
  inputs["prefix_actions"] = (a.offset + a.scale * np.random.default_rng(0).uniform(-0.9, 0.9, inputs["prefix_actions"].shape)
                              ).astype(np.float32)  # Inside the bounds: normalising does not clip it.
  inputs["prefix_weights"] = np.repeat(realtime.prefix_weights(tiny_bundle.model_config.action_horizon, 2, 1, xp=np)[None], 3, 0)
  actions = run(inputs)
  np.testing.assert_allclose(actions[:, :2], inputs["prefix_actions"][:, :2], atol=1e-5)
  # The runtimes: OnnxPolicy's guided call (policy.rtc.onnx) equals JaxPolicy's on the same episode.
  from vla_jax.inference.jax_policy import JaxPolicy
  from vla_jax.inference.onnx_runtime import OnnxPolicy

  jax_policy = JaxPolicy(tiny_bundle, seed=3)
  onnx_policy = OnnxPolicy(tmp_path / "x", model_file="policy.onnx", noise="jax", seed=3)
  rng = np.random.default_rng(1)
  s, d = tiny_bundle.model_config.image_size_px, tiny_bundle.model_config.proprio_dim
  prev = None
  for p in (jax_policy, onnx_policy):
    p.reset(["push the red block to the left"] * 2)
  for _ in range(3):
    obs = {"image": rng.integers(0, 256, (2, s, s, 3), dtype=np.uint8), "state": rng.normal(size=(2, d)).astype(np.float32)}
    if prev is None:
      got = [p(obs) for p in (jax_policy, onnx_policy)]
    else:
      prefix = np.concatenate([prev[:, 1:], prev[:, -1:]], axis=1)  # One step executed meanwhile.
      w = np.repeat(realtime.prefix_weights(prefix.shape[1], 1, 1, xp=np)[None], 2, 0)
      got = [p(obs, guidance="rtc", prefix=prefix, weights=w) for p in (jax_policy, onnx_policy)]
    np.testing.assert_allclose(got[1], got[0], atol=1e-4 * float(a.scale.max()))
    prev = got[0]


@pytest.mark.slow
def test_a_prefix_conditioned_sampler_exports_with_parity_keeps_the_prefix_and_is_refused_for_other_heads(tmp_path):
  """policy.conditioned.onnx (training-time real-time chunking) passes the export's parity check and
  executes the frozen actions as given; exporting it from a head trained without prefix
  conditioning fails with the reason."""
  from tests.conftest import tiny_export_model_config
  from vla_jax.inference.testing import random_bundle

  model_config = tiny_export_model_config()
  model_config.head.prefix_conditioning.max_delay = 2
  bundle = random_bundle(model_config, seed=0, normalization="bounds")
  config = export_config()
  config.variants = ()
  config.save_optimized_onnx = False
  config.guided_samplers = ("conditioned",)
  manifest = export_policy(bundle, tmp_path / "x", config, log=lambda *_: None)
  result = manifest["guided_samplers"]["conditioned"]
  assert result["passed"] and result["max_abs_error"] <= config.parity_tolerance, result
  run = run_fn(ort_session(tmp_path / "x" / GUIDED_FILES["conditioned"]))
  inputs = parity.random_inputs(bundle, 3, seed=4, guidance="conditioned")
  a = policy_fn.normalisation(bundle)["action"]
  inputs["prefix_actions"] = (a.offset + a.scale * np.random.default_rng(0).uniform(-0.9, 0.9, inputs["prefix_actions"].shape)
                              ).astype(np.float32)
  inputs["prefix_weights"] = np.repeat(realtime.prefix_weights(model_config.action_horizon, 2, 1, xp=np)[None], 3, 0)
  np.testing.assert_allclose(run(inputs)[:, :2], inputs["prefix_actions"][:, :2], atol=1e-5)
  plain = random_bundle(tiny_export_model_config(), seed=0, normalization="bounds")
  with pytest.raises(ValueError, match="needs a head trained with prefix conditioning"):
    export_policy(plain, tmp_path / "y", config, log=lambda *_: None)
