"""Where the policy looks: does its target token land on the object the instruction names?

Why: closed-loop success mixes two failures — looking at the wrong object and acting wrongly on
the right one — and at 50 episodes per family it is noisy. A policy trained with the referent loss
(`vla_jax/models/referents.py`) has a learned image token whose attention is meant to sit on the
instruction's target; reading that attention on fresh simulator scenes measures grounding alone,
on hundreds of scenes in seconds, per condition. The nearest object to the token's expected
position is classified as the target, the push reference, a distractor sharing the target's colour
or its shape, or another object: on held-out colour-shape combinations this says whether a miss
is a colour or a shape confusion.

The token maps depend only on the images and the instruction (proprio never enters the image
tokenizer), so proprio inputs are zeros here; each scene is its first frame.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vla_jax.data import language
from vla_jax.envs import tabletop, tasks
from vla_jax.evaluation import metrics
from vla_jax.inference.policy_fn import embodiment_index
from vla_jax.models import referents

CATEGORIES = ("target", "reference", "same colour", "same shape", "other")


def expected_positions(logits: np.ndarray) -> np.ndarray:
  """Attention logits float [N, h, w] → the spatial-softmax expected (x, y) float32 [N, 2] in [0, 1]
  image units (x right, y down), as the learned tokens compute it."""
  n, hh, ww = logits.shape
  flat = np.asarray(logits, np.float64).reshape(n, hh * ww)
  weights = np.exp(flat - flat.max(axis=1, keepdims=True))
  weights /= weights.sum(axis=1, keepdims=True)
  return (weights @ referents.cell_centres(hh, ww).reshape(hh * ww, 2)).astype(np.float32)


def classify(scene: tabletop.SceneState, xy: np.ndarray) -> str:
  """Which object of `scene` is nearest `xy`, relative to the instruction's target (CATEGORIES)."""
  nearest = int(np.argmin(np.linalg.norm(scene.obj_pos - np.asarray(xy), axis=-1)))
  if nearest == scene.target:
    return "target"
  if nearest == scene.ref:
    return "reference"
  if scene.obj_colour[nearest] == scene.obj_colour[scene.target]:
    return "same colour"
  if scene.obj_shape[nearest] == scene.obj_shape[scene.target]:
    return "same shape"
  return "other"


def applies(model_config) -> bool:
  """True when token 0 was trained onto the target (learned image tokens + the referent loss)."""
  ref = model_config.get("referent_loss")
  return bool(model_config.image.get("num_learned_tokens", 0)) and ref is not None and ref.weight > 0


def grounding_report(bundle, splits: Mapping[str, str], families: Sequence[str] = tasks.FAMILIES,
                     scenes_per_family: int = 100, seed: int = 2_000_000) -> dict[str, Any]:
  """{condition: {family: {"scenes", "counts": {category: n}, "target_rate", "ci95_low",
  "ci95_high", "median_error"}}} for a bundle whose model has learned image tokens.

  splits: {condition: the scene split it draws} for conditions whose scenes tell their own
  instruction (`evaluate.grounding_splits`). median_error: distance from the token's expected
  position to the target, in image widths. Rendered by `evaluate.grounding_table`.
  """
  cfg = bundle.model_config
  camera, size, window = bundle.camera, int(cfg.image_size_px), int(cfg.window_size)
  params = jax.tree.map(jnp.asarray, bundle.params)
  maps_fn = jax.jit(lambda p, o, t: bundle.policy.token_maps(p, o, t)[camera][:, -1, ..., 0])
  embodiment = embodiment_index(bundle)
  env = tabletop.TabletopEnv(image_size=size)
  report: dict[str, Any] = {}
  for condition, split in splits.items():
    report[condition] = {}
    for index, family in enumerate(families):
      scenes, images, instructions = [], [], []
      for i in range(scenes_per_family):
        obs, _ = env.reset(seed=seed + index * 100_000 + i, options={"task_family": family, "split": split})
        scenes.append(env.scene)
        images.append(obs["image"])
        instructions.append(obs["instruction"])
      n = len(scenes)
      observation = {f"image_{camera}": np.repeat(np.stack(images)[:, None], window, axis=1),
                     "proprio": np.zeros((n, window, int(cfg.proprio_dim)), np.float32),
                     "timestep_pad_mask": np.ones((n, window), bool)}
      task = language.instruction_inputs(cfg.language, instructions, encoder=bundle.encoder)
      if embodiment is not None:
        task["embodiment"] = np.full((n,), embodiment, np.int32)
      xy = expected_positions(np.asarray(maps_fn(params, observation, task)))
      counts = dict.fromkeys(CATEGORIES, 0)
      for scene, point in zip(scenes, xy):
        counts[classify(scene, point)] += 1
      errors = [float(np.linalg.norm(s.obj_pos[s.target] - p)) for s, p in zip(scenes, xy)]
      low, high = metrics.wilson_interval(counts["target"], n)
      report[condition][family] = {"scenes": n, "counts": counts, "target_rate": counts["target"] / n,
                                   "ci95_low": low, "ci95_high": high, "median_error": float(np.median(errors))}
  return report

