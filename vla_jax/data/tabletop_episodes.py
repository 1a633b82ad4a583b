"""Scripted-expert episodes of the built-in tabletop, in the RLDS layout, as numpy (no TFDS here).

`generate_episodes(config, split)` yields the episodes a generation config describes
(`experiments/configs/tabletop_data.py`): each from its own (env seed, expert seed) pair derived
from (config seed, split, index), so splits never share a scene and any prefix of a dataset is
reproducible; task families follow `family_schedule`; the expert's recovery perturbations come
from the config (`make_expert`, which also reads configs written before those knobs existed).
Rollouts run in `config.num_workers` spawned processes (`worker_pool`), yielded in a fixed order.
`tabletop_builder.py` writes them with TFDS; tests and tools can run them without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import ml_collections
import numpy as np
import tqdm

from vla_jax.data import rlds, worker_pool
from vla_jax.envs import tabletop
from vla_jax.envs.expert import TIGHT_PUSH, PushTolerances, ScriptedExpert
from vla_jax.envs.tabletop import DEFAULT_EPISODE_STEPS, TabletopEnv

SPLIT_INDEX = {"train": 0, "val": 1}


def episode_seeds(seed: int, split: str, index: int) -> tuple[int, int]:
  """(env seed, expert seed) of episode `index` of a split: disjoint streams per split and index."""
  words = np.random.SeedSequence([seed, SPLIT_INDEX[split], index]).generate_state(2, np.uint32)
  return int(words[0]), int(words[1])


def rollout_episode(
    env: TabletopEnv, expert: ScriptedExpert, env_seed: int, expert_seed: int, family: str
) -> dict[str, Any]:
  """Runs the expert for one episode and returns it in the RLDS layout (numpy, T + 1 steps)."""
  obs, info = env.reset(seed=env_seed, options={"task_family": family})
  expert.reset(env.scene, seed=expert_seed)
  images, states, actions, rewards = [obs["image"]], [obs["state"]], [], []
  # Labels of the scene each image was rendered from (taken right after reset / step, like obs).
  referents = [tabletop.step_referents(env.scene)]
  success = False
  perturbation_step = slip_step = -1
  while True:
    action = expert.act(env.scene)  # The label: what the expert means to do here.
    executed = expert.perturb(env.scene, action)
    if expert.last_perturbation == "close" and perturbation_step < 0:  # The first step of a held close.
      perturbation_step = len(actions)
    elif expert.last_perturbation == "slip" and slip_step < 0:
      slip_step = len(actions)
    obs, reward, terminated, truncated, _ = env.step(executed)
    actions.append(action)
    rewards.append(reward)
    images.append(obs["image"])
    states.append(obs["state"])
    referents.append(tabletop.step_referents(env.scene))
    if terminated or truncated:
      success = bool(terminated)
      break
  steps = rlds.episode_steps(images, states, actions, rewards, np.array([0.0, 0.0, actions[-1][2]], np.float32),
                             info["instruction"], success)
  steps["referents"] = tabletop.stack_referents(referents)
  metadata = {
      "task_family": family,
      "split": env.split,
      "scene_objects": info["scene_objects"],
      "seed": env_seed,
      "expert_seed": expert_seed,
      "perturbation_step": perturbation_step,
      "slip_step": slip_step,
      "success": success,
  }
  return {"steps": steps, "episode_metadata": metadata}


SLIP_KEYS = ("slip_prob", "slip_steps", "slip_angle", "slip_after")  # Absent in older configs: no slips.


def make_expert(config: ml_collections.ConfigDict) -> ScriptedExpert:
  """The generation config's expert. Configs of older datasets lack `mistake_*` (no recovery demos)
  and `push` (the tight push strategy, `TIGHT_PUSH`): they get the expert that wrote them."""
  e = config.expert
  push = TIGHT_PUSH
  if "push" in e:
    known = {f.name for f in dataclasses.fields(PushTolerances)}
    if set(e.push) != known:
      raise ValueError(f"config.expert.push has keys {sorted(e.push)}; expected {sorted(known)}")
    push = PushTolerances(**e.push.to_dict())
  return ScriptedExpert(noise_std=e.noise_std, speed_range=tuple(e.speed_range),
                        mistake_prob=e.get("mistake_prob", 0.0),
                        mistake_distance=tuple(e.get("mistake_distance", (0.06, 0.3))),
                        mistake_steps=e.get("mistake_steps", 1), push=push,
                        **{k: e[k] for k in SLIP_KEYS if k in e})


# Rollouts are sent to workers in chunks of this many (~1.7 ms and ~0.25 MB each on 64x64 images),
# so inter-process messages cost little next to the work.
CHUNK_EPISODES = 8
# At most this many rollouts are asked for at a time: the main process (TFDS encoding) is slower
# than the workers, so a round's episodes wait in memory until written (~0.25 MB each).
MAX_ROUND_EPISODES = 256


Rollouts = Callable[[Iterable[tuple[int, str, int, int]]], Iterator[dict[str, Any]]]


@contextlib.contextmanager
def rollout_workers(config: ml_collections.ConfigDict) -> Iterator[Rollouts]:
  """Yields `rollouts(jobs)`: the episodes of attempts (index, family, env seed, expert seed), in
  job order, rolled out in `config.num_workers` processes (0 = one per CPU core, 1 = in this
  process; see `worker_pool`). The writer opens them once for all splits: starting a process
  costs about a second, which is more than a small split's rollouts."""
  with worker_pool.ordered_map(functools.partial(_episode_roller, config.to_dict()), config.get("num_workers", 0),
                               CHUNK_EPISODES) as rollouts:
    yield rollouts


