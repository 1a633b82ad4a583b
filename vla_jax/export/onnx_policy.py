"""Run an exported policy: `OnnxPolicy` drives the ONNX model through the closed-loop harness.

It implements the evaluation harness's `ChunkPolicy` protocol like `JaxPolicy` and shares its
`ObservationWindow` (repeat-first-frame padding, pad mask) and the instruction inputs (byte ids,
or the export's own encoder.onnx run once per instruction), so both see the same inputs — but proprio stays in env units (the ONNX graph normalises it) and actions come back
in env units (the graph un-normalises them).

Noise: "jax" reproduces `JaxPolicy`'s noise bit for bit (same key, `fold_in(calls)`,
`Policy.make_noise`), which makes a JAX-vs-ONNX closed-loop comparison a paired one; "numpy"
draws standard normals with numpy only, as an edge device without JAX would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from vla_jax.data import language
from vla_jax.evaluation.policies import ObservationWindow
from vla_jax.export import convert
from vla_jax.export.exporter import ONNX, load_manifest
from vla_jax.language.onnx_encoder import OnnxInstructionEncoder

NOISE_SOURCES = ("jax", "numpy")


class OnnxPolicy:
  """A `ChunkPolicy` over an ONNX Runtime session of an export directory.

  Args:
    export_dir: a directory written by `export_policy` (manifest.json + policy*.onnx).
    model_file: which ONNX file of the export to run (policy.onnx, policy.fp16.onnx, ...).
    threads: ONNX Runtime intra-op threads (0 = all cores).
    optimization: ONNX Runtime graph optimisation level ("all" | "extended" | "basic" | "disable").
    noise: "jax" (identical to JaxPolicy's for the same seed) or "numpy".
  """

  def __init__(self, export_dir: str | Path, *, model_file: str = ONNX, threads: int = 0,
               optimization: str = "all", noise: str = "jax", seed: int = 0):
    manifest = load_manifest(export_dir)
    cfg = ml_collections.ConfigDict(manifest["model"]["config"])
    if noise not in NOISE_SOURCES:
      raise ValueError(f"noise={noise!r} unknown; expected one of {NOISE_SOURCES}")
    self.manifest = manifest
    self.language_config = cfg.language
    # Instructions are plain strings: byte ids for learned-language exports, or the export's own
    # encoder.onnx (once per instruction) for exports with a frozen pretrained encoder.
    self.encoder = (OnnxInstructionEncoder(export_dir, threads=threads) if manifest.get("language_encoder")
                    else None)
    language.instruction_inputs(cfg.language, ["check"], encoder=self.encoder)  # Fails now, not mid-episode.
    self.action_horizon = int(cfg.action_horizon)
    self.camera = cfg.cameras[0]
    # Env-unit proprio in the window: the exported graph normalises it itself.
    self.window = ObservationWindow(cfg.window_size)
    self.calls = 0
    self._task = None
    self.session = convert.ort_session(Path(export_dir) / model_file, threads=threads, optimization=optimization)
    self.run = convert.onnx_run_fn(self.session)
    self.noise_source = noise
    self.noise_specs = {s["name"]: s for s in manifest["inputs"] if s["name"].startswith("noise_")}
    if noise == "jax":
      import jax

      from vla_jax.models.policy import Policy

      self._policy = Policy(cfg)
      self.rng = jax.random.PRNGKey(seed)
    else:
      self._np_rng = np.random.default_rng(seed)

  def noise(self, batch_size: int) -> dict[str, np.ndarray]:
    """Noise inputs {noise_<name>: float32 [...]} for this call."""
    if self.noise_source == "jax":
      import jax

      made = self._policy.make_noise(jax.random.fold_in(self.rng, self.calls), batch_size)
      return {f"noise_{k}": np.asarray(v, np.float32) for k, v in made.items()}
    return {name: self._np_rng.standard_normal([batch_size if d == "batch" else d for d in spec["shape"]],
                                               dtype=np.float32)
            for name, spec in self.noise_specs.items()}

  def reset(self, instructions, scenes) -> None:
    self._task = language.instruction_inputs(self.language_config, instructions, encoder=self.encoder)
    self.window.reset()
    self.calls = 0

  def observe(self, obs) -> None:
    """Adds a frame to the windows without sampling (for steps executed from an earlier chunk)."""
    self.window.push(obs)

  def __call__(self, obs: dict[str, Any], scenes, already_observed: bool = False) -> np.ndarray:
    """obs: image uint8 [N, S, S, 3], state float32 [N, D] → actions float32 [N, H, A] (env units)."""
    if not already_observed:
      self.window.push(obs)
    observation = self.window.observation(self.camera)
    n = len(observation["timestep_pad_mask"])
    inputs = {**observation, **self._task, **self.noise(n)}
    self.calls += 1
    return np.asarray(self.run(inputs), np.float32)
