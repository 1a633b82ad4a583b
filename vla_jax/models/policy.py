"""The Policy API: pure functions over explicit params that training, evaluation, export and
serving all call — there is no second copy of the model logic anywhere.

    policy = Policy(model_config("small", head="diffusion"))
    params = policy.init(jax.random.key(0), batch)
    (loss, metrics), grads = jax.value_and_grad(policy.loss, has_aux=True)(params, batch, rng)
    actions = policy.sample_actions(params, batch["observation"], batch["task"], rng)  # [B, H, A]
    # Export-friendly variant: all randomness as inputs (shapes from policy.noise_shapes(B)).
    actions = policy.sample_actions_from_noise(params, obs, task, policy.make_noise(rng, B))

Batch layout (see the input-pipeline contract): `observation` {`image_<camera>` uint8
[B, T, Hpx, Wpx, 3], `proprio` float32 [B, T, D], `timestep_pad_mask` bool [B, T]}, `task`
{`language_tokens` int32 [B, L] (learned bytes), or `language_features` float32 [B, L, F] +
`language_mask` bool [B, L] (frozen MiniLM), and/or `language_embedding` float32 [B, E]}, `action` float32
[B, H, A] (normalised), `action_pad_mask` bool [B, H], optionally `aux` {`referent_xy` float32
[B, K, 2], `referent_valid` bool [B, K]} (see `referents.py`) and/or {`state_target` float32
[B, N], `state_target_valid` bool [B]} (training labels only), optionally
`action_dim_mask` bool [B, A] (False on action dims the example's robot lacks: no loss there).
Multi-embodiment models (`config.embodiment.names`) also take `task/embodiment` int32 [B]. Input shapes are validated against the
config in Python (at trace time) so a mismatch fails with the key, the shape and what was expected.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vla_jax.models import heads
from vla_jax.models.config import embodiment_names
from vla_jax.models.heads import realtime
from vla_jax.models.model import VLAModel

Array = jnp.ndarray
Params = Any
ITERATIVE_HEADS = ("diffusion", "flow")  # Heads whose sampling is a loop of steps (see `denoising_steps`).


def _check_shape(where: str, array: Any, expected: tuple) -> None:
  """Raise a ValueError naming `where` unless array.shape matches expected (None = any)."""
  shape = tuple(np.shape(array))
  if len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
    pretty = tuple("?" if e is None else e for e in expected)
    raise ValueError(f"{where} has shape {shape}, expected {pretty}")


def _require(tree: dict, key: str, where: str) -> Any:
  if key not in tree:
    raise ValueError(f"{where}/{key} is required by the model config but missing; "
                     f"{where} has keys {sorted(tree)}")
  return tree[key]


class Policy:
  """A VLA policy defined by its config. Methods are pure: safe to `jax.jit`."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model = VLAModel(config)

  # --- Input validation -------------------------------------------------------------------

  def check_inputs(self, observation: dict, task: dict) -> int:
    """Validate observation/task against the config; returns the batch size B."""
    cfg = self.config
    pad = _require(observation, "timestep_pad_mask", "observation")
    if np.ndim(pad) != 2:
      raise ValueError(f"observation/timestep_pad_mask has shape {np.shape(pad)}, expected (B, T)")
    b = np.shape(pad)[0]
    t = cfg.window_size
    _check_shape("observation/timestep_pad_mask", pad, (b, t))
    px = cfg.image_size_px
    for camera in cfg.cameras:
      _check_shape(f"observation/image_{camera}",
                   _require(observation, f"image_{camera}", "observation"), (b, t, px, px, 3))
    if cfg.use_proprio:
      _check_shape("observation/proprio", _require(observation, "proprio", "observation"),
                   (b, t, cfg.proprio_dim))
    mode = cfg.language.mode
    if mode == "tokens" and cfg.language.get("encoder", "learned") == "minilm":
      length, dim = cfg.language.max_len, cfg.language.feature_dim
      _check_shape("task/language_features", _require(task, "language_features", "task"), (b, length, dim))
      _check_shape("task/language_mask", _require(task, "language_mask", "task"), (b, length))
    elif mode == "tokens":
      _check_shape("task/language_tokens", _require(task, "language_tokens", "task"),
                   (b, cfg.language.max_len))
    elif mode == "embedding":
      _check_shape("task/language_embedding", _require(task, "language_embedding", "task"),
                   (b, cfg.language.embedding_dim))
    if embodiment_names(cfg):
      index = _require(task, "embodiment", "task")
      _check_shape("task/embodiment", index, (b,))
      dtype = np.dtype(index.dtype) if hasattr(index, "dtype") else np.asarray(index).dtype
      if not np.issubdtype(dtype, np.integer):
        raise ValueError(f"task/embodiment has dtype {dtype}, expected an integer index into "
                         f"{embodiment_names(cfg)}")
    return b

  def check_batch(self, batch: dict) -> int:
    b = self.check_inputs(_require(batch, "observation", "batch"), _require(batch, "task", "batch"))
    chunk = (b, self.config.action_horizon, self.config.action_dim)
    _check_shape("batch/action", _require(batch, "action", "batch"), chunk)
    _check_shape("batch/action_pad_mask", _require(batch, "action_pad_mask", "batch"), chunk[:2])
    if "action_dim_mask" in batch:
      _check_shape("batch/action_dim_mask", batch["action_dim_mask"], (b, self.config.action_dim))
    aux = batch.get("aux") or {}
    if "referent_xy" in aux or "referent_valid" in aux:
      xy = _require(aux, "referent_xy", "batch/aux")
      _check_shape("batch/aux/referent_xy", xy, (b, None, 2))
      _check_shape("batch/aux/referent_valid", _require(aux, "referent_valid", "batch/aux"),
                   (b, np.shape(xy)[1]))
    if "state_target" in aux or "state_target_valid" in aux:
      _check_shape("batch/aux/state_target", _require(aux, "state_target", "batch/aux"), (b, None))
      _check_shape("batch/aux/state_target_valid", _require(aux, "state_target_valid", "batch/aux"), (b,))
    return b

  # --- The API ----------------------------------------------------------------------------

  def init(self, rng: Array, example_batch: dict) -> Params:
    """Fresh parameters (the flax "params" collection) for batches shaped like example_batch."""
    self.check_batch(example_batch)
    init_rng, loss_rng = jax.random.split(rng)
    variables = self.model.init(
        {"params": init_rng}, example_batch["observation"], example_batch["task"],
        example_batch["action"], example_batch["action_pad_mask"], loss_rng, False)
    return variables["params"]

  def loss(self, params: Params, batch: dict, rng: Array,
           train: bool = True) -> tuple[Array, dict[str, Array]]:
    """Scalar training loss and metrics; use with `jax.value_and_grad(..., has_aux=True)`.

    An optional `batch["aux"]` (simulator labels) adds the auxiliary referent loss when the config
    enables it; the sampled actions never depend on it.
    """
    self.check_batch(batch)
    head_rng, dropout_rng = jax.random.split(rng)
    return self.model.apply(
        {"params": params}, batch["observation"], batch["task"], batch["action"],
        batch["action_pad_mask"], head_rng, train, batch.get("aux"), batch.get("action_dim_mask"),
        rngs={"dropout": dropout_rng})

  def noise_shapes(self, batch_size: int) -> dict[str, tuple]:
    """Shapes of the noise arrays `sample_actions_from_noise` takes (may be empty)."""
    return heads.noise_shapes(self.config, batch_size)

  def make_noise(self, rng: Array, batch_size: int) -> dict[str, Array]:
    """Standard-normal noise for `sample_actions_from_noise` (not for inside exported graphs)."""
    shapes = self.noise_shapes(batch_size)
    keys = jax.random.split(rng, max(len(shapes), 1))
    return {name: jax.random.normal(k, shape) for k, (name, shape) in zip(keys, sorted(shapes.items()))}

  def sample_actions(self, params: Params, observation: dict, task: dict, rng: Array) -> Array:
    """Sample an action chunk float32 [B, H, A] in normalised units; deterministic given rng."""
    b = self.check_inputs(observation, task)
    return self.sample_actions_from_noise(params, observation, task, self.make_noise(rng, b))

  def sample_actions_from_noise(self, params: Params, observation: dict, task: dict,
                                noise: dict[str, Array]) -> Array:
    """As `sample_actions`, with every random number passed in (the variant to export)."""
    self._check_noise(noise, self.check_inputs(observation, task))
    return self.model.apply({"params": params}, observation, task, noise,
                            method=VLAModel.sample)

  def _check_noise(self, noise: dict[str, Array], batch_size: int) -> None:
    expected = self.noise_shapes(batch_size)
    if sorted(noise) != sorted(expected):
      raise ValueError(f"noise has keys {sorted(noise)}, head {self.config.head.kind!r} expects {expected}")
    for name, shape in expected.items():
      _check_shape(f"noise/{name}", noise[name], shape)

  def denoising_steps(self, params: Params, observation: dict, task: dict, noise: dict[str, Array]) -> Array:
    """How sampling moves the chunk, for inspection: float32 [S + 1, B, H, A] (normalised units) —
    `noise["initial"]`, then the chunk after each of the S denoising (diffusion: DDIM) or
    integration (flow) steps; entry [-1] equals `sample_actions_from_noise` with the same noise.
    Only the iterative heads ("diffusion", "flow") have steps."""
    if self.config.head.kind not in ITERATIVE_HEADS:
      raise ValueError(f"head {self.config.head.kind!r} samples in one step; denoising_steps needs one of "
                       f"{ITERATIVE_HEADS}")
    self._check_noise(noise, self.check_inputs(observation, task))
    return self.model.apply({"params": params}, observation, task, noise, method=VLAModel.sample_steps)

  def sample_actions_guided(self, params: Params, observation: dict, task: dict, noise: dict[str, Array],
                            prefix: Array, weights: Array, mode: str = "rtc",
                            max_guidance: float | None = None) -> Array:
    """A chunk [B, H, A] (normalised units) that continues `prefix` [B, H, A] — the previous chunk
    aligned to this one's steps — under the soft mask `weights` [H] or [B, H]: real-time chunking
    ("rtc"), hard inpainting ("hard") or a prefix-conditioned head ("conditioned"); see
    `heads/realtime.py`. The backbone runs once. max_guidance: RTC's β (None: the config's)."""
    b = self.check_inputs(observation, task)
    _check_shape("noise/initial", _require(noise, "initial", "noise"), self.noise_shapes(b)["initial"])
    _check_shape("prefix", prefix, (b, self.config.action_horizon, self.config.action_dim))
    readouts = self.embed(params, observation, task)
    embodiment = task.get("embodiment")
    predict = lambda x, t, *given: self.head_predict(params, readouts, x, t, *given, embodiment=embodiment)  # noqa: E731
    return realtime.guided_sample(self.config, predict, noise["initial"], prefix, weights, mode=mode,
                                  max_guidance=max_guidance)

  # --- Pieces, for latency measurement and inspection -------------------------------------

  def embed(self, params: Params, observation: dict, task: dict) -> Array:
    """Backbone only → readout embeddings float32 [B, R, D]."""
    self.check_inputs(observation, task)
    return self.model.apply({"params": params}, observation, task, method=VLAModel.embed)

  def sample_from_readouts(self, params: Params, readouts: Array, noise: dict,
                           embodiment: Array | None = None) -> Array:
    """Head only (all sampling steps) → actions float32 [B, H, A]. embodiment: int [B], needed
    only by a model with one head per embodiment."""
    return self.model.apply({"params": params}, readouts, noise, embodiment,
                            method=VLAModel.sample_from_readouts)

  def head_predict(self, params: Params, readouts: Array, *args, embodiment: Array | None = None) -> Array:
    """One call of the head's network (one diffusion / flow step)."""
    return self.model.apply({"params": params}, readouts, *args, embodiment=embodiment,
                            method=VLAModel.head_predict)

  def token_maps(self, params: Params, observation: dict, task: dict) -> dict[str, Array]:
    """Where each learned image token looks: {camera: logits float32 [B, T, h, w, P]} over the
    stem's feature map (a softmax over h × w is the token's attention). Needs
    `image.num_learned_tokens` > 0; with the referent loss, token 0 is trained onto the
    instruction's target and token 1 onto its goal (`vla_jax.evaluation.grounding`). With
    `image.attribute_maps`, P = tokens + 2: the colour and shape maps whose sum is token 0's."""
    self.check_inputs(observation, task)
    if not self.config.image.get("num_learned_tokens", 0):
      raise ValueError("token_maps needs learned image tokens; this model's image.num_learned_tokens is 0")
    return self.model.apply({"params": params}, observation, task, method=VLAModel.token_maps)

  def backbone_outputs(self, params: Params, observation: dict, task: dict) -> dict[str, Array]:
    """All backbone outputs {task [B, Lt, D], observation [B, T, N, D], readout [B, R, D]}."""
    self.check_inputs(observation, task)
    return self.model.apply({"params": params}, observation, task,
                            method=VLAModel.backbone_outputs)


