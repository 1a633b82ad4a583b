"""Dataset specs: how one RLDS dataset's keys map onto the pipeline's internal layout.

Why a spec: Open X-Embodiment datasets all follow the RLDS schema (`steps/observation/...`,
`steps/action`, `steps/language_instruction`, `episode_metadata/...`), but each names its cameras,
proprio and action keys differently, stores images at its own size and uses its own action
conventions. A spec is a small `ml_collections.ConfigDict` that says, for one dataset:

  name                    short name used in errors, statistics and `dataset_index`
  builder_dir             the TFDS directory holding `dataset_info.json` (`<root>/<name>/<version>`;
                          `<root>/<name>` also works and picks the newest version)
  train_split, val_split  TFDS split strings; episodes are the examples, so `"train[:95%]"` /
                          `"train[95%:]"` is a split *by episode* for datasets without a val split
  cameras                 {camera name -> key under `steps/observation/`}, e.g. {"primary": "image_0"}
  image_size_px           (height, width) as stored, checked against the dataset; None = unchecked
  proprio_key, proprio_dim   key under `steps/observation/` and its size (None / 0 = no proprio)
  action_key, action_dim  key under `steps/` and its size
  action_dim_kinds        one of "relative" | "absolute" | "gripper" per action dim. Relative and
                          absolute dims are normalised; gripper dims are left as they are and must
                          already be in [0, 1] with 1 = close (a standardisation function converts
                          datasets that use another convention, see `standardize.py`)
  language_key            key of the instruction string (tf.string), under `steps/` when
  language_level          is "step", or under `episode_metadata/` when it is "episode"
  language_embedding_key  optional key under `steps/` of a precomputed float [E] embedding
  referents_key           optional key under `steps/` of per-step referent labels: a dict with
                          `position` float [T, K, 2] ((x, y) in [0, 1] image units, x right, y down)
                          and `valid` bool [T, K]. Privileged simulator labels (the built-in tabletop
                          has K = 2: target object, goal) read only when `config.num_referents` > 0,
                          for auxiliary losses; None = the dataset has none (its samples get
                          valid = False in a mixture)
  state_target_key        optional key under `steps/observation/` of a float [T, S] vector of
                          privileged simulator state (e.g. Meta-World's `env_state`), read only when
  state_target_dims       `config.state_targets` = N > 0: those N indices of it (e.g. the object's
  state_target_bounds     and the goal's world xyz), mapped from (low, high) per dim to [-1, 1],
                          become the labels of the auxiliary state loss; None = the dataset has
                          none (its samples get valid = False in a mixture)
  perturbation_keys       keys under `episode_metadata/` of int steps (-1: none) where a scripted
                          demonstrator executed a deliberate mistake to record its recovery; read
                          only when `config.mask_after_perturbation` (long action chunks must not
                          learn to replay recoveries from mistakes that have not happened; see
                          `traj_transforms`); () = none recorded
  standardize_fn          optional name of a function registered in `standardize.py`, applied to the
                          raw episode before the keys above are looked up
  weight                  sampling weight in a mixture

Open X-Embodiment datasets have ready-made specs: `oxe_spec("bridge", "/data/oxe")` (registry and
conventions in `vla_jax/data/oxe/`).

Keys are validated before any data is read (`validate_spec`): a dataset whose keys do not match its
spec fails at start with one `ValueError` naming every missing key and the keys that do exist.
Referent keys are required only when referents are requested (`validate_spec(..., num_referents=K)`),
so a dataset written before it had labels still loads for plain behaviour cloning.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable, Mapping, Sequence

import ml_collections

from vla_jax.data.oxe import features as oxe_features
from vla_jax.data.oxe import registry as oxe_registry

# The tiny real Bridge dataset shipped beside the repository (../shared), used as a test fixture.
BRIDGE_DEBUG_DIR = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "datasets", "bridge_debug",
    "bridge_dataset", "1.0.0"))

ACTION_DIM_KINDS = ("relative", "absolute", "gripper")
LANGUAGE_LEVELS = ("step", "episode")


def dataset_spec(
    *,
    name: str,
    builder_dir: str,
    cameras: Mapping[str, str],
    action_dim: int,
    action_dim_kinds: Sequence[str] | None = None,
    action_key: str = "action",
    proprio_key: str | None = None,
    proprio_dim: int = 0,
    image_size_px: tuple[int, int] | None = None,
    language_key: str | None = "language_instruction",
    language_level: str = "step",
    language_embedding_key: str | None = None,
    referents_key: str | None = None,
    state_target_key: str | None = None,
    state_target_dims: Sequence[int] = (),
    state_target_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    perturbation_keys: Sequence[str] = (),
    train_split: str = "train",
    val_split: str | None = "val",
    standardize_fn: str | None = None,
    weight: float = 1.0,
) -> ml_collections.ConfigDict:
  """Returns a dataset spec ConfigDict (fields documented in the module docstring)."""
  kinds = tuple(action_dim_kinds) if action_dim_kinds is not None else ("relative",) * action_dim
  spec = ml_collections.ConfigDict()
  spec.name = name
  spec.builder_dir = builder_dir
  spec.train_split = train_split
  spec.val_split = val_split
  spec.cameras = ml_collections.ConfigDict(dict(cameras))
  spec.image_size_px = tuple(image_size_px) if image_size_px is not None else None
  spec.proprio_key = proprio_key
  spec.proprio_dim = int(proprio_dim if proprio_key else 0)
  spec.action_key = action_key
  spec.action_dim = int(action_dim)
  spec.action_dim_kinds = kinds
  spec.language_key = language_key
  spec.language_level = language_level
  spec.language_embedding_key = language_embedding_key
  spec.referents_key = referents_key
  spec.state_target_key = state_target_key
  spec.state_target_dims = tuple(int(d) for d in state_target_dims)
  spec.state_target_bounds = (None if state_target_bounds is None else
                              tuple(tuple(float(v) for v in row) for row in state_target_bounds))
  spec.perturbation_keys = tuple(perturbation_keys)
  spec.standardize_fn = standardize_fn
  spec.weight = float(weight)
  check_spec_fields(spec)
  return spec


def bridge_spec(builder_dir: str = BRIDGE_DEBUG_DIR,
                cameras: Mapping[str, str] | None = None, **overrides: Any) -> ml_collections.ConfigDict:
  """Spec for Bridge (Open X-Embodiment RLDS): 4 cameras `image_0..3`, 7-d state and action.

  Bridge stores its gripper action as 1 = open; the registered "bridge" standardisation flips it
  to this project's convention (1 = close). Default cameras: primary = image_0, wrist = image_1
  (in Bridge `image_1..3` are extra external views; pick the ones your model wants).
  """
  kwargs: dict[str, Any] = dict(
      name="bridge",
      builder_dir=builder_dir,
      cameras=cameras if cameras is not None else {"primary": "image_0", "wrist": "image_1"},
      image_size_px=(64, 64),
      proprio_key="state",
      proprio_dim=7,
      action_key="action",
      action_dim=7,
      action_dim_kinds=("relative",) * 6 + ("gripper",),
      language_key="language_instruction",
      language_embedding_key="language_embedding",
      train_split="train",
      val_split="val",
      standardize_fn="bridge",
  )
  kwargs.update(overrides)
  return dataset_spec(**kwargs)


def tabletop_spec(builder_dir: str = "data/tabletop/1.0.0", **overrides: Any) -> ml_collections.ConfigDict:
  """Spec for the built-in `tabletop` simulator dataset (written by `vla_jax.data.tabletop_builder`).

  One 64x64 camera, state = [gripper_x, gripper_y, gripper_closed, grasp_contact, push_force],
  action = [dx, dy (relative, in [-1, 1]), gripper_cmd (absolute, 0 = open, 1 = close)],
  referents = `steps/referents` {position [2, 2], valid [2]} (target object, goal; see
  `vla_jax.envs.tabletop.referents`).
  """
  kwargs: dict[str, Any] = dict(
      name="tabletop",
      builder_dir=builder_dir,
      cameras={"primary": "image"},
      image_size_px=(64, 64),
      proprio_key="state",
      proprio_dim=5,
      action_key="action",
      action_dim=3,
      action_dim_kinds=("relative", "relative", "gripper"),
      language_key="language_instruction",
      referents_key="referents",
      perturbation_keys=("perturbation_step", "slip_step"),
      train_split="train",
      val_split="val",
  )
  kwargs.update(overrides)
  return dataset_spec(**kwargs)


def oxe_spec(name: str, data_dir: str, *, check_features: bool = True,
             **overrides: Any) -> ml_collections.ConfigDict:
  """Spec for a registered Open X-Embodiment dataset, read from `<data_dir>/<tfds_name>`.

  `name` is a registry name or the dataset's TFDS directory name (`vla_jax/data/oxe/registry.py`
  lists them, with where each structure came from). The spec reads the dataset through its
  registered standardisation ("oxe/<name>@<entry digest>"), which yields cameras by role (`primary`, `wrist`,
  ...), `proprio`, a 7-d action (6 end-effector dims + gripper in [0, 1], 1 = close) and the
  instruction at step level, whatever the dataset's own layout. `image_size_px` is the registered
  size when all cameras share one, else None (each camera is still checked against the registered
  structure). Splits default to the dataset's own, or a 95/5 split by episode.

  If the directory exists, its `features.json` is compared with the registered structure now
  (`check_features=False` skips it): a mismatch raises ValueError naming the first key, the
  registered expectation and what the dataset has. Keyword overrides replace any spec field
  (e.g. `weight=2.0`, `train_split="train[:10]"`).
  """
  entry = oxe_registry.get(name)
  oxe_registry.check_entry(entry)
  sizes = set(oxe_registry.camera_sizes(entry).values())
  size = next(iter(sizes)) if len(sizes) == 1 else None
  kwargs: dict[str, Any] = dict(
      name=entry.name,
      builder_dir=os.path.join(os.path.expanduser(data_dir), entry.tfds_name),
      cameras=dict(entry.cameras),
      image_size_px=size if size is not None and None not in size else None,
      proprio_key="proprio" if entry.proprio else None,
      proprio_dim=oxe_registry.proprio_dim(entry),
      action_key="action",
      action_dim=7,
      action_dim_kinds=(entry.eef_kind,) * 6 + ("gripper",),
      language_key="language_instruction",
      language_level="step",
      train_split=entry.train_split,
      val_split=entry.val_split,
      standardize_fn=oxe_registry.standardize_fn_name(entry),
  )
  kwargs.update(overrides)
  spec = dataset_spec(**kwargs)
  if check_features and os.path.isdir(os.path.expanduser(spec.builder_dir)):
    check_oxe_features(spec, entry.name)
  return spec


def check_oxe_features(spec: ml_collections.ConfigDict, name: str | None = None) -> None:
  """Compares a dataset directory's `features.json` with the registered OXE structure of `name`
  (default: the spec's name). Raises ValueError naming the first mismatching key."""
  entry = oxe_registry.get(name or spec.name)
  builder_dir = resolve_builder_dir(spec)
  problem = oxe_features.first_mismatch(entry.flat_features(), oxe_features.read_features_json(builder_dir))
  if problem:
    raise ValueError(f"dataset '{spec.name}' at {builder_dir} does not match its registered OXE structure "
                     f"({entry.tfds_name}): {problem} (registered from {entry.source})")


def check_spec_fields(spec: ml_collections.ConfigDict) -> None:
  """Checks a spec's own consistency (no dataset access). Raises ValueError."""
  where = f"dataset spec '{spec.get('name', '?')}'"
  if not spec.get("name"):
    raise ValueError(f"{where}: `name` is empty")
  if not spec.get("builder_dir"):
    raise ValueError(f"{where}: `builder_dir` is empty; point it at <root>/<dataset>/<version>")
  if not spec.cameras:
    raise ValueError(f"{where}: `cameras` is empty; map at least one camera name to an observation key")
  for cam in spec.cameras:
    if not re.fullmatch(r"[a-z0-9_]+", cam):
      raise ValueError(f"{where}: camera name {cam!r} must be lower_snake_case (it becomes image_{cam})")
  kinds = tuple(spec.action_dim_kinds)
  if len(kinds) != spec.action_dim:
    raise ValueError(f"{where}: action_dim is {spec.action_dim} but action_dim_kinds has {len(kinds)} "
                     f"entries {kinds}")
  bad = [k for k in kinds if k not in ACTION_DIM_KINDS]
  if bad:
    raise ValueError(f"{where}: action_dim_kinds {bad} not in {ACTION_DIM_KINDS}")
  if spec.language_level not in LANGUAGE_LEVELS:
    raise ValueError(f"{where}: language_level {spec.language_level!r} not in {LANGUAGE_LEVELS}")
  if spec.image_size_px is not None and len(spec.image_size_px) != 2:
    raise ValueError(f"{where}: image_size_px must be (height, width), got {spec.image_size_px}")
  if spec.weight < 0:
    raise ValueError(f"{where}: weight must be >= 0, got {spec.weight}")
  referents_key = spec.get("referents_key")
  if referents_key is not None and (not isinstance(referents_key, str) or not referents_key):
    raise ValueError(f"{where}: referents_key must be a key under steps/ or None, got {referents_key!r}")
  check_state_target_fields(spec)
  keys = spec.get("perturbation_keys", ())
  if isinstance(keys, str) or not all(isinstance(k, str) and k for k in keys):
    raise ValueError(f"{where}: perturbation_keys must be a tuple of keys under episode_metadata/, got {keys!r}")


def check_state_target_fields(spec: ml_collections.ConfigDict) -> None:
  """A spec's state target: a key, N >= 1 distinct indices and N (low < high) bounds, or no key."""
  where = f"dataset spec '{spec.get('name', '?')}'"
  key = spec.get("state_target_key")
  if key is None:
    return
  dims, bounds = tuple(spec.get("state_target_dims", ())), spec.get("state_target_bounds")
  if not isinstance(key, str) or not key:
    raise ValueError(f"{where}: state_target_key must be a key under steps/observation/ or None, got {key!r}")
  if not dims or len(set(dims)) != len(dims) or min(dims) < 0:
    raise ValueError(f"{where}: state_target_dims must be distinct indices >= 0 into "
                     f"steps/observation/{key}, got {dims}")
  if bounds is None or len(bounds) != 2 or any(len(row) != len(dims) for row in bounds):
    raise ValueError(f"{where}: state_target_bounds must be (low, high) with {len(dims)} values each "
                     f"(one per state_target_dims entry), got {bounds}")
  if any(lo >= hi for lo, hi in zip(*bounds)):
    raise ValueError(f"{where}: state_target_bounds needs low < high in every dim, got {bounds}")


def action_normalize_mask(spec: ml_collections.ConfigDict) -> list[bool]:
  """bool [A]: True for the action dims the pipeline normalises (everything but gripper dims)."""
  return [kind != "gripper" for kind in spec.action_dim_kinds]


def resolve_builder_dir(spec: ml_collections.ConfigDict) -> str:
  """The directory holding `dataset_info.json`: `builder_dir` itself or its newest version subdir."""
  path = os.path.expanduser(spec.builder_dir)
  if os.path.isfile(os.path.join(path, "dataset_info.json")):
    return path
  if os.path.isdir(path):
    versions = [d for d in os.listdir(path)
                if re.fullmatch(r"\d+\.\d+\.\d+", d) and os.path.isfile(os.path.join(path, d, "dataset_info.json"))]
    if versions:
      newest = max(versions, key=lambda v: tuple(int(x) for x in v.split(".")))
      return os.path.join(path, newest)
  raise ValueError(
      f"dataset '{spec.name}': no RLDS/TFDS dataset at {path!r} (expected a dataset_info.json there or in "
      f"a <version> subdirectory, e.g. <root>/bridge_dataset/1.0.0)")


# ----------------------------------------------------------------------------------------------
# Validation against a dataset's (standardised) element structure.


def _flatten_spec(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{'steps/observation/image_0': TensorSpec, ...} from a nested dict of TensorSpecs."""
  out: dict[str, Any] = {}
  if isinstance(tree, Mapping):
    for key, value in tree.items():
      out.update(_flatten_spec(value, f"{prefix}{key}/"))
    return out
  out[prefix.rstrip("/")] = tree
  return out


def _siblings(flat: Mapping[str, Any], path: str) -> str:
  """'steps/observation/{image_0, state}': the keys beside a missing `path` (or its nearest
  existing parent's keys when whole levels are missing)."""
  parent = path
  while "/" in parent:
    parent = parent.rsplit("/", 1)[0]
    names = sorted({k[len(parent) + 1:].split("/")[0] for k in flat if k.startswith(parent + "/")})
    if names:
      return f"{parent}/{{{', '.join(names)}}}"
  return "{" + ", ".join(sorted({k.split("/")[0] for k in flat})) + "}"


def required_paths(spec: ml_collections.ConfigDict, num_referents: int = 0,
                   perturbations: bool = False, attribute_objects: int = 0,
                   state_targets: int = 0) -> dict[str, str]:
  """{flattened key path -> role} that the spec needs to find in a standardised episode.

  The referent labels are needed only when `num_referents` > 0 and the spec names them (their
  `attributes` also when `attribute_objects` > 0), the perturbation steps only when
  `perturbations` (the pipeline masks chunks after them), the state target only when
  `state_targets` > 0.
  """
  paths = {f"steps/observation/{key}": f"camera '{cam}'" for cam, key in spec.cameras.items()}
  if spec.proprio_key:
    paths[f"steps/observation/{spec.proprio_key}"] = "proprio"
  paths[f"steps/{spec.action_key}"] = "action"
  if spec.language_key:
    level = "steps" if spec.language_level == "step" else "episode_metadata"
    paths[f"{level}/{spec.language_key}"] = "language"
  if spec.language_embedding_key:
    paths[f"steps/{spec.language_embedding_key}"] = "language embedding"
  referents_key = spec.get("referents_key")
  if num_referents > 0 and referents_key:
    paths[f"steps/{referents_key}/position"] = "referent positions"
    paths[f"steps/{referents_key}/valid"] = "referent validity"
    if attribute_objects > 0:
      paths[f"steps/{referents_key}/attributes/position"] = "referent attribute positions"
      paths[f"steps/{referents_key}/attributes/valid"] = "referent attribute validity"
  if state_targets > 0 and spec.get("state_target_key"):
    paths[f"steps/observation/{spec.state_target_key}"] = "state target"
  if perturbations:
    for key in spec.get("perturbation_keys", ()):
      paths[f"episode_metadata/{key}"] = "perturbation step"
  return paths


def validate_spec(spec: ml_collections.ConfigDict, element_spec: Mapping[str, Any],
                  stored_image_shapes: Mapping[str, Iterable[int | None]] | None = None,
                  num_referents: int = 0, perturbations: bool = False, attribute_objects: int = 0,
                  state_targets: int = 0) -> None:
  """Checks that a standardised episode has every key the spec names, with the declared sizes.

  Args:
    spec: a dataset spec.
    element_spec: `tf.data` element_spec of one standardised episode (nested dict of TensorSpec,
      step-level leaves have a leading [T] dim).
    stored_image_shapes: optional {observation key -> (H, W, C)} from the TFDS features, used to
      check `image_size_px` (encoded images have no static shape in the element_spec).
    num_referents: referents the pipeline wants per step (`config.num_referents`); when > 0 the
      spec's `referents_key` must exist with position [T, K, 2] and valid [T, K], K <= num_referents.
    perturbations: the pipeline masks chunks after recorded perturbations
      (`config.mask_after_perturbation`): the spec's `perturbation_keys` must exist.
    attribute_objects: `config.attribute_objects` (M > 0: the referents' `attributes` labels must
      exist with position [T, 2, M', 2], M' <= M).
    state_targets: `config.state_targets` (N > 0: the spec's `state_target_key` must exist as
      float [T, S] with every `state_target_dims` index < S, and name exactly N dims).

  Raises:
    ValueError naming every missing key and the keys that exist, or the first size mismatch.
  """
  import tensorflow as tf  # Local: this module stays importable without TF for config building.

  flat = _flatten_spec(element_spec)
  needed = required_paths(spec, num_referents, perturbations, attribute_objects, state_targets)
  missing = [p for p in needed if p not in flat]
  if missing:
    parts = [f"spec wants {p} ({needed[p]}), dataset has {_siblings(flat, p)}" for p in missing]
    hint = ""
    if any(needed[p].startswith("referent") for p in missing):
      hint = ("; referent labels are read because config.num_referents > 0 (their attributes because "
              "config.attribute_objects > 0): regenerate the dataset with them, set the spec's "
              "referents_key=None (its samples then get valid=False) or config.num_referents=0 "
              "(config.attribute_objects=0)")
    raise ValueError(f"dataset '{spec.name}': " + "; ".join(parts) + hint)

  def dim(path: str) -> int | None:
    shape = flat[path].shape
    return None if shape.rank is None or shape.rank < 2 else shape[-1]

  action_path = f"steps/{spec.action_key}"
  if flat[action_path].shape.rank != 2:
    raise ValueError(f"dataset '{spec.name}': {action_path} should be [T, {spec.action_dim}] per episode, "
                     f"got shape {flat[action_path].shape}; concatenate multi-field actions in a "
                     "standardize_fn (see vla_jax/data/README.md)")
  if dim(action_path) not in (None, spec.action_dim):
    raise ValueError(f"dataset '{spec.name}': spec says action_dim={spec.action_dim}, "
                     f"{action_path} has {dim(action_path)} dims")
  if spec.proprio_key:
    path = f"steps/observation/{spec.proprio_key}"
    if dim(path) not in (None, spec.proprio_dim):
      raise ValueError(f"dataset '{spec.name}': spec says proprio_dim={spec.proprio_dim}, {path} has {dim(path)} dims")
  for cam, key in spec.cameras.items():
    path = f"steps/observation/{key}"
    leaf = flat[path]
    if leaf.dtype not in (tf.string, tf.uint8):
      raise ValueError(f"dataset '{spec.name}': camera '{cam}' ({path}) is {leaf.dtype.name}, expected "
                       "encoded images (tf.string) or uint8 [T, H, W, 3]")
    shape = None
    if leaf.dtype == tf.uint8 and leaf.shape.rank == 4:
      shape = tuple(leaf.shape[1:])
    elif stored_image_shapes and key in stored_image_shapes:
      shape = tuple(stored_image_shapes[key])
    if spec.image_size_px is not None and shape is not None and None not in shape[:2]:
      if tuple(shape[:2]) != tuple(spec.image_size_px):
        raise ValueError(f"dataset '{spec.name}': spec says image_size_px={tuple(spec.image_size_px)}, "
                         f"{path} stores {shape[0]}x{shape[1]}")
  if spec.language_key:
    level = "steps" if spec.language_level == "step" else "episode_metadata"
    path = f"{level}/{spec.language_key}"
    if flat[path].dtype != tf.string:
      raise ValueError(f"dataset '{spec.name}': language {path} is {flat[path].dtype.name}, expected a string")
  if state_targets > 0 and spec.get("state_target_key"):
    path = f"steps/observation/{spec.state_target_key}"
    dims = tuple(spec.state_target_dims)
    if len(dims) != state_targets:
      raise ValueError(f"dataset '{spec.name}': config.state_targets={state_targets} but the spec's "
                       f"state_target_dims name {len(dims)} dims {dims}")
    if flat[path].shape.rank != 2 or not flat[path].dtype.is_floating:
      raise ValueError(f"dataset '{spec.name}': state target {path} should be float [T, S] per episode, "
                       f"got {flat[path].dtype.name} {flat[path].shape}")
    if dim(path) is not None and max(dims) >= dim(path):
      raise ValueError(f"dataset '{spec.name}': state_target_dims {dims} index past {path}'s {dim(path)} dims")
  if num_referents > 0 and spec.get("referents_key"):
    check_referent_shapes(spec, flat[f"steps/{spec.referents_key}/position"].shape,
                          flat[f"steps/{spec.referents_key}/valid"].shape, num_referents)
    if attribute_objects > 0:
      check_attribute_shapes(spec, flat[f"steps/{spec.referents_key}/attributes/position"].shape,
                             flat[f"steps/{spec.referents_key}/attributes/valid"].shape, attribute_objects)


def check_referent_shapes(spec: ml_collections.ConfigDict, position_shape: Any, valid_shape: Any,
                          num_referents: int) -> None:
  """Per-episode referent labels must be position [T, K, 2] and valid [T, K] with K <= num_referents.

  Fewer than `num_referents` are padded with invalid rows; more cannot be dropped silently (which
  ones would the loss lose?), so they are an error.
  """
  import tensorflow as tf  # Local, as in validate_spec.

  position_shape, valid_shape = tf.TensorShape(position_shape), tf.TensorShape(valid_shape)
  key = f"steps/{spec.referents_key}"
  if position_shape.rank != 3 or position_shape[2] not in (None, 2) or valid_shape.rank != 2:
    raise ValueError(f"dataset '{spec.name}': {key} should hold position [T, K, 2] and valid [T, K] per "
                     f"episode, got position {position_shape} and valid {valid_shape}")
  k, k_valid = position_shape[1], valid_shape[1]
  if k is not None and k_valid is not None and k != k_valid:
    raise ValueError(f"dataset '{spec.name}': {key}/position has {k} referents ({position_shape}) but "
                     f"{key}/valid has {k_valid} ({valid_shape})")
  k = k if k is not None else k_valid
  if k is not None and k > num_referents:
    raise ValueError(f"dataset '{spec.name}': {key}/position has {k} referents per step (shape "
                     f"{position_shape}) but config.num_referents={num_referents}; raise num_referents to "
                     f"at least {k} (datasets with fewer are padded with invalid referents)")


def check_attribute_shapes(spec: ml_collections.ConfigDict, position_shape: Any, valid_shape: Any,
                           attribute_objects: int) -> None:
  """Attribute labels must be position [T, 2, M, 2] and valid [T, 2, M] with M <= attribute_objects
  (fewer slots are padded; more would drop objects the loss should see, so they are an error)."""
  import tensorflow as tf  # Local, as in validate_spec.

  position_shape, valid_shape = tf.TensorShape(position_shape), tf.TensorShape(valid_shape)
  key = f"steps/{spec.referents_key}/attributes"
  if (position_shape.rank != 4 or valid_shape.rank != 3 or position_shape[1] not in (None, 2)
      or position_shape[3] not in (None, 2) or position_shape[1:3] != valid_shape[1:3]):
    raise ValueError(f"dataset '{spec.name}': {key} should hold position [T, 2, M, 2] and valid [T, 2, M] "
                     f"per episode (rows: colour, shape), got position {position_shape} and valid {valid_shape}")
  m = position_shape[2]
  if m is not None and m > attribute_objects:
    raise ValueError(f"dataset '{spec.name}': {key}/position has {m} object slots (shape {position_shape}) "
                     f"but config.attribute_objects={attribute_objects}; raise it to at least {m}")
