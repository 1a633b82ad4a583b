"""Run an export with ONNX Runtime, as an edge computer would: numpy, onnxruntime, the tokenizer.

Importing this module and running `OnnxPolicy(..., noise="numpy")` loads neither JAX nor
TensorFlow (a test runs it in a fresh interpreter and checks `sys.modules`). It is what the
server's ONNX backend, `benchmarks/edge.py` and the closed-loop export check run.

`OnnxPolicy` implements the evaluation harness's `ChunkPolicy` like `JaxPolicy` and shares its
`ObservationWindow` and instruction inputs (byte ids, or the export's own encoder.onnx run once per
instruction); proprio stays in env units (the graph normalises it) and actions come back in env
units (the graph un-normalises them).

Noise: "numpy" draws standard normals with numpy; "jax" reproduces `JaxPolicy`'s noise bit for bit
(same key, `fold_in(calls)`, `Policy.make_noise`) — it imports JAX, and exists so that a
JAX-vs-ONNX closed-loop comparison is a paired one.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Sequence

import ml_collections
import numpy as np

from vla_jax.data import language
from vla_jax.inference import artifacts
from vla_jax.inference.window import ObservationWindow, observation_keys

NOISE_SOURCES = ("numpy", "jax")
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


class OnnxLoadError(RuntimeError):
  """ONNX Runtime could not load a model file (the message names the file and ORT's reason)."""


def ort_session(path: Path | str, *, threads: int = 0, optimization: str = "all",
                optimized_path: Path | str | None = None):
  """An ONNX Runtime CPU session. threads=0: ORT's default (all physical cores).

  optimization: "disable" | "basic" | "extended" | "all" (graph optimisation level; "all" adds
  layout transforms specific to this CPU, so only "extended" should be written to `optimized_path`).
  Sequential execution, one inter-op thread: a policy graph is a chain, and spare threads only
  spin and take the CPU from the robot's other processes.
  """
  import onnxruntime as ort

  levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
  if optimization not in levels:
    raise ValueError(f"optimization={optimization!r} unknown; expected one of {sorted(levels)}")
  options = ort.SessionOptions()
  options.graph_optimization_level = levels[optimization]
  options.intra_op_num_threads = int(threads)
  options.inter_op_num_threads = 1
  options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
  options.log_severity_level = 3
  if optimized_path is not None:
    options.optimized_model_filepath = str(optimized_path)
  try:
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
  except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types.
    raise OnnxLoadError(f"ONNX Runtime cannot load {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from e


def run_fn(session) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
  """inputs (a superset of the model's input names) → the model's first output."""
  names = [i.name for i in session.get_inputs()]

  def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
    missing = sorted(set(names) - set(inputs))
    if missing:
      raise ValueError(f"ONNX model needs inputs {missing}; got {sorted(inputs)}")
    return session.run(None, {n: inputs[n] for n in names})[0]

  return run


def model_path(export_dir: str | Path, model_file: str | None = None) -> Path:
  """The export's ONNX file to run (default: the ORT-optimised one if present), checked to exist.
  Read the manifest first: "not a vla_jax export" says more than "no policy.onnx"."""
  model_file = model_file or artifacts.default_model_file(export_dir)
  path = Path(export_dir) / model_file
  if not path.is_file():
    raise FileNotFoundError(f"{path} does not exist; the export has "
                            f"{sorted(p.name for p in Path(export_dir).glob('*.onnx'))}")
  return path


class OnnxPolicy:
  """A `ChunkPolicy` over an ONNX Runtime session of an export directory.

  Args:
    export_dir: a directory written by `vla_jax.export.export_policy` (manifest.json + policy*.onnx).
    model_file: which ONNX file to run (policy.onnx, policy.opt.onnx, policy.fp16.onnx, ...);
      default policy.opt.onnx when the export has it, else policy.onnx.
    threads: ONNX Runtime intra-op threads (0 = all cores).
    optimization: ONNX Runtime graph optimisation level ("all" | "extended" | "basic" | "disable").
    noise: "numpy" (no JAX) or "jax" (identical to JaxPolicy's for the same seed).
  """

  def __init__(self, export_dir: str | Path, *, model_file: str | None = None, threads: int = 0,
               optimization: str = "all", noise: str = "numpy", seed: int = 0):
    if noise not in NOISE_SOURCES:
      raise ValueError(f"noise={noise!r} unknown; expected one of {NOISE_SOURCES}")
    manifest = artifacts.read_manifest(export_dir)
    path = model_path(export_dir, model_file)
    cfg = ml_collections.ConfigDict(manifest["model"]["config"])
    self.export_dir, self.model_file, self.manifest = Path(export_dir), path.name, manifest
    self.language_config = cfg.language
    self.window_size = int(cfg.window_size)
    # Instructions are plain strings: byte ids for learned-language exports, or the export's own
    # encoder.onnx (once per instruction) for exports with a frozen pretrained encoder.
    self.encoder = None
    if manifest.get("language_encoder"):
      from vla_jax.language.onnx_encoder import OnnxInstructionEncoder

      self.encoder = OnnxInstructionEncoder(export_dir, threads=threads)
    language.instruction_inputs(cfg.language, ["check"], encoder=self.encoder)  # Fails now, not mid-episode.
    self.action_horizon = int(cfg.action_horizon)
    self.observation_keys = observation_keys(cfg, manifest.get("run_config"), manifest["source"].get("dataset"))
    self.session = ort_session(path, threads=threads, optimization=optimization)
    self.run = run_fn(self.session)
    self._session_options = {"threads": threads, "optimization": optimization}
    self._guided_runs: dict[str, Callable] = {}  # guidance → run fn of policy.<guidance>.onnx, shared by sessions.
    self.noise_source, self.seed = noise, int(seed)
    self.noise_specs = {s["name"]: s for s in manifest["inputs"] if s["name"].startswith("noise_")}
    if noise == "jax":
      from vla_jax.models.policy import Policy  # Only for paired JAX-vs-ONNX comparisons (imports JAX).

      self._policy = Policy(cfg)
    self._fresh_state()

  def _fresh_state(self) -> None:
    self.window = ObservationWindow(self.window_size, self.observation_keys)
    self.calls = 0
    self._task: dict[str, np.ndarray] | None = None
    if self.noise_source == "jax":
      import jax

      self.rng = jax.random.PRNGKey(self.seed)
    else:
      self._np_rng = np.random.default_rng(self.seed)

  def new_session(self) -> "OnnxPolicy":
    """A policy sharing this one's ORT session and encoder, with its own episode state (window,
    instruction, call counter, noise stream from `seed`): one per robot / server connection."""
    session = copy.copy(self)
    session._fresh_state()
    return session

  def noise(self, batch_size: int) -> dict[str, np.ndarray]:
    """Noise inputs {noise_<name>: float32 [...]} for this call."""
    if self.noise_source == "jax":
      import jax

      made = self._policy.make_noise(jax.random.fold_in(self.rng, self.calls), batch_size)
      return {f"noise_{k}": np.asarray(v, np.float32) for k, v in made.items()}
    return {name: self._np_rng.standard_normal([batch_size if d == "batch" else d for d in spec["shape"]],
                                               dtype=np.float32)
            for name, spec in self.noise_specs.items()}

  def reset(self, instructions: Sequence[str], scenes=None) -> None:
    self._task = language.instruction_inputs(self.language_config, instructions, encoder=self.encoder)
    self.window.reset()
    self.calls = 0

  def observe(self, obs: dict[str, Any]) -> None:
    """Adds a frame to the windows without sampling (for steps executed from an earlier chunk)."""
    self.window.push(obs)

  def _guided_run(self, guidance: str) -> Callable:
    if guidance not in self._guided_runs:
      file = artifacts.GUIDED_FILES.get(guidance)
      if file is None or not (self.export_dir / file).is_file():
        raise FileNotFoundError(f"{self.export_dir} has no {guidance!r} real-time chunking sampler ({file}); export "
                                f"with --export.guided_samplers=\"('{guidance}',)\"")
      self._guided_runs[guidance] = run_fn(ort_session(self.export_dir / file, **self._session_options))
    return self._guided_runs[guidance]

  def __call__(self, obs: dict[str, Any], scenes=None, *,
               guidance: str | None = None, prefix: np.ndarray | None = None,
               weights: np.ndarray | None = None) -> np.ndarray:
    """obs: each camera's image uint8 [N, S, S, 3] and the state float32 [N, D] under `observation_keys`
    (the simulators: image, state) → actions float32 [N, H, A] (env units).

    guidance "rtc" | "hard" | "conditioned": the export's real-time chunking graph (policy.<guidance>.onnx), as
    `JaxPolicy.__call__` — prefix float32 [N, H, A] env units, weights float32 [N, H].
    """
    if self._task is None:
      raise RuntimeError("OnnxPolicy: reset(instructions) before the first call")
    self.window.push(obs)
    observation = self.window.inputs()
    n = len(observation["timestep_pad_mask"])
    inputs = {**observation, **self._task, **self.noise(n)}
    self.calls += 1
    if guidance is None:
      return np.asarray(self.run(inputs), np.float32)
    if prefix is None or weights is None:
      raise ValueError(f"OnnxPolicy: guidance={guidance!r} needs prefix [N, H, A] and weights [N, H]")
    inputs.update(prefix_actions=np.asarray(prefix, np.float32), prefix_weights=np.asarray(weights, np.float32))
    return np.asarray(self._guided_run(guidance)(inputs), np.float32)
