"""The whole deployed policy as one pure JAX function: raw observations + noise → env-unit actions.

`make_policy_fn(bundle)` is what export converts (jax2tf → ONNX) *and* what `JaxPolicy` jits for
evaluation and the JAX server backend — the same function, so closed-loop evaluation tests exactly
the computation that gets exported. It wraps `Policy.sample_actions_from_noise` (the code training
runs) with the dataset's normalisation baked in as constants:

    proprio (env units) ──normalise──▶ policy (backbone + fixed-step sampling loop) ──un-normalise──▶ actions

Inputs are a flat dict so that every runtime sees the same named tensors (B is dynamic):
  image_<camera>     uint8   [B, T, S, S, 3]
  proprio            float32 [B, T, D]   raw, in the simulator's / robot's units (if use_proprio)
  timestep_pad_mask  bool    [B, T]      True = a real frame (False = padding at episode start)
  language_tokens    int32   [B, L]      byte ids from `vla_jax.data.language.tokenize`, or
  language_embedding float32 [B, E]      for models configured with language.mode="embedding", or
  language_features  float32 [B, L, F]   + language_mask bool [B, L]: the frozen MiniLM encoder's
                                         outputs (language.encoder="minilm"; an export's
                                         encoder.onnx computes them once per instruction)
  noise_<name>       float32 [...]       standard-normal noise, one per `Policy.noise_shapes`
                                         entry (e.g. noise_initial [B, H, A]); absent for
                                         deterministic heads
  prefix_actions     float32 [B, H, A]   only for a guided sampler (`guidance` "rtc" | "hard" |
  prefix_weights     float32 [B, H]      "conditioned", real-time chunking): the previous chunk aligned to this
                                         one's steps, in env units (normalised inside), and the
                                         soft mask W (`models/heads/realtime.prefix_weights`)
Output: actions float32 [B, H, A] in env units.

The normalisation math is `vla_jax.data.statistics` (`affine_params` supplies the offset/scale/mask,
so there is one definition of it); the graph computes normalise as (x - offset) * (1 / scale) and
un-normalise as y * scale + offset, with masked-off dims passed through; the exporter's parity
check compares the result with the numpy `normalize` / `unnormalize` on every export.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from vla_jax.data import statistics as stats_lib
from vla_jax.inference.bundle import PolicyBundle
from vla_jax.models.backbone import language_input_keys
from vla_jax.models.config import embodiment_names
from vla_jax.models.policy import Policy

Params = Any


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """One named input or output. `shape` holds None at `batch_axis` (the dynamic batch dim)."""

  name: str
  shape: tuple[int | None, ...]
  dtype: str  # numpy dtype name: "uint8", "float32", "int32", "bool".
  batch_axis: int
  description: str

  def concrete(self, batch_size: int) -> tuple[int, ...]:
    return tuple(batch_size if d is None else d for d in self.shape)

  def to_json(self) -> dict[str, Any]:
    return {"name": self.name, "shape": ["batch" if d is None else d for d in self.shape],
            "dtype": self.dtype, "batch_axis": self.batch_axis, "description": self.description}



# ---- Signature. ---------------------------------------------------------------------------------


def noise_batch_axes(policy: Policy) -> dict[str, int]:
  """Which axis of each noise array is the batch axis (found by comparing B=1 with B=2 shapes)."""
  one, two = policy.noise_shapes(1), policy.noise_shapes(2)
  axes = {}
  for name in one:
    diff = [i for i, (a, b) in enumerate(zip(one[name], two[name])) if a != b]
    if len(diff) != 1:
      raise ValueError(f"noise {name!r}: cannot find its batch axis from shapes {one[name]} (B=1) vs {two[name]} (B=2)")
    axes[name] = diff[0]
  return axes


def embodiment_index(bundle: PolicyBundle) -> int | None:
  """A multi-embodiment model's index of the bundle's dataset (the robot it acts for), else None."""
  names = embodiment_names(bundle.model_config)
  if not names:
    return None
  dataset = bundle.source.get("dataset")
  if dataset not in names:
    raise ValueError(f"the policy serves embodiments {list(names)}; the bundle's statistics are of "
                     f"dataset {dataset!r}, which is none of them (choose one with dataset=... / --dataset)")
  return names.index(dataset)


def io_dims(bundle: PolicyBundle) -> dict[str, int]:
  """{"proprio": D, "action": A} in the bundle's embodiment's own units: the model's dims, or for a
  multi-embodiment model that robot's dims (its statistics'), not the mixture's padded ones."""
  cfg = bundle.model_config
  if embodiment_index(bundle) is None:
    return {"proprio": int(cfg.proprio_dim), "action": int(cfg.action_dim)}
  proprio = len(bundle.proprio_stats["mask"]) if bundle.proprio_stats is not None else int(cfg.proprio_dim)
  return {"proprio": proprio, "action": len(bundle.action_stats["mask"])}


