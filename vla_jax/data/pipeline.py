"""RLDS input pipeline: dataset specs + config -> an iterator of model-ready numpy batches.

Flow (one tf.data graph per dataset, merged into one stream):

  RLDS episodes (TFDS dir, images left encoded)  -- this process's episodes only
    -> standardise (spec / standardize_fn) -> decode + resize each frame once, normalise action and
       proprio, tokenise language                                   [parallel map over episodes]
    -> [in-memory cache of the decoded trajectories]                 (config.cache, default on)
    -> per epoch e: shuffle episodes (seeded by seed, dataset, e) -> optional goal relabelling ->
       window + chunk (`traj_transforms`) -> unbatch into samples -> shuffle samples (seeded)
    -> epochs chained forever; datasets mixed by a seeded categorical draw per sample position
    -> batch -> augmentation (training; stateless, keyed by batch index) -> prefetch -> numpy

Output batch (numpy; B = batch_size, T = window, H = action_horizon, L = max_language_tokens):

  observation/image_<camera>      uint8   [B, T, Hpx, Wpx, 3]  one per `config.cameras`; a dataset
                                          without that camera gives black frames
  observation/proprio             float32 [B, T, D]   normalised (D = 0 if no dataset has proprio)
  observation/timestep_pad_mask   bool    [B, T]      False = before the episode start (the padded
                                          frames repeat the first frame)
  task/language_tokens            int32   [B, L]      byte ids (`language.tokenize_tf`, 0 = pad) of
                                          the current step's instruction  (config.language has "tokens")
  task/language_embedding         float32 [B, E]      the dataset's precomputed embedding of the
                                          current step        (config.language has "embedding")
  task/language_features          float32 [B, L, F]   config.language = "minilm": the frozen
  task/language_mask              bool    [B, L]      pretrained encoder's per-token states and
  task/language_embedding         float32 [B, F]      mask (L = max_language_tokens WordPieces) and
                                                      its sentence embedding, looked up per distinct
                                                      instruction (`vla_jax.language.encoder`: each
                                                      string is encoded once, then cached)
  task/image_goal                 uint8   [B, Hpx, Wpx, 3]  only with config.goal_relabeling: a
                                          future frame of `config.cameras[0]` in the same episode
  action                          float32 [B, H, A]   normalised (gripper dims kept in [0, 1])
  action_pad_mask                 bool    [B, H]      False past the episode end; those entries
                                          repeat the episode's last action, never the next episode
  action_dim_mask                 bool    [B, A]      True on the first `spec.action_dim` dims of the
                                          sample's dataset: a mixture pads every robot's actions to
                                          A = config.action_dim, and the padding is not a label
  dataset_index                   int32   [B]         index into `dataset_names(config)`, i.e. the
                                          config's dataset names in sorted order (ConfigDict sorts)
  aux/referent_xy                 float32 [B, K, 2]   only with config.num_referents = K > 0: (x, y)
                                          in [0, 1] image units (x right, y down) of the referents
                                          in the current (last) frame: 0 target object, 1 goal
  aux/referent_valid              bool    [B, K]      False for absent referents (padding, "pick"'s
                                          goal, every row of a dataset without labels); position 0
  aux/attribute_xy                float32 [B, 2, M, 2] only with also config.attribute_objects = M > 0:
  aux/attribute_valid             bool    [B, 2, M]    the objects in the current frame that share the
                                          target's colour (row 0) / shape (row 1), target included
  aux/state_target                float32 [B, N]      only with config.state_targets = N > 0: the
                                          spec's state_target_dims of its privileged state (e.g.
                                          the object's and goal's world xyz) in the current frame,
                                          mapped to [-1, 1] by the spec's state_target_bounds
  aux/state_target_valid          bool    [B]         False for datasets without a state_target_key
  `aux` holds privileged training labels for auxiliary losses, never model inputs; with
  num_referents = state_targets = 0 (default) there is no `aux` key and batches are exactly as
  without these features.

Determinism and exact, cheap resume. The whole stream is a pure function of (config, seed,
process index/count): shuffles use fixed seeds per (dataset, epoch), mixture choices and
augmentations use stateless randomness keyed by sample/batch position, and `deterministic=True`
keeps parallel maps in order. The iterator position is therefore just
`{"batches": n, "samples_per_dataset": [n_0, n_1, ...]}` (a few bytes of JSON, see
`DataIterator.state()`); restoring rebuilds the pipeline with each dataset stream starting at epoch
n_d // N_d and skipping n_d % N_d samples (N_d = samples per epoch of this shard), the mixture and
augmentation streams starting at n. Cost of a restore: one counting pass over the episode records
(images are not decoded) plus producing at most one epoch of samples to skip — bounded by the
epoch, not by the training length, and with the cache the decoded data are needed anyway. The
alternative, tf.data iterator checkpoints, would store the shuffle buffers and cache (hundreds of
MB) in every checkpoint.

Threads: everything runs on a private tf.data pool of `config.num_threads` threads (default 2)
with bounded parallelism, so the pipeline leaves the cores to the trainer once it keeps up.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from typing import Any, Iterator, Sequence

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vla_jax.data import language, obs_transforms, spec as spec_lib, standardize, statistics, traj_transforms
from vla_jax.data import synthetic_robots  # noqa: F401  (registers the "arm7" robot's standardisation)
from vla_jax.io import write_json_atomic

log = logging.getLogger(__name__)

STATE_FORMAT = "vla_jax.data_iterator/1"
LANGUAGE_MODES = ("tokens", "embedding", "both", "none", "minilm")


# ---- Config. --------------------------------------------------------------------------------------


def pipeline_config(datasets: Sequence[ml_collections.ConfigDict], **overrides: Any) -> ml_collections.ConfigDict:
  """Pipeline config over one or more dataset specs (`spec.dataset_spec`, `bridge_spec`, ...).

  Every field below can be overridden by keyword or on the command line
  (`--config.data.window=3`, `--config.data.datasets.bridge.weight=0.5`).
  """
  c = ml_collections.ConfigDict()
  c.datasets = ml_collections.ConfigDict({s.name: s for s in datasets})  # name -> spec (with weight).
  c.cameras = None                 # Output camera names; None = union of the specs' cameras.
  c.image_size_px = (64, 64)       # Output (height, width); frames are resized once when decoded.
  c.window = 2                     # Observation history T.
  c.action_horizon = 4             # Action chunk H.
  c.batch_size = 64                # Per process. Training configs leave it None: training sets it
                                   # (config.train.batch_size / processes) and refuses another value.
  c.language = "tokens"            # "tokens" | "embedding" | "both" | "none" | "minilm" (frozen
                                   # pretrained encoder features, see vla_jax/language/).
  c.max_language_tokens = 64       # L: bytes ("tokens") or WordPiece tokens ("minilm").
  c.instruction_variants = 0       # Training, language "minilm": K copies of each distinct
                                   # instruction with words deleted (`language.instruction_copies`),
                                   # encoded up front with the originals; 0 = off.
  c.instruction_word_drop = 0.2    # Per-word deletion probability within a copy.
  c.instruction_keep_words = ()    # Words a copy never loses (names of objects and places).
  c.instruction_word_insert = 0    # Words each copy also gains, drawn from `instruction_insert_words`.
  c.instruction_insert_words = ()  # Vocabulary of those words (e.g. the training templates' verbs).
  c.instruction_variant_rate = 0.5  # Chance that a training sample reads one of its instruction's
                                   # copies (uniformly) instead of the instruction itself.
  c.goal_relabeling = False        # Adds task/image_goal (uniform future frame of cameras[0]).
  c.num_referents = 0              # K > 0: adds aux/referent_xy, aux/referent_valid (simulator labels
                                   # of the current frame, for an auxiliary loss); 0 = off.
  c.attribute_objects = 0          # M > 0 (needs num_referents > 0): adds aux/attribute_xy,
                                   # aux/attribute_valid (the objects sharing the target's colour /
                                   # shape, M slots); 0 = off.
  c.state_targets = 0              # N > 0: adds aux/state_target, aux/state_target_valid (N dims of
                                   # privileged simulator state, spec.state_target_*); 0 = off.
  c.mask_after_perturbation = False  # True: chunk entries after a demonstrator's recorded mistake
                                   # (spec.perturbation_keys) get action_pad_mask False (see
                                   # traj_transforms; for long chunks). False: keys never read.
  c.normalization = "gaussian"     # "gaussian" | "bounds" (see statistics.py).
  c.action_dim = None              # Pad all datasets' actions to this many dims (None: must agree).
  c.proprio_dim = None             # Same for proprio.
  c.augmentation = obs_transforms.augmentation_config(enabled=True)  # Training only.
  c.cache = True                   # Keep decoded trajectories of this shard in memory.
  c.episode_shuffle_buffer = 1024  # Episodes (cheap with the cache: references, not copies).
  c.sample_shuffle_buffer = 2048   # Samples (each holds T frames per camera).
  c.num_parallel_calls = 2         # Parallel episode decoding.
  c.num_threads = 2                # Private tf.data thread pool.
  c.prefetch_batches = 2
  c.seed = 0
  c.statistics_dir = None          # Where to cache statistics; None = beside each dataset
                                   # (falls back to ~/.cache/vla_jax/statistics if read-only).
  c.val_drop_remainder = True      # Validation: drop the last partial batch (fixed shapes for jit).
  for key, value in overrides.items():
    setattr(c, key, value)
  return c


def dataset_names(config: ml_collections.ConfigDict) -> list[str]:
  """Dataset names in `dataset_index` order (ConfigDict iterates its keys sorted)."""
  return list(config.datasets.keys())


# Knobs that change speed, memory or where files go, but not a single value of the sample stream
# (tested: cache on/off and thread counts give identical batches).
_STREAM_NEUTRAL_KEYS = ("num_threads", "num_parallel_calls", "prefetch_batches", "statistics_dir", "cache",
                        "val_drop_remainder")


def _config_fingerprint(config: ml_collections.ConfigDict) -> str:
  """Hash of everything that changes the sample stream (for refusing a mismatched restore).

  With referents off, `num_referents` and the specs' `referents_key` change nothing, and are left
  out so iterator states saved before they existed still restore; the same for the perturbation
  mask and the specs' `perturbation_keys`.
  """
  fields = {k: v for k, v in config.to_dict().items() if k not in _STREAM_NEUTRAL_KEYS}
  unused = set()
  if not fields.get("num_referents"):
    fields.pop("num_referents", None)
    unused.add("referents_key")
  if not fields.get("attribute_objects"):
    fields.pop("attribute_objects", None)
  if not fields.get("state_targets"):
    fields.pop("state_targets", None)
    unused.update(("state_target_key", "state_target_dims", "state_target_bounds"))
  if not fields.get("mask_after_perturbation"):
    fields.pop("mask_after_perturbation", None)
    unused.add("perturbation_keys")
  if not fields.get("instruction_variants"):
    for key in ("instruction_variants", "instruction_word_drop", "instruction_variant_rate",
                "instruction_keep_words"):
      fields.pop(key, None)
  if not fields.get("instruction_variants") or not fields.get("instruction_word_insert"):
    fields.pop("instruction_word_insert", None)
    fields.pop("instruction_insert_words", None)
  fields["datasets"] = {name: {k: v for k, v in s.items() if k not in unused}
                        for name, s in fields["datasets"].items()}
  blob = json.dumps(fields, sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _resolved_cameras(config: ml_collections.ConfigDict) -> list[str]:
  if config.cameras:
    return list(config.cameras)
  names: list[str] = []
  for s in config.datasets.values():
    names += [c for c in s.cameras if c not in names]
  return names


def _resolved_dim(config: ml_collections.ConfigDict, field: str) -> int:
  dims = {name: int(s[field]) for name, s in config.datasets.items()}
  wanted = config.get(field)
  if wanted is None:
    if len(set(dims.values())) > 1:
      raise ValueError(f"datasets disagree on {field}: {dims}; set config.{field} to pad them to one size")
    return next(iter(dims.values()))
  too_big = {n: d for n, d in dims.items() if d > wanted}
  if too_big:
    raise ValueError(f"config.{field}={wanted} is smaller than {too_big}")
  return int(wanted)


# ---- Reading one dataset. --------------------------------------------------------------------------


class DatasetSource:
  """One RLDS dataset opened through its spec: validated, with its normalisation statistics."""

  def __init__(self, spec: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
               statistics_override: dict[str, Any] | None = None):
    spec_lib.check_spec_fields(spec)
    self.spec = spec
    self.config = config
    self.builder_dir = spec_lib.resolve_builder_dir(spec)
    self.builder = tfds.builder_from_directory(self.builder_dir)
    self.standardize_fn = standardize.get_standardize_fn(spec.standardize_fn)
    self._validate()
    self.statistics = statistics_override or self._load_or_compute_statistics()

  # -- raw episodes

  def raw_episodes(self, split: str, process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
    """Standardised raw episodes of `split` (this process's share), images still encoded, fixed order."""
    if process_count > 1:
      split = tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]
    read_config = tfds.ReadConfig(interleave_cycle_length=1, add_tfds_id=False, try_autocache=False)
    ds = self.builder.as_dataset(split=split, decoders={"steps": tfds.decode.SkipDecoding()},
                                 shuffle_files=False, read_config=read_config)
    if self.standardize_fn is not None:
      ds = ds.map(self.standardize_fn, num_parallel_calls=None)
    return ds

  def _check_split(self, split: str | None, role: str) -> str:
    if not split:
      raise ValueError(f"dataset '{self.spec.name}': spec has no {role} split")
    base = split.split("[")[0]
    splits = list(self.builder.info.splits.keys())
    if base not in splits:
      raise ValueError(f"dataset '{self.spec.name}': spec wants split {split!r} ({role}), dataset has splits "
                       f"{{{', '.join(sorted(splits))}}}; for a dataset without a validation split use e.g. "
                       "train_split='train[:95%]', val_split='train[95%:]' (a split by episode)")
    return split

  def _validate(self) -> None:
    spec = self.spec
    split = self._check_split(spec.train_split, "train")
    raw = self.builder.as_dataset(split=split, decoders={"steps": tfds.decode.SkipDecoding()})
    element_spec = raw.element_spec
    if self.standardize_fn is not None:
      try:
        element_spec = raw.map(self.standardize_fn).element_spec
      except (KeyError, ValueError, TypeError) as e:
        flat = sorted(spec_lib._flatten_spec(raw.element_spec))
        raise ValueError(f"dataset '{spec.name}': standardize_fn {spec.standardize_fn!r} failed on this "
                         f"dataset ({type(e).__name__}: {e}); dataset has keys {flat}") from e
    stored = {}
    try:
      obs_features = self.builder.info.features["steps"]["observation"]
      for key in spec.cameras.values():
        if key in obs_features.keys() and hasattr(obs_features[key], "shape"):
          stored[key] = tuple(obs_features[key].shape)
    except (KeyError, TypeError):  # Not the usual RLDS nesting; validate_spec reports what is missing.
      pass
    spec_lib.validate_spec(spec, element_spec, stored, num_referents=_num_referents(self.config),
                           perturbations=bool(self.config.get("mask_after_perturbation", False)),
                           attribute_objects=_attribute_objects(self.config),
                           state_targets=_state_targets(self.config))
    self._stored_image_shapes = stored
    if self.config.language in ("embedding", "both") and not spec.language_embedding_key:
      raise ValueError(f"dataset '{spec.name}': config.language={self.config.language!r} needs a precomputed "
                       "embedding but the spec has no language_embedding_key")

  # -- statistics

  def _cache_path(self, kind: str, spec_keys: Sequence[str], **extra: Any) -> tuple[str, str]:
    """(path, hash) of a file derived from this dataset: beside it (or in config.statistics_dir,
    or ~/.cache/vla_jax/statistics when the dataset is read-only), named by a hash of the dataset's
    files and the spec fields it depends on."""
    fingerprint = {
        "dataset": statistics.dataset_fingerprint(self.builder_dir),
        "spec": {k: self.spec.get(k) for k in spec_keys}, **extra,
    }
    digest = statistics.statistics_hash(fingerprint)
    directory = self.config.statistics_dir
    if directory is None:
      directory = self.builder_dir if os.access(self.builder_dir, os.W_OK) else os.path.expanduser(
          "~/.cache/vla_jax/statistics")
    return os.path.join(directory, f"vla_jax_{kind}_{self.spec.name}_{digest}.json"), digest

  def statistics_path(self) -> str:
    path, self.statistics_hash = self._cache_path(
        "statistics", ("action_key", "action_dim", "action_dim_kinds", "proprio_key", "proprio_dim",
                       "standardize_fn", "train_split"))
    return path

  def instructions(self, split: str) -> list[str]:
    """The distinct language instructions of `split`, sorted.

    One pass over the episode records that decodes no image (~1.5 s for the quickstart's 10 000
    episodes), then cached beside the dataset like the statistics. The input pipeline hands them to
    the frozen instruction encoder before the first batch (`InstructionEncoder.warm`).
    """
    path, digest = self._cache_path("instructions", ("language_key", "standardize_fn"), split=split)
    if os.path.exists(path):
      try:
        with open(path) as f:
          cached = json.load(f)
        if cached.get("hash") == digest and isinstance(cached.get("instructions"), list):
          return cached["instructions"]
      except (OSError, ValueError) as e:  # A cache: recompute it rather than stop.
        log.warning("unreadable instruction list %s (%s); recomputing it", path, e)
    spec = self.spec
    episodes = self.raw_episodes(split).map(
        lambda ep: tf.unique(standardize.to_internal(ep, spec)["task"]["language_instruction"])[0])
    found: set[bytes] = set()
    for texts in episodes.as_numpy_iterator():
      found.update(texts.tolist())
    result = sorted(t.decode("utf-8") for t in found)
    try:
      write_json_atomic(path, {"dataset": spec.name, "split": split, "hash": digest, "instructions": result})
    except OSError as e:  # A read-only location must not stop training.
      log.warning("could not cache the instruction list at %s: %s", path, e)
    return result

  def _load_or_compute_statistics(self) -> dict[str, Any]:
    path = self.statistics_path()
    if os.path.exists(path):
      try:
        stats = statistics.load_statistics(path)
      except ValueError as e:  # A cache: recompute it rather than stop.
        log.warning("%s; recomputing it", e)
        stats = {}
      if stats.get("hash") == self.statistics_hash:
        return stats
    log.info("dataset '%s': computing normalisation statistics (one pass over %s)", self.spec.name,
             self.spec.train_split)
    ds = self.raw_episodes(self.spec.train_split).map(self._action_proprio)
    stats = statistics.compute_statistics(
        ds.as_numpy_iterator(), action_mask=spec_lib.action_normalize_mask(self.spec),
        action_kinds=list(self.spec.action_dim_kinds), dataset=self.spec.name, dataset_hash=self.statistics_hash)
    try:
      statistics.save_statistics(path, stats)
    except OSError as e:  # A read-only location must not stop training.
      log.warning("could not cache statistics at %s: %s", path, e)
    return stats

  def _action_proprio(self, episode: dict[str, Any]) -> dict[str, tf.Tensor]:
    traj = standardize.to_internal(episode, self.spec)
    return {"action": traj["action"], "proprio": traj["observation"]["proprio"]}

  # -- prepared trajectories

  def prepare(self, episode: dict[str, Any], dataset_index: int) -> dict[str, Any]:
    """Standardised raw episode -> decoded, normalised, tokenised trajectory (leaves [T, ...])."""
    config, spec = self.config, self.spec
    num_referents = _num_referents(config)
    traj = standardize.to_internal(episode, spec, num_referents, _attribute_objects(config),
                                   _state_targets(config))
    length = tf.shape(traj["action"])[0]
    size = tuple(config.image_size_px)
    obs = {}
    for cam in _resolved_cameras(config):
      if cam in spec.cameras:
        stored = self._stored_image_shapes.get(spec.cameras[cam])
        stored_hw = tuple(stored[:2]) if stored and None not in stored[:2] else (
            tuple(spec.image_size_px) if spec.image_size_px else None)
        obs[f"image_{cam}"] = obs_transforms.decode_frames(traj["observation"][f"image_{cam}"], size, stored_hw)
      else:
        obs[f"image_{cam}"] = tf.zeros([length, size[0], size[1], 3], tf.uint8)
    method = config.normalization
    proprio = statistics.normalize_tf(traj["observation"]["proprio"], self.statistics["proprio"], method)
    obs["proprio"] = _pad_last(proprio, _resolved_dim(config, "proprio_dim"))
    action = statistics.normalize_tf(traj["action"], self.statistics["action"], method)
    task = {}
    if config.language in ("tokens", "both"):
      task["language_tokens"] = language.tokenize_tf(traj["task"]["language_instruction"], config.max_language_tokens)
    if config.language in ("embedding", "both"):
      task["language_embedding"] = traj["task"]["language_embedding"]
    if config.language == "minilm":
      # The string travels through tf.data; `DataIterator` swaps it for cached encoder features
      # after batching (per-step features in the episode cache would cost ~50 KB a step).
      task["language_instruction"] = traj["task"]["language_instruction"]
    out = {
        "observation": obs,
        "task": task,
        "action": _pad_last(action, _resolved_dim(config, "action_dim")),
        "dataset_index": tf.fill([length], tf.constant(dataset_index, tf.int32)),
    }
    if "aux" in traj:
      out["aux"] = traj["aux"]
    if config.get("mask_after_perturbation", False):
      # Every dataset of a mixture gets the leaf (one element structure); none recorded: all False.
      keys = tuple(spec.get("perturbation_keys", ()))
      steps = tf.stack([tf.cast(episode["episode_metadata"][k], tf.int32) for k in keys] or [tf.constant(-1)])
      out["perturbed"] = tf.reduce_any(tf.range(length)[:, None] == steps[None, :], axis=1)
    return out

  def count_samples(self, split: str, process_index: int, process_count: int) -> int:
    """Samples (= steps) per epoch of this shard; reads the records but decodes no image."""
    ds = self.raw_episodes(split, process_index, process_count)
    lengths = ds.map(lambda ep: tf.cast(tf.shape(standardize.to_internal(ep, self.spec)["action"])[0], tf.int64))
    return int(lengths.reduce(tf.constant(0, tf.int64), lambda a, b: a + b).numpy())


