"""Policies the server can serve, and the per-connection session each client gets.

A `ServedPolicy` is one loaded policy — a `JaxPolicy` (checkpoint) or an `OnnxPolicy` (export
directory), both from `vla_jax.inference` — with its `PolicySpec`, a model id and the hash of its
normalisation statistics. The heavy parts (params and the jitted policy function, the ONNX Runtime
session, the instruction encoder) are shared by every connection; what belongs to one robot (the
observation window, the encoded instruction, the call counter that folds the noise key, the numpy
noise stream) comes from the policy's `new_session()`, so clients never see each other's frames
and a closed connection leaves nothing behind.

`Session` is the synchronous part of serving one connection: episode bookkeeping (first request,
`new_episode`, a changed prompt → reset) and the batch-of-one call into the policy. The server runs
it on its inference thread; tests can run it directly.

"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from vla_jax.data import statistics as stats_lib
from vla_jax.inference.artifacts import policy_control_rate
from vla_jax.inference.window import policy_observation, robot_image_keys
from vla_jax.serving import protocol

BACKENDS = ("jax", "onnxruntime")
ENCODER_CACHE_ENTRIES = 256  # Distinct prompts whose encoder features are kept (~50 KB each).


def normalization_info(method: str, action_stats: dict, proprio_stats: dict | None) -> dict[str, Any]:
  """{"method", "sha256"}: the hash of the affine maps the statistics define (offset, scale, mask,
  as float32), so a checkpoint and its export — whose manifest keeps the same statistics — hash
  alike, and a client can check it is talking to the statistics it expects."""

  def affine(entry: dict | None) -> dict[str, Any] | None:
    if entry is None:
      return None
    offset, scale, mask = stats_lib.affine_params(entry, method)
    return {"offset": np.asarray(offset, np.float32).tolist(), "scale": np.asarray(scale, np.float32).tolist(),
            "mask": np.asarray(mask, bool).tolist()}

  canonical = json.dumps({"method": method, "action": affine(action_stats), "proprio": affine(proprio_stats)},
                         sort_keys=True)
  return {"method": method, "sha256": hashlib.sha256(canonical.encode()).hexdigest()}


def _spec_from_model_config(cfg, observation_keys: dict[str, str | None], dims: dict[str, int] | None = None,
                            guidance: tuple[str, ...] = ()) -> protocol.PolicySpec:
  """observation_keys: the policy's {input → observation key} (the frames a request carries follow
  from it). dims: the embodiment's own {"proprio", "action"} sizes (`policy_fn.io_dims`) when they
  differ from the model's (a multi-embodiment model pads to the largest robot's). guidance: the
  real-time chunking modes the backend can sample."""
  dims = dims or {"proprio": int(cfg.proprio_dim), "action": int(cfg.action_dim)}
  frames = robot_image_keys(observation_keys)
  if not frames:
    raise ValueError(f"this policy reads no camera frame (cameras {list(cfg.cameras)}, observation keys "
                     f"{observation_keys}); the server's requests carry at least one")
  return protocol.PolicySpec(image_size_px=int(cfg.image_size_px), state_dim=dims["proprio"],
                             action_horizon=int(cfg.action_horizon), action_dim=dims["action"],
                             window_size=int(cfg.window_size), image_keys=tuple(frames),
                             cameras=tuple(name[len("image_"):] for name in frames.values()), guidance=tuple(guidance))


def _manifest_dims(manifest: dict[str, Any]) -> dict[str, int]:
  """The exported graph's own proprio / action sizes, read from its input/output specs."""
  inputs = {i["name"]: i["shape"] for i in manifest["inputs"]}
  cfg = manifest["model"]["config"]
  return {"proprio": int(inputs["proprio"][-1]) if "proprio" in inputs else int(cfg["proprio_dim"]),
          "action": int(manifest["outputs"][0]["shape"][-1])}


def _params_sha256(params) -> str:
  import jax

  digest = hashlib.sha256()
  for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda kv: jax.tree_util.keystr(kv[0])):
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return digest.hexdigest()


