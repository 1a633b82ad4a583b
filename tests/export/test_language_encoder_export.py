"""Exports with a frozen pretrained language encoder: encoder.onnx + tokenizer.json beside the policy,
and the chain text → encoder.onnx → policy.onnx equal to JAX.

The default-suite tests use a tiny random MiniLM-shaped encoder (the real tokenizer, a 2-layer ×
32 network) so the graph converts in seconds; the slow test exports the real all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from vla_jax.envs import VectorTabletopEnv
from vla_jax.export import export_config, export_policy
from vla_jax.inference.jax_policy import JaxPolicy
from vla_jax.inference.onnx_runtime import OnnxPolicy
from vla_jax.inference.testing import random_bundle
from vla_jax.language import minilm
from vla_jax.language.encoder import InstructionEncoder
from vla_jax.models.config import minilm_language

from .conftest import tiny_export_model_config

REPO = Path(__file__).resolve().parents[2]
# The module's export fixture converts a policy and an encoder (~40 s): CI runs it in test-slow.
pytestmark = pytest.mark.slow


def tiny_encoder(max_tokens: int = 16) -> InstructionEncoder:
  config = minilm.MiniLMConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=64)
  module = minilm.MiniLM(config)
  ids = np.zeros((1, max_tokens), np.int32)
  params = module.init(jax.random.key(1), ids, np.ones_like(ids, bool))["params"]
  return InstructionEncoder("minilm", max_tokens, module=module, params=params)


@pytest.fixture(scope="module")
def minilm_export(tmp_path_factory):
  encoder = tiny_encoder()
  config = tiny_export_model_config()
  config.language.feature_dim = encoder.feature_dim
  minilm_language(config.language)
  config.language.sentence_token = True  # As the quickstart policy: its pooling goes through the export too.
  bundle = random_bundle(config, seed=0, normalization="bounds")
  bundle.encoder = encoder
  out = tmp_path_factory.mktemp("exports") / "tiny_minilm"
  export = export_config()
  export.parity_batch_sizes = (1, 4)
  export.save_optimized_onnx = False
  manifest = export_policy(bundle, out, export, log=lambda *_: None)
  return out, manifest, bundle


def test_manifest_says_how_to_chain_encoder_and_policy(minilm_export):
  out, manifest, _ = minilm_export
  section = manifest["language_encoder"]
  assert (out / section["file"]).is_file() and (out / section["tokenizer"]).is_file()
  assert section["parity"]["passed"] and section["output"] == "language_features"
  assert "attention_mask" in section["chain"] and "once per new instruction" in section["chain"]
  names = [s["name"] for s in manifest["inputs"]]
  assert "language_features" in names and "language_mask" in names and "language_tokens" not in names
  assert json.loads((out / "manifest.json").read_text())["language_encoder"] == section


def test_exported_chain_from_a_plain_string_matches_jax_in_closed_loop(minilm_export):
  out, _, b = minilm_export
  jax_policy = JaxPolicy(b, seed=3)
  onnx_policy = OnnxPolicy(out, noise="jax", seed=3)
  venv = VectorTabletopEnv(3, image_size=32, max_episode_steps=20)
  obs, _ = venv.reset(seeds=20)
  typed = ["could you please put the red square in the top left corner", obs["instruction"][1], "go"]
  for p in (jax_policy, onnx_policy):
    p.reset(typed, venv.scenes)
  for _ in range(3):
    a_jax, a_onnx = jax_policy(obs, venv.scenes), onnx_policy(obs, venv.scenes)
    np.testing.assert_allclose(a_onnx, a_jax, atol=1e-4)
    obs = venv.step(a_jax[:, 0])[0]
  # The instruction changes the actions (the chain really carries the features through).
  onnx_policy.reset(["pick up the blue circle"] * 3, venv.scenes)
  assert np.abs(onnx_policy(obs, venv.scenes) - a_onnx).max() > 1e-3


def test_onnx_encoder_runtime_loads_neither_jax_nor_tensorflow(minilm_export):
  out, _, _ = minilm_export
  code = ("import sys; from vla_jax.language.onnx_encoder import OnnxInstructionEncoder;"
          f"e = OnnxInstructionEncoder({str(out)!r}); f = e.encode(['grab the red square', 'go']);"
          "assert f['language_features'].shape == (2, 16, 32), f['language_features'].shape;"
          "assert f['language_mask'][1].sum() == 3;"
          "bad = [m for m in ('jax', 'tensorflow', 'torch') if m in sys.modules]; assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.slow
def test_real_minilm_encoder_exports_within_1e_4_of_jax(tmp_path):
  from vla_jax.export import encoder_export
  from vla_jax.language.encoder import get_encoder

  section = encoder_export.export_encoder(get_encoder("minilm", 32), "tokens", tmp_path, opset=17,
                                          log=lambda *_: None)
  assert section["parity"]["passed"], section["parity"]
  assert section["encoder"]["weights_sha256"].startswith("53aa5117")