def _num_referents(config: ml_collections.ConfigDict) -> int:
  """config.num_referents, validated (absent in configs saved before it existed: 0)."""
  k = config.get("num_referents", 0)
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
    raise ValueError(f"config.num_referents={k!r} is not valid; expected an int >= 0 (0 = no referent labels)")
  return int(k)


def _state_targets(config: ml_collections.ConfigDict) -> int:
  """config.state_targets, validated (absent in configs saved before it existed: 0)."""
  n = config.get("state_targets", 0)
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
    raise ValueError(f"config.state_targets={n!r} is not valid; expected an int >= 0 (0 = no state labels)")
  return int(n)


def _attribute_objects(config: ml_collections.ConfigDict) -> int:
  """config.attribute_objects, validated (absent in configs saved before it existed: 0)."""
  m = config.get("attribute_objects", 0)
  if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0:
    raise ValueError(f"config.attribute_objects={m!r} is not valid; expected an int >= 0 (0 = no attribute labels)")
  if m > 0 and _num_referents(config) == 0:
    raise ValueError(f"config.attribute_objects={m} needs referent labels: set config.num_referents > 0")
  return int(m)


def _check_augmentation_keeps_referents(config: ml_collections.ConfigDict) -> None:
  """Random crops move the pixels but not the referent labels: refuse the combination.

  Colour jitter alone (crop_scale = crop_ratio = (1, 1): the crop box is the whole image) is fine.
  """
  aug = config.augmentation
  crops = tuple(aug.crop_scale) != (1.0, 1.0) or tuple(aug.crop_ratio) != (1.0, 1.0)
  if _num_referents(config) > 0 and aug.enabled and crops:
    raise ValueError(
        f"config.num_referents={config.num_referents} with random-crop augmentation (crop_scale="
        f"{tuple(aug.crop_scale)}, crop_ratio={tuple(aug.crop_ratio)}): crops move the image but not the "
        "referent labels. Set config.augmentation.enabled=False, or crop_scale=(1.0, 1.0) and "
        "crop_ratio=(1.0, 1.0) for colour-only augmentation, or num_referents=0")