@dataclasses.dataclass
class ServedPolicy:
  """One loaded policy and what the server tells clients about it.

  policy: the template `ChunkPolicy`; the server never calls it, only asks it for a `new_session()`
    per connection (each starts from the policy's seed, so a connection's first episode reproduces
    an in-process policy built with the same seed).
  """

  policy: Any
  spec: protocol.PolicySpec
  backend: str
  model_id: str
  normalization: dict[str, Any]
  source: dict[str, Any]
  artifact_sha256: str

  def __post_init__(self):
    if self.backend not in BACKENDS:
      raise ValueError(f"backend {self.backend!r} unknown; expected one of {BACKENDS}")

  def new_session(self) -> Session:
    return Session(self.policy.new_session(), self.spec)

  def warm_up(self, guided: bool = True) -> float:
    """Runs throwaway requests — plain, then (`guided`) one per real-time chunking mode the policy lists —
    (compiles the JAX samplers, loads ONNX Runtime's kernels) so that a robot's first request is not
    the slow one (and a guided client does not measure a compile as its inference delay); returns
    the plain request's latency in ms."""
    spec = self.spec
    request = protocol.Request(images={k: np.zeros(spec.image_shape, np.uint8) for k in spec.image_keys},
                               state=np.zeros(spec.state_dim, np.float32),
                               prompt="warm up", new_episode=True)
    start = time.perf_counter()
    self.new_session().infer(request)
    latency_ms = (time.perf_counter() - start) * 1e3
    for mode in spec.guidance if guided else ():
      self.new_session().infer(dataclasses.replace(
          request, guidance=mode, prefix_actions=np.zeros((spec.action_horizon, spec.action_dim), np.float32),
          prefix_weights=np.zeros(spec.action_horizon, np.float32)))
    return latency_ms

  def metadata(self, max_message_bytes: int) -> dict[str, Any]:
    return protocol.metadata(self.spec, backend=self.backend, model_id=self.model_id,
                             normalization=self.normalization, source=self.source,
                             max_message_bytes=max_message_bytes,
                             extra={"artifact_sha256": self.artifact_sha256,
                                    # The simulator rate the policy's data was recorded at (trials run it there).
                                    "control_rate": policy_control_rate(self.policy)})


class Session:
  """One connection's episode: the policy session, the current prompt and how far the episode is.

  `infer` and `observe` both push the request's frame into the policy's window (an observe-only
  request is the frame of a control tick executed from an earlier chunk); both start an episode on
  the connection's first request, on `new_episode` and on a changed prompt.
  """

  def __init__(self, policy: Any, spec: protocol.PolicySpec):
    self.policy, self.spec = policy, spec
    self.prompt: str | None = None  # None: the next request starts an episode.
    self.episode_step = 0

  def end_episode(self) -> None:
    self.prompt = None

  def _begin(self, request: protocol.Request, policy_timing: dict[str, float]) -> bool:
    """Resets the policy if `request` starts an episode; returns whether it did."""
    new_episode = request.new_episode or self.prompt is None or request.prompt != self.prompt
    if new_episode:
      start = time.perf_counter()
      self.prompt = None  # Stays None if the reset fails, so the next request retries it.
      self.policy.reset([request.prompt], None)  # Learned policies ignore the simulator's scenes.
      self.prompt, self.episode_step = request.prompt, 0
      policy_timing["reset_ms"] = (time.perf_counter() - start) * 1e3
    return new_episode

  def infer(self, request: protocol.Request) -> tuple[np.ndarray, dict[str, Any]]:
    """One observation → (actions float32 [H, A] in env units, reply fields)."""
    policy_timing: dict[str, float] = {}
    new_episode = self._begin(request, policy_timing)
    start = time.perf_counter()
    guided = {} if request.guidance is None else {
        "guidance": request.guidance, "prefix": request.prefix_actions[None], "weights": request.prefix_weights[None]}
    try:
      actions = self.policy(policy_observation(self.policy, {**request.images, "state": request.state}), None,
                            **guided)
      actions = protocol.check_actions(np.asarray(actions)[0], self.spec)
    except Exception:
      self.prompt = None  # The window may hold this frame already: start over next time.
      raise
    policy_timing["infer_ms"] = (time.perf_counter() - start) * 1e3
    self.episode_step += 1
    return actions, {"episode_step": self.episode_step, "new_episode": new_episode, "policy_timing": policy_timing}

  def observe(self, request: protocol.Request) -> dict[str, Any]:
    """One observation into the window, no sampling → the reply fields (`observed`, episode step)."""
    observe = getattr(self.policy, "observe", None)
    if observe is None:
      raise RuntimeError(f"{type(self.policy).__name__} has no observe(): it cannot take observe-only requests")
    new_episode = self._begin(request, {})
    try:
      observe(policy_observation(self.policy, {**request.images, "state": request.state}))
    except Exception:
      self.prompt = None  # As in infer: the window's contents are unknown now.
      raise
    self.episode_step += 1
    return {"observed": True, "episode_step": self.episode_step, "new_episode": new_episode}