def example_batch(config: ml_collections.ConfigDict, batch_size: int = 1,
                  seed: int | None = None) -> dict:
  """A batch shaped as the config expects: zeros (seed=None) or random content (seed=int).

  For `init`, tests, benchmarks and export signatures; never for training.
  """
  rng = np.random.default_rng(seed)
  b, t, px, h, a = (batch_size, config.window_size, config.image_size_px, config.action_horizon,
                    config.action_dim)
  random = seed is not None
  obs = {f"image_{c}": (rng.integers(0, 256, (b, t, px, px, 3)) if random
                        else np.zeros((b, t, px, px, 3))).astype(np.uint8)
         for c in config.cameras}
  obs["proprio"] = (rng.normal(size=(b, t, config.proprio_dim)) if random
                    else np.zeros((b, t, config.proprio_dim))).astype(np.float32)
  obs["timestep_pad_mask"] = np.ones((b, t), bool)
  task = {}
  if config.language.mode == "tokens" and config.language.get("encoder", "learned") == "minilm":
    length, dim = config.language.max_len, config.language.feature_dim
    task["language_features"] = (rng.normal(size=(b, length, dim)) if random
                                 else np.zeros((b, length, dim))).astype(np.float32)
    mask = np.zeros((b, length), bool)
    mask[:, : max(length // 3, 2)] = True
    task["language_mask"] = mask
  elif config.language.mode == "tokens":
    length = config.language.max_len
    tokens = np.zeros((b, length), np.int32)
    if random:
      tokens[:, : length // 2] = rng.integers(1, config.language.vocab_size, (b, length // 2))
    task["language_tokens"] = tokens
  elif config.language.mode == "embedding":
    e = config.language.embedding_dim
    task["language_embedding"] = (rng.normal(size=(b, e)) if random
                                  else np.zeros((b, e))).astype(np.float32)
  if embodiment_names(config):
    task["embodiment"] = (rng.integers(0, len(embodiment_names(config)), (b,)) if random
                          else np.zeros((b,))).astype(np.int32)
  action = (rng.uniform(-1, 1, (b, h, a)) if random else np.zeros((b, h, a))).astype(np.float32)
  return {"observation": obs, "task": task, "action": action,
          "action_pad_mask": np.ones((b, h), bool)}


def count_params(params: Params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