def _pad_last(x: tf.Tensor, size: int) -> tf.Tensor:
  missing = size - x.shape[-1]
  return x if missing == 0 else tf.pad(x, [[0, 0], [0, missing]])


def _seed(*parts: Any) -> tf.Tensor:
  """Deterministic int64 seed in [0, 2^31 - 1) from ints / int tensors (no int64 overflow)."""
  s = tf.constant(0x2545F491, tf.int64)
  for p in parts:
    s = (s * 1_000_003 + tf.cast(p, tf.int64) % (2**31 - 1)) % (2**31 - 1)
  return s


def _stateless_seed(*parts: Any) -> tf.Tensor:
  """int32 [2] stateless seed from ints / int tensors."""
  return tf.cast(tf.stack([_seed(*parts), _seed(*parts, 0x5BD1E995)]), tf.int32)


# ---- Sample streams. ---------------------------------------------------------------------------------


def _options(config: ml_collections.ConfigDict) -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = int(config.num_threads)
  options.threading.max_intra_op_parallelism = 1
  options.autotune.cpu_budget = int(config.num_threads)
  return options


def _samples_from_trajectories(trajs: tf.data.Dataset, config: ml_collections.ConfigDict,
                               goal_seed: tf.Tensor | None) -> tf.data.Dataset:
  """Prepared trajectories -> per-step samples (window, chunk, optional goal)."""
  cameras = _resolved_cameras(config)

  def transform(index, traj):
    if config.goal_relabeling:
      seed = _stateless_seed(goal_seed if goal_seed is not None else 0, index)
      traj = traj_transforms.relabel_goal_uniform(traj, cameras[0], seed)
    return traj_transforms.window_and_chunk(traj, config.window, config.action_horizon)

  windows = trajs.enumerate().map(transform, num_parallel_calls=config.num_parallel_calls)
  if _resolved_dim(config, "proprio_dim") == 0:
    # TF 2.21's unbatch segfaults on a zero-size [T, W, 0] proprio tensor (datasets without
    # proprio); slicing yields the same samples in the same order.
    return windows.flat_map(tf.data.Dataset.from_tensor_slices)
  return windows.unbatch()


