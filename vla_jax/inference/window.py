"""The observation window a policy reads: each robot's last T frames, padded like training.

At an episode start the window is padding that repeats the first frame (mask False), exactly like
`vla_jax.data.traj_transforms`, so a policy sees in closed loop what it saw in training. Numpy
only: the JAX policy, the ONNX runtime and the server all keep one per robot.

Which observation key feeds which policy input comes from the training data: an environment's
observation dict uses its dataset's `steps/observation` keys (the builders write the env's
observations), and the run's dataset spec maps the model's cameras and proprio to those keys
(`observation_keys`). A camera the acting dataset lacks is fed zeros, as training fed it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np


def default_observation_keys(cameras) -> dict[str, str]:
  """The simulators' single-camera convention: `image` feeds the first camera, `image_<name>` the
  others, `state` the proprio."""
  cameras = [str(c) for c in cameras]
  return {**{f"image_{c}": "image" if i == 0 else f"image_{c}" for i, c in enumerate(cameras)}, "proprio": "state"}


def observation_keys(model_config: Any, run_config: Mapping[str, Any] | None = None,
                     dataset: str | None = None) -> dict[str, str | None]:
  """{policy input ("image_<camera>", "proprio") → observation key (None: zeros)} for acting as `dataset`.

  From the run's spec of `dataset` (`run_config["data"]["datasets"][dataset]`) when there is one,
  else the simulators' convention (`default_observation_keys`).
  """
  cameras = [str(c) for c in model_config["cameras"]]
  spec = (((run_config or {}).get("data") or {}).get("datasets") or {}).get(dataset)
  if spec is None:
    return default_observation_keys(cameras)
  keys: dict[str, str | None] = {f"image_{c}": spec["cameras"].get(c) for c in cameras}
  keys["proprio"] = spec["proprio_key"]
  if cameras and all(v is None for k, v in keys.items() if k != "proprio"):
    raise ValueError(f"dataset {dataset!r} names none of the model's cameras {cameras} (it has "
                     f"{sorted(spec['cameras'])}); a policy needs at least one real view")
  return keys


def robot_image_keys(keys: Mapping[str, str | None]) -> dict[str, str]:
  """{robot key → policy input} of the frames a robot sends a policy whose inputs read `keys`
  (`observation_keys`): "image" for the model's first camera, "image_<camera>" for each other (the
  simulators' convention); a camera fed zeros (key None) is not asked for."""
  inputs = default_observation_keys([k[len("image_"):] for k in keys if k != "proprio"])
  return {robot: name for name, robot in inputs.items() if name != "proprio" and keys.get(name) is not None}


def policy_observation(policy: Any, observation: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """One robot's observation — its camera frames [S, S, 3] under `robot_image_keys` ("image",
  "image_<camera>") and "state" [D] — as a batch of one under the observation keys `policy` reads
  (the simulators': the same; a fine-tuned OXE policy's may be e.g. image_0)."""
  keys = getattr(policy, "observation_keys", None) or default_observation_keys(["primary"])
  frames = robot_image_keys(keys)
  observation = robot_fields(observation, list(frames), "this policy")
  batch = {keys[name]: np.asarray(observation[robot])[None] for robot, name in frames.items()}
  batch[keys["proprio"]] = np.asarray(observation["state"], np.float32)[None]
  return batch


def robot_fields(observation: Mapping[str, Any], frames: Sequence[str], reader: str) -> dict[str, Any]:
  """The frames (robot keys, e.g. "image", "image_wrist") and "state" of `observation` that `reader`
  reads, and nothing else (a robot may have more views); an error names the missing ones."""
  missing = [k for k in (*frames, "state") if k not in observation]
  if missing:
    raise ValueError(f"the observation lacks {missing}: {reader} reads the frames {list(frames)} and 'state' "
                     f"(got {sorted(observation)})")
  return {k: observation[k] for k in (*frames, "state")}


class ObservationWindow:
  """N robots' last `window` frames of every camera and proprio (env units), with the validity mask.

  keys: {policy input → observation key} (`observation_keys`); a None key is a camera fed zeros.
  """

  def __init__(self, window: int, keys: Mapping[str, str | None] | None = None):
    if int(window) < 1:
      raise ValueError(f"ObservationWindow: window must be >= 1, got {window}")
    self.window = int(window)
    self.keys = dict(keys) if keys is not None else default_observation_keys(["primary"])
    if "proprio" not in self.keys:
      raise ValueError(f"ObservationWindow: keys {self.keys} lack 'proprio'")
    self.frames: dict[str, np.ndarray] | None = None
    self.valid: np.ndarray | None = None

  def reset(self) -> None:
    self.frames = self.valid = None

  def _read(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """This step's inputs {input: [N, ...]} from `obs`, checked."""
    missing = sorted({k for k in self.keys.values() if k is not None} - set(obs))
    if missing:
      raise KeyError(f"ObservationWindow.push: observation lacks {missing} (has {sorted(obs)}); this policy "
                     f"reads {self.keys}")
    proprio = np.asarray(obs[self.keys["proprio"]], np.float32)
    if proprio.ndim != 2:
      raise ValueError(f"ObservationWindow.push: expected {self.keys['proprio']!r} float [N, D], got {list(proprio.shape)}")
    out = {"proprio": proprio}
    for name, key in self.keys.items():
      if name == "proprio" or key is None:
        continue
      image = np.asarray(obs[key])
      if image.ndim != 4 or image.shape[-1] != 3 or len(image) != len(proprio):
        raise ValueError(f"ObservationWindow.push: expected {key!r} uint8 [N, S, S, 3] for {len(proprio)} robots "
                         f"(as {self.keys['proprio']!r}), got {list(image.shape)}")
      out[name] = image
    images = [v for k, v in out.items() if k != "proprio"]
    for name, key in self.keys.items():
      if key is None:
        if not images:
          raise ValueError(f"ObservationWindow: {name} has no observation key and no other camera to size it by")
        out[name] = np.zeros_like(images[0])
    return out

  def push(self, obs: Mapping[str, Any]) -> None:
    """Adds this step's observation: each camera's uint8 [N, S, S, 3] and proprio float [N, D]."""
    step = self._read(obs)
    n = len(step["proprio"])
    if self.frames is not None and n != len(self.valid):
      raise ValueError(f"ObservationWindow.push: {n} robots, but this episode started with "
                       f"{len(self.valid)}; reset() first")
    if self.frames is None:
      self.frames = {k: np.repeat(v[:, None], self.window, axis=1) for k, v in step.items()}
      self.valid = np.zeros((n, self.window), bool)
    self.frames = {k: np.concatenate([self.frames[k][:, 1:], v[:, None]], axis=1) for k, v in step.items()}
    self.valid = np.concatenate([self.valid[:, 1:], np.ones((n, 1), bool)], axis=1)

  def inputs(self) -> dict[str, np.ndarray]:
    """The policy function's observation inputs: image_<camera> uint8 [N, T, S, S, 3] per camera,
    proprio float32 [N, T, D] (env units), timestep_pad_mask bool [N, T]."""
    if self.frames is None:
      raise RuntimeError("ObservationWindow is empty: push() an observation first")
    return {**self.frames, "timestep_pad_mask": self.valid}
