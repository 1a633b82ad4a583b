"""An exported policy computes what the JAX policy computes: SavedModel and ONNX, batch 1 and 4."""

from __future__ import annotations

import jax
import numpy as np

from vla_jax.export import convert, parity
from vla_jax.inference.onnx_runtime import run_fn
from vla_jax.inference import policy_fn
from vla_jax.inference.artifacts import ONNX, SAVEDMODEL


def test_export_passed_parity_at_batch_1_and_4_for_every_artifact(tiny_export):
  _, manifest = tiny_export
  for artifact in ("savedmodel", "onnx", "onnx_optimized", "numpy_normalisation"):
    figures = manifest["parity"][artifact]
    assert figures["batch_1"]["max_abs_error"] <= 1e-4, artifact
    assert figures["batch_4"]["max_abs_error"] <= 1e-4, artifact
    assert figures["passed"]


def test_reloaded_artifacts_match_jax_on_fresh_inputs(tiny_export, tiny_bundle):
  export_dir, _ = tiny_export
  inputs = parity.random_inputs(tiny_bundle, 4, seed=1234)
  expected = np.asarray(jax.jit(policy_fn.make_policy_fn(tiny_bundle))(tiny_bundle.params, inputs))
  scale = policy_fn.normalisation(tiny_bundle)["action"].error_scale()
  for run in (run_fn(convert.ort_session(export_dir / ONNX)),
              convert.load_savedmodel_fn(export_dir / SAVEDMODEL)):
    assert (np.abs(run(inputs) - expected) / scale).max() <= 1e-4


def test_onnx_batch_dimension_is_dynamic_and_rows_are_independent(tiny_export, tiny_bundle):
  export_dir, _ = tiny_export
  session = convert.ort_session(export_dir / ONNX)
  assert all(i.shape[0] == "batch" for i in session.get_inputs())
  run = run_fn(session)
  inputs = parity.random_inputs(tiny_bundle, 3, seed=3)  # A batch size the export never saw.
  together = run(inputs)
  one_by_one = np.concatenate([run({k: v[i:i + 1] for k, v in inputs.items()}) for i in range(3)])
  np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_actions_depend_on_the_noise_input(tiny_export, tiny_bundle):
  """The sampling loop is in the graph and really consumes the noise (not constant-folded away)."""
  export_dir, _ = tiny_export
  run = run_fn(convert.ort_session(export_dir / ONNX))
  inputs = parity.random_inputs(tiny_bundle, 2, seed=5)
  other = dict(inputs, noise_initial=-inputs["noise_initial"])
  assert not np.allclose(run(inputs), run(other))