def sample_stream(source: DatasetSource, dataset_index: int, *, start_sample: int = 0,
                  process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Infinite training samples of one dataset, starting `start_sample` samples into the stream.

  Epoch e is a seeded permutation of this shard's episodes followed by a seeded sample shuffle;
  every epoch has exactly N samples (one per step), so position n is (epoch n // N, offset n % N).
  """
  config = source.config
  raw = source.raw_episodes(source.spec.train_split, process_index, process_count)
  prepare = lambda ep: source.prepare(ep, dataset_index)
  if config.cache:
    prepared = raw.map(prepare, num_parallel_calls=config.num_parallel_calls).cache()
  seed = int(config.seed)

  def epoch(e):
    if config.cache:
      trajs = prepared.shuffle(config.episode_shuffle_buffer, seed=_seed(seed, dataset_index, e, 1))
    else:
      trajs = raw.shuffle(config.episode_shuffle_buffer, seed=_seed(seed, dataset_index, e, 1))
      trajs = trajs.map(prepare, num_parallel_calls=config.num_parallel_calls)
    samples = _samples_from_trajectories(trajs, config, _seed(seed, dataset_index, e, 2))
    return samples.shuffle(config.sample_shuffle_buffer, seed=_seed(seed, dataset_index, e, 3))

  first_epoch, offset = 0, 0
  if start_sample > 0:
    per_epoch = source.count_samples(source.spec.train_split, process_index, process_count)
    if per_epoch == 0:
      raise ValueError(f"dataset '{source.spec.name}': this process's shard has no steps")
    first_epoch, offset = divmod(start_sample, per_epoch)
  stream = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch)
  return stream.skip(offset) if offset else stream


def _mixture_choices(weights: Sequence[float], seed: int, start: int) -> tf.data.Dataset:
  """int64 dataset index per sample position n >= start, a stateless categorical draw keyed by n."""
  logits = tf.math.log(tf.constant([weights], tf.float32))

  def choose(n):
    return tf.random.stateless_categorical(logits, 1, _stateless_seed(seed, 7, n), dtype=tf.int64)[0, 0]

  return tf.data.Dataset.range(start, 2**62).map(choose)


# ---- Public entry points. -------------------------------------------------------------------------


class DataReadError(RuntimeError):
  """Reading the datasets' files failed mid-stream: a corrupt TFRecord, or a record whose content
  (an image, a tensor) does not decode. The message names the datasets and, when it can, the file."""


MAX_SCAN_BYTES = 8 << 30  # Checksum-scan datasets up to this size to name a corrupt file (one read).


def _corrupt_files(builder_dirs: Sequence[str]) -> tuple[list[str], bool]:
  """(TFRecord files whose records fail to read — checksums, truncation —, whether all were scanned)."""
  paths = sorted(p for d in builder_dirs for p in tf.io.gfile.glob(os.path.join(d, "*.tfrecord*")))
  if sum(tf.io.gfile.stat(p).length for p in paths) > MAX_SCAN_BYTES:
    return [], False
  bad = []
  for path in paths:
    try:
      for _ in tf.data.TFRecordDataset(path):
        pass
    except tf.errors.OpError as e:
      bad.append(f"{path} ({type(e).__name__}: {str(e.message).splitlines()[0][:120]})")
  return bad, True


def describe_read_error(error: Exception, builder_dirs: dict[str, str], where: str) -> str:
  """One message for a failed read: what failed, which file (after a checksum scan), what to do."""
  first = str(getattr(error, "message", error)).strip().splitlines()[0][:200] if str(error).strip() else ""
  text = f"reading training data failed {where} (datasets {sorted(builder_dirs)}): {type(error).__name__}: {first}"
  bad, scanned = _corrupt_files(list(builder_dirs.values()))
  if bad:
    text += f"; corrupt file(s): {', '.join(bad)} — regenerate the dataset or remove the file"
  elif scanned:
    text += ("; every TFRecord file passes its checksums, so a record's content is bad (e.g. an image that "
             f"does not decode) in {', '.join(builder_dirs.values())}")
  else:
    text += f"; the datasets are too large to scan here: check the files under {', '.join(builder_dirs.values())}"
  return text


class DataIterator:
  """Iterator over numpy batches with a small JSON-able position for exact resume.

  `state()` -> {"format", "config_hash", "batches", "samples_per_dataset"}; pass it back as
  `make_train_iterator(config, state=...)` to continue with exactly the batch that would have come
  next. `statistics` maps dataset name -> statistics dict (save it with checkpoints).
  """

  def __init__(self, dataset: tf.data.Dataset, *, config: ml_collections.ConfigDict,
               statistics_by_name: dict[str, dict[str, Any]], batches: int = 0,
               samples_per_dataset: Sequence[int] | None = None, builder_dirs: dict[str, str] | None = None,
               instructions: Sequence[str] = (), instruction_variants: dict[str, list[str]] | None = None,
               augment_seed: Sequence[int] = ()):
    self.dataset = dataset
    self.builder_dirs = dict(builder_dirs or {})  # name -> directory, to name a corrupt file.
    self.config = config
    self.statistics = statistics_by_name
    self.dataset_names = dataset_names(config)
    self._iterator = dataset.as_numpy_iterator()
    self.encoder = None
    if config.language == "minilm":
      from vla_jax.language.encoder import get_encoder  # Local: TF-only tools need not load JAX.

      self.encoder = get_encoder("minilm", int(config.max_language_tokens))
      # Every distinct instruction (and its word-deletion copies) encoded now, none mid-training.
      self.encoder.warm(list(instructions) + [v for vs in (instruction_variants or {}).values() for v in vs])
    self._variants = dict(instruction_variants or {})
    self._augment_seed = [int(s) for s in augment_seed]
    # Row d: True on the action dims dataset d really has (the rest is zero padding).
    width = _resolved_dim(config, "action_dim")
    self._action_dims = np.asarray([np.arange(width) < int(config.datasets[n].action_dim)
                                    for n in self.dataset_names], bool)
    self._batches = batches
    self._per_dataset = np.asarray(samples_per_dataset if samples_per_dataset is not None
                                   else [0] * len(config.datasets), np.int64)

  def __iter__(self) -> Iterator[dict[str, Any]]:
    return self

  def __next__(self) -> dict[str, Any]:
    try:
      batch = next(self._iterator)
    except tf.errors.OpError as e:  # DataLossError (checksum), InvalidArgumentError (decode), ...
      raise DataReadError(describe_read_error(e, self.builder_dirs, f"at batch {self._batches + 1}")) from None
    if self.encoder is not None:
      texts = [t.decode("utf-8") for t in batch["task"].pop("language_instruction")]
      batch["task"].update(self.encoder.encode(self._augment_instructions(texts)))
    batch["action_dim_mask"] = self._action_dims[batch["dataset_index"]]
    self._batches += 1
    self._per_dataset += np.bincount(batch["dataset_index"], minlength=len(self._per_dataset))
    return batch

  def _augment_instructions(self, texts: list[str]) -> list[str]:
    """Swaps some instructions for a word-deletion copy (`config.instruction_variants`).

    Drawn from (seed, process, batch index), so a resumed iterator repeats them exactly.
    """
    if not self._variants:
      return texts
    rng = np.random.default_rng([*self._augment_seed, self._batches])
    use = rng.random(len(texts)) < float(self.config.instruction_variant_rate)
    pick = rng.random(len(texts))
    out = list(texts)
    for i in np.flatnonzero(use):
      options = self._variants.get(texts[i])
      if options:
        out[i] = options[int(pick[i] * len(options))]
    return out

  def state(self) -> dict[str, Any]:
    return {"format": STATE_FORMAT, "config_hash": _config_fingerprint(self.config),
            "batches": int(self._batches), "samples_per_dataset": [int(n) for n in self._per_dataset]}

  @property
  def element_spec(self) -> Any:
    """The numpy batches' structure as `tf.TensorSpec`s (with encoder features, not strings)."""
    spec = {**self.dataset.element_spec,
            "action_dim_mask": tf.TensorSpec([None, self._action_dims.shape[1]], tf.bool)}
    if self.encoder is None:
      return spec
    task = dict(spec["task"])
    task.pop("language_instruction")
    length, dim = self.encoder.max_tokens, self.encoder.feature_dim
    task["language_features"] = tf.TensorSpec([None, length, dim], tf.float32)
    task["language_mask"] = tf.TensorSpec([None, length], tf.bool)
    task["language_embedding"] = tf.TensorSpec([None, dim], tf.float32)
    return {**spec, "task": task}


def open_sources(config: ml_collections.ConfigDict,
                 statistics_by_name: dict[str, dict[str, Any]] | None = None) -> list[DatasetSource]:
  """Opens, validates and gets statistics for every dataset in the config (fails fast)."""
  if config.language not in LANGUAGE_MODES:
    raise ValueError(f"config.language {config.language!r} not in {LANGUAGE_MODES}")
  if config.normalization not in statistics.NORMALIZATION_METHODS:
    raise ValueError(f"config.normalization {config.normalization!r} not in {statistics.NORMALIZATION_METHODS}")
  if not config.datasets:
    raise ValueError("config.datasets is empty")
  _resolved_dim(config, "action_dim")
  _resolved_dim(config, "proprio_dim")
  _attribute_objects(config)  # Validates num_referents too.
  _state_targets(config)
  statistics_by_name = statistics_by_name or {}
  return [DatasetSource(spec, config, statistics_by_name.get(name)) for name, spec in config.datasets.items()]


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # Local: keeps the module importable by TF-only tools.
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  return int(process_index), int(process_count)


def _batch_size(config: ml_collections.ConfigDict) -> int:
  if config.get("batch_size") is None:
    raise ValueError("config.batch_size of the data pipeline is None: set it when reading the pipeline alone "
                     "(training fills it from config.train.batch_size via train.data_config_for_process)")
  return int(config.batch_size)


def training_instructions(config: ml_collections.ConfigDict, sources: Sequence[DatasetSource] | None = None
                          ) -> tuple[list[str], dict[str, list[str]]]:
  """(the distinct instructions of the training splits, instruction -> its training copies): what
  the training iterator encodes up front with the frozen encoder (both empty without it)."""
  instructions = _instructions(config, open_sources(config) if sources is None else sources, "train_split")
  return instructions, _instruction_variants(config, instructions)


def _instructions(config: ml_collections.ConfigDict, sources: Sequence[DatasetSource], split_key: str) -> list[str]:
  """The distinct instructions of every source's split (`spec.<split_key>`) when the config reads
  them through the frozen encoder; none otherwise."""
  if config.language != "minilm":
    return []
  return sorted(set().union(*(src.instructions(src.spec[split_key]) for src in sources)))


def _instruction_variants(config: ml_collections.ConfigDict, instructions: Sequence[str]) -> dict[str, list[str]]:
  """Instruction -> its word-deletion copies for training (`config.instruction_variants`); {} when off."""
  count = int(config.get("instruction_variants") or 0)
  if count <= 0:
    return {}
  if config.language != "minilm":
    raise ValueError(f"config.instruction_variants={count} needs config.language='minilm' (the copies are "
                     f"encoded by the frozen encoder), got language={config.language!r}")
  rate = float(config.instruction_variant_rate)
  if not 0.0 < rate <= 1.0:
    raise ValueError(f"config.instruction_variant_rate must be in (0, 1], got {rate}")
  word_drop, seed = float(config.instruction_word_drop), int(config.seed)
  keep = frozenset(config.get("instruction_keep_words") or ())
  inserts = int(config.get("instruction_word_insert") or 0)
  vocabulary = tuple(config.get("instruction_insert_words") or ())
  if inserts and not vocabulary:
    raise ValueError(f"config.instruction_word_insert={inserts} needs config.instruction_insert_words (the words "
                     "a copy may gain), got none")
  return {text: language.instruction_copies(text, count, word_drop, seed, keep, vocabulary, inserts)
          for text in instructions}


def _make_train_iterator(config: ml_collections.ConfigDict, *, state: dict[str, Any] | None = None,
                        statistics_by_name: dict[str, dict[str, Any]] | None = None,
                        process_index: int | None = None, process_count: int | None = None) -> DataIterator:
  """Infinite, shuffled, augmented training batches of the config's dataset mixture.

  Args:
    config: `pipeline_config(...)`.
    state: a `DataIterator.state()` to resume from (exactly the next batch), or None.
    statistics_by_name: statistics to use instead of the cached/computed ones (e.g. from a
      checkpoint when fine-tuning); {dataset name: statistics dict}.
    process_index, process_count: this process's shard (default `jax.process_index/count()`).
  """
  process_index, process_count = _process(process_index, process_count)
  _check_augmentation_keeps_referents(config)
  sources = open_sources(config, statistics_by_name)
  batches, per_dataset = 0, [0] * len(sources)
  if state is not None:
    if state.get("format") != STATE_FORMAT:
      raise ValueError(f"iterator state format {state.get('format')!r} is not {STATE_FORMAT!r}")
    if state["config_hash"] != _config_fingerprint(config):
      raise ValueError("iterator state was saved with a different data config (hash "
                       f"{state['config_hash']} != {_config_fingerprint(config)}); positions would not match")
    batches, per_dataset = int(state["batches"]), list(state["samples_per_dataset"])
  streams = [sample_stream(src, i, start_sample=per_dataset[i], process_index=process_index,
                           process_count=process_count) for i, src in enumerate(sources)]
  if len(streams) == 1:
    samples = streams[0]
  else:
    weights = [float(s.spec.weight) for s in sources]
    if sum(weights) <= 0:
      raise ValueError(f"mixture weights {weights} must have a positive sum")
    choices = _mixture_choices(weights, int(config.seed), batches * _batch_size(config))
    samples = tf.data.Dataset.choose_from_datasets(streams, choices)
  ds = samples.batch(_batch_size(config), drop_remainder=True)
  if config.augmentation.enabled:
    cameras = _resolved_cameras(config)
    aug = lambda i, b: obs_transforms.augment_batch(b, i, int(config.seed), config.augmentation, cameras[0])
    ds = ds.enumerate(start=batches).map(aug, num_parallel_calls=config.num_parallel_calls)
  ds = ds.prefetch(int(config.prefetch_batches)).with_options(_options(config))
  instructions, variants = training_instructions(config, sources)
  return DataIterator(ds, config=config, statistics_by_name={s.spec.name: s.statistics for s in sources},
                      batches=batches, samples_per_dataset=per_dataset,
                      builder_dirs={s.spec.name: s.builder_dir for s in sources},
                      instructions=instructions, instruction_variants=variants,
                      # The constant keeps this stream apart from the other draws of config.seed.
                      augment_seed=(int(config.seed), 0x5EED, process_index))


def _make_val_iterator(config: ml_collections.ConfigDict, *,
                      statistics_by_name: dict[str, dict[str, Any]] | None = None,
                      process_index: int | None = None, process_count: int | None = None) -> DataIterator:
  """One ordered pass over every dataset's validation split (no shuffle, no augmentation).

  Statistics are the training ones (computed on each train split), as at deployment.
  """
  process_index, process_count = _process(process_index, process_count)
  sources = open_sources(config, statistics_by_name)
  parts = []
  for i, src in enumerate(sources):
    split = src._check_split(src.spec.val_split, "validation")
    raw = src.raw_episodes(split, process_index, process_count)
    trajs = raw.map(lambda ep, i=i, src=src: src.prepare(ep, i), num_parallel_calls=config.num_parallel_calls)
    parts.append(_samples_from_trajectories(trajs, config, None))
  samples = parts[0]
  for part in parts[1:]:
    samples = samples.concatenate(part)
  ds = samples.batch(_batch_size(config), drop_remainder=bool(config.val_drop_remainder))
  ds = ds.prefetch(int(config.prefetch_batches)).with_options(_options(config))
  return DataIterator(ds, config=config, statistics_by_name={s.spec.name: s.statistics for s in sources},
                      builder_dirs={s.spec.name: s.builder_dir for s in sources},
                      instructions=_instructions(config, sources, "val_split"))


@contextlib.contextmanager
def _reading(config: ml_collections.ConfigDict, where: str) -> Iterator[None]:
  """Turns a TensorFlow read failure (statistics pass, sample counting, ...) into a DataReadError."""
  try:
    yield
  except tf.errors.OpError as e:
    dirs = {}
    for name, spec in config.datasets.items():
      try:
        dirs[name] = spec_lib.resolve_builder_dir(spec)
      except (ValueError, FileNotFoundError):
        pass
    raise DataReadError(describe_read_error(e, dirs, where)) from None


def make_train_iterator(config: ml_collections.ConfigDict, **kwargs: Any) -> DataIterator:
  """`_make_train_iterator` (infinite, shuffled, augmented batches of the mixture; exact resume
  from a `state`), with a corrupt file met while opening reported as a `DataReadError`."""
  with _reading(config, "while opening the datasets"):
    return _make_train_iterator(config, **kwargs)


def make_val_iterator(config: ml_collections.ConfigDict, **kwargs: Any) -> DataIterator:
  """`_make_val_iterator` (one ordered pass over every validation split), with a corrupt file met
  while opening reported as a `DataReadError`."""
  with _reading(config, "while opening the datasets"):
    return _make_val_iterator(config, **kwargs)