def generate_episodes(config: ml_collections.ConfigDict, split: str, progress: bool = True,
                      rollouts: Rollouts | None = None) -> Iterator[tuple[int, dict]]:
  """Yields (key, episode) for a split: `num_<split>_episodes` successful expert demos.

  Families follow `family_schedule` (equal shares by cycling through them, unless the config's
  `family_weights` say otherwise). Failed demos (rare) are skipped unless `keep_failures`, so the
  dataset holds exactly the requested number of episodes: attempt `index` is rolled out as the
  family of the next episode to write, so a failed attempt's family passes to the next attempt.

  Rollouts run in `rollouts` (default: this config's `rollout_workers`, opened for this split)
  and are yielded in attempt order, so the episodes never depend on the number of workers.
  """
  count = config[f"num_{split}_episodes"]
  if count == 0:
    return
  schedule = family_schedule(TabletopEnv(**config.env.to_dict()).families, config.get("family_weights"), count)
  max_attempts = 10 * count + 100
  round_size = first_round = 2 * CHUNK_EPISODES * worker_pool.process_count(config.get("num_workers", 0))
  written, index = 0, 0
  with contextlib.ExitStack() as stack:
    if rollouts is None:
      rollouts = stack.enter_context(rollout_workers(config))
    bar = stack.enter_context(tqdm.tqdm(total=count, desc=f"{config.name}/{split}", unit="ep", disable=not progress))
    while written < count:
      if index >= max_attempts:
        raise RuntimeError(f"the expert failed too often: {written} successes in {index} episodes")
      # A round asks for the next attempts as if every one will succeed (attempt index + i gets the
      # family of episode written + i). A failure shifts the later attempts' families by one, so
      # the rest of the round is dropped and the next round starts after the failure. Rounds grow
      # while attempts succeed and shrink after a failure, which bounds the wasted rollouts.
      jobs = [(index + i, schedule[written + i], *episode_seeds(config.seed, split, index + i))
              for i in range(min(count - written, max_attempts - index, round_size))]
      round_size = min(2 * round_size, MAX_ROUND_EPISODES)
      for episode in rollouts(jobs):
        index += 1
        if not (episode["episode_metadata"]["success"] or config.keep_failures):
          round_size = first_round
          break
        yield index - 1, episode
        written += 1
        bar.update(1)


def _episode_roller(config: dict[str, Any]) -> Callable[[tuple[int, str, int, int]], dict[str, Any]]:
  """The function rolling out attempts (index, family, env seed, expert seed) of a generation config
  (as a dict, to pickle into worker processes); builds the env and expert once per process."""
  config = ml_collections.ConfigDict(config)
  env = TabletopEnv(**config.env.to_dict())
  expert = make_expert(config)

  def rollout(job: tuple[int, str, int, int]) -> dict[str, Any]:
    index, family, env_seed, expert_seed = job
    episode = rollout_episode(env, expert, env_seed, expert_seed, family)
    episode["episode_metadata"]["episode_index"] = index
    return episode

  return rollout


def family_schedule(families: Sequence[str], weights: Mapping[str, float] | None, count: int) -> list[str]:
  """The task family of each of `count` episodes: shares proportional to `weights` (None = equal).

  Deterministic and interleaved (each next episode goes to the family furthest below its share),
  so any prefix of a dataset has the intended mix, and equal weights give the plain cycle
  place, push, pick, place, … of datasets written before the weights existed.
  """
  if weights is None:
    weights = {f: 1.0 for f in families}
  weights = dict(weights.to_dict() if hasattr(weights, "to_dict") else weights)
  unknown = sorted(set(weights) - set(families))
  if unknown:
    raise ValueError(f"config.family_weights names {unknown}, which config.env.task_family does not "
                     f"generate; expected keys among {list(families)}")
  for f, w in weights.items():
    if not isinstance(w, (int, float)) or not w >= 0:
      raise ValueError(f"config.family_weights.{f}={w!r} is not valid; expected a number >= 0")
  active = [f for f in families if weights.get(f, 0) > 0]
  if not active:
    raise ValueError(f"config.family_weights={weights} gives no family a positive weight")
  done = {f: 0 for f in active}
  schedule = []
  for _ in range(count):
    family = min(active, key=lambda f: (done[f] + 1) / weights[f])  # Ties: the env's family order.
    done[family] += 1
    schedule.append(family)
  return schedule


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks a generation config before any work, with errors that name the key."""
  for key in ("num_train_episodes", "num_val_episodes"):
    if not isinstance(config[key], int) or config[key] < 0:
      raise ValueError(f"config.{key}={config[key]!r} is not valid; expected an int >= 0")
  if not config.name or "/" in config.name or config.name.startswith("."):
    raise ValueError(f"config.name={config.name!r} is not valid; expected a plain directory name")
  # Building the env and expert validates their arguments (and names the bad one).
  env = TabletopEnv(**config.env.to_dict())
  make_expert(config)
  family_schedule(env.families, config.get("family_weights"), 0)
  try:
    worker_pool.process_count(config.get("num_workers", 0))
  except ValueError as e:
    raise ValueError(f"config.{e}") from None
  if env.max_episode_steps > DEFAULT_EPISODE_STEPS * env.control_rate:
    raise ValueError(f"config.env.max_episode_steps={env.max_episode_steps} is not valid; episodes are <= "
                     f"{DEFAULT_EPISODE_STEPS} steps x config.env.control_rate ({env.control_rate})")