# ---- Loading. -----------------------------------------------------------------------------------


def from_jax_policy(policy, *, model_id: str = "in-memory", source: dict[str, Any] | None = None) -> ServedPolicy:
  """Serves a `vla_jax.inference.jax_policy.JaxPolicy` built in this process (tests, notebooks)."""
  from vla_jax.inference.policy_fn import io_dims  # Local: the ONNX backend needs no JAX.
  from vla_jax.models.heads.realtime import supported_modes

  bundle = policy.bundle
  spec = _spec_from_model_config(bundle.model_config, policy.observation_keys, io_dims(bundle),
                                 supported_modes(bundle.model_config))
  return ServedPolicy(
      policy=policy, spec=spec, backend="jax", model_id=model_id,
      normalization=normalization_info(bundle.normalization, bundle.action_stats, bundle.proprio_stats),
      source=source or bundle.source or {"kind": "in-memory"}, artifact_sha256=_params_sha256(bundle.params))


def _serving_encoder(bundle):
  """For a pretrained instruction encoder, one of the server's own whose feature cache is small:
  clients choose the prompts, and the process-wide encoder keeps up to 8192 of them (~400 MB)."""
  language = bundle.model_config.language
  if language.get("encoder", "learned") == "learned" or language.mode == "none":
    return None
  from vla_jax.language.encoder import InstructionEncoder

  return InstructionEncoder(language.encoder, int(language.max_len), max_cache_entries=ENCODER_CACHE_ENTRIES)


def from_checkpoint(checkpoint_dir: str | Path, *, dataset: str | None = None, seed: int = 0) -> ServedPolicy:
  """A checkpoint directory (`.../checkpoints/<step>`) on the JAX backend.

  The statistics are chosen by `vla_jax.inference.bundle.choose_statistics`, as the export chooses
  them, so `--checkpoint X` and `--export_dir <export of X>` report the same normalisation hash.
  """
  from vla_jax.inference.bundle import load_checkpoint
  from vla_jax.inference.jax_policy import JaxPolicy

  bundle = load_checkpoint(checkpoint_dir, dataset=dataset)
  bundle.encoder = _serving_encoder(bundle)
  path = Path(checkpoint_dir)
  return from_jax_policy(JaxPolicy(bundle, seed=seed), model_id=f"{path.parent.parent.name}/checkpoints/{path.name}",
                         source=bundle.source)


def from_random(model_config: ml_collections.ConfigDict, *, seed: int = 0) -> ServedPolicy:
  """An untrained policy with synthetic statistics on the JAX backend: the same messages and cost as
  a trained one, for connecting a robot (or a benchmark) before any training."""
  from vla_jax.inference.jax_policy import JaxPolicy
  from vla_jax.inference.testing import random_bundle

  bundle = random_bundle(model_config, seed=seed, normalization="bounds")
  bundle.encoder = _serving_encoder(bundle)
  return from_jax_policy(JaxPolicy(bundle, seed=seed), model_id=f"untrained-{model_config.get('size')}-seed{seed}",
                         source=bundle.source)


def from_export(export_dir: str | Path, *, model_file: str | None = None, threads: int = 1,
                seed: int = 0) -> ServedPolicy:
  """An export directory on the ONNX Runtime backend (numpy noise: no JAX in the inference path).

  threads: ONNX Runtime intra-op threads (0 = all cores). 1 by default: ORT's thread pool spins
  after every run and takes the CPU from the server's event loop (and a robot's own processes);
  see benchmarks/serve.py.
  """
  from vla_jax.inference.onnx_runtime import OnnxPolicy

  policy = OnnxPolicy(export_dir, model_file=model_file, threads=threads, noise="numpy", seed=seed)
  manifest = policy.manifest
  norm = manifest["normalization"]
  cfg = ml_collections.ConfigDict(manifest["model"]["config"])
  path = policy.export_dir / policy.model_file
  guidance = tuple(m for m, r in (manifest.get("guided_samplers") or {}).items() if r.get("passed"))
  return ServedPolicy(
      policy=policy, spec=_spec_from_model_config(cfg, policy.observation_keys, _manifest_dims(manifest), guidance),
      backend="onnxruntime",
      model_id=f"{policy.export_dir.resolve().name}/{policy.model_file}",
      normalization=normalization_info(norm["method"], norm["statistics"]["action"], norm["statistics"]["proprio"]),
      source=manifest["source"], artifact_sha256=hashlib.sha256(path.read_bytes()).hexdigest())