def input_specs(policy: Policy, guidance: str | None = None, dims: dict[str, int] | None = None) -> list[TensorSpec]:
  """The exported model's inputs, in a fixed order (also the ONNX / SavedModel input order).
  dims: `io_dims(bundle)` for a multi-embodiment model (default: the model's own)."""
  cfg = policy.config
  dims = dims or {"proprio": int(cfg.proprio_dim), "action": int(cfg.action_dim)}
  t, px = int(cfg.window_size), int(cfg.image_size_px)
  specs = [TensorSpec(f"image_{c}", (None, t, px, px, 3), "uint8", 0,
                      f"camera {c!r}, RGB, the last T frames (oldest first)") for c in cfg.cameras]
  if cfg.use_proprio:
    specs.append(TensorSpec("proprio", (None, t, dims["proprio"]), "float32", 0,
                            "proprioceptive state in env units (normalised inside the model)"))
  specs.append(TensorSpec("timestep_pad_mask", (None, t), "bool", 0,
                          "True where the window holds a real frame, False for start-of-episode padding"))
  mode = cfg.language.mode
  minilm = cfg.language.get("encoder", "learned") == "minilm"
  if mode == "tokens" and minilm:
    length, dim = int(cfg.language.max_len), int(cfg.language.feature_dim)
    specs.append(TensorSpec("language_features", (None, length, dim), "float32", 0,
                            "the instruction's per-token MiniLM states (encoder.onnx output), 0 at padding"))
    specs.append(TensorSpec("language_mask", (None, length), "bool", 0,
                            "True where language_features holds a real token (encoder.onnx output)"))
  elif mode == "tokens":
    specs.append(TensorSpec("language_tokens", (None, int(cfg.language.max_len)), "int32", 0,
                            "instruction as byte ids (vla_jax.data.language.tokenize), 0-padded"))
  elif mode == "embedding" and minilm:
    specs.append(TensorSpec("language_embedding", (None, int(cfg.language.feature_dim)), "float32", 0,
                            "the instruction's MiniLM sentence embedding (encoder.onnx output)"))
  elif mode == "embedding":
    specs.append(TensorSpec("language_embedding", (None, int(cfg.language.embedding_dim)), "float32", 0,
                            "precomputed sentence embedding of the instruction"))
  axes = noise_batch_axes(policy)
  for name, shape in sorted(policy.noise_shapes(1).items()):
    ax = axes[name]
    shape = tuple(None if i == ax else int(d) for i, d in enumerate(shape))
    specs.append(TensorSpec(f"noise_{name}", shape, "float32", ax,
                            f"standard-normal noise {name!r} of the {cfg.head.kind} head"))
  if guidance is not None:
    h, a = int(cfg.action_horizon), dims["action"]
    specs.append(TensorSpec("prefix_actions", (None, h, a), "float32", 0,
                            "the previous chunk aligned to this one's steps, env units (real-time chunking)"))
    specs.append(TensorSpec("prefix_weights", (None, h), "float32", 0,
                            "soft mask W: 1 = frozen (executes while inferring), 0 = free"))
  return specs


def output_specs(policy: Policy, dims: dict[str, int] | None = None) -> list[TensorSpec]:
  cfg = policy.config
  a = dims["action"] if dims else int(cfg.action_dim)
  return [TensorSpec("actions", (None, int(cfg.action_horizon), a), "float32", 0,
                     "action chunk in env units (un-normalised inside the model), oldest step first")]


# ---- Normalisation constants. -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Affine:
  """normalise: where(mask, clip?((x - offset) * inv_scale), x); un-normalise: where(mask, y * scale + offset, y).

  All float32 [D]; `scale` is 0 where the statistics' range is zero (bounds), `inv_scale` is 0 there.
  """

  offset: np.ndarray
  scale: np.ndarray
  inv_scale: np.ndarray
  mask: np.ndarray
  clip: bool

  @classmethod
  def from_stats(cls, key_stats: dict[str, Any], method: str) -> "Affine":
    offset, scale, mask = stats_lib.affine_params(key_stats, method)  # The one definition of the formula.
    finite = np.where(np.isinf(scale), 0.0, scale)
    inv = np.where(np.isinf(scale), 0.0, 1.0 / np.where(np.isinf(scale), 1.0, scale))
    return cls(offset.astype(np.float32), finite.astype(np.float32), inv.astype(np.float32),
               np.asarray(mask, bool), method == "bounds")

  def error_scale(self) -> np.ndarray:
    """Per-dim divisor turning an env-unit difference into normalised units (1 on pass-through dims)."""
    return np.where(self.mask & (self.scale > 0), self.scale, 1.0).astype(np.float32)

  def to_json(self) -> dict[str, Any]:
    return {"offset": self.offset.tolist(), "scale": self.scale.tolist(), "mask": self.mask.tolist(),
            "clip_to_unit_range": self.clip}


def normalisation(bundle: PolicyBundle) -> dict[str, Affine]:
  out = {"action": Affine.from_stats(bundle.action_stats, bundle.normalization)}
  if bundle.model_config.use_proprio:
    if bundle.proprio_stats is None:
      raise ValueError("the model reads proprio but the bundle has no proprio statistics")
    out["proprio"] = Affine.from_stats(bundle.proprio_stats, bundle.normalization)
  return out


def normalize(x: jnp.ndarray, affine: Affine) -> jnp.ndarray:
  """Graph twin of `statistics.normalize`: float [..., D] → float32 [..., D]."""
  x = x.astype(jnp.float32)
  y = (x - affine.offset) * affine.inv_scale
  if affine.clip:
    y = jnp.clip(y, -1.0, 1.0)
  return jnp.where(affine.mask, y, x)


def unnormalize(y: jnp.ndarray, affine: Affine) -> jnp.ndarray:
  """Graph twin of `statistics.unnormalize`: float32 [..., D] → float32 [..., D]."""
  y = y.astype(jnp.float32)
  return jnp.where(affine.mask, y * affine.scale + affine.offset, y)


# ---- The function to export. --------------------------------------------------------------------


def make_policy_fn(bundle: PolicyBundle, guidance: str | None = None
                   ) -> Callable[[Params, dict[str, jnp.ndarray]], jnp.ndarray]:
  """policy_fn(params, inputs) → actions float32 [B, H, A] (env units); inputs as in the module docstring.

  guidance: None (plain sampling), or "rtc" / "hard" / "conditioned" — a chunk that continues `prefix_actions`
  (`Policy.sample_actions_guided`, real-time chunking). Params are an argument (not closed over)
  so the SavedModel can hold them as variables.
  """
  policy = bundle.policy
  cfg = policy.config
  norm = normalisation(bundle)
  noise_names = sorted(policy.noise_shapes(1))
  # A multi-embodiment model acts as the bundle's embodiment: its index is a constant of the graph,
  # its proprio / prefix are zero-padded to the mixture's sizes (as in training) and only its own
  # action dims come out — the padded ones were never trained and are never emitted.
  embodiment = embodiment_index(bundle)
  dims = io_dims(bundle)

  def pad_to(x: jnp.ndarray, size: int) -> jnp.ndarray:
    return x if x.shape[-1] == size else jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, size - x.shape[-1])])

  def policy_fn(params: Params, inputs: dict[str, jnp.ndarray]) -> jnp.ndarray:
    observation = {f"image_{c}": inputs[f"image_{c}"] for c in cfg.cameras}
    observation["timestep_pad_mask"] = inputs["timestep_pad_mask"]
    if cfg.use_proprio:
      observation["proprio"] = pad_to(normalize(inputs["proprio"], norm["proprio"]), int(cfg.proprio_dim))
    task = {key: inputs[key] for key in language_input_keys(cfg.language)}
    if embodiment is not None:
      task["embodiment"] = jnp.full(inputs["timestep_pad_mask"].shape[:1], embodiment, jnp.int32)
    noise = {name: inputs[f"noise_{name}"] for name in noise_names}
    if guidance is None:
      actions = policy.sample_actions_from_noise(params, observation, task, noise)
    else:
      prefix = pad_to(normalize(inputs["prefix_actions"], norm["action"]), int(cfg.action_dim))
      actions = policy.sample_actions_guided(params, observation, task, noise, prefix, inputs["prefix_weights"],
                                             mode=guidance)
    return unnormalize(actions[..., :dims["action"]], norm["action"])

  return policy_fn


