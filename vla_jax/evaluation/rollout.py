"""Batched closed-loop rollouts in the built-in simulator, with action-chunk execution.

Two ways to execute the [H, A] chunks a policy predicts (`execution=`):
  * "receding": query the policy every `execute_steps` (k <= H) steps and play the first k actions
    of the chunk — k = H is open-loop chunking, k = 1 is fully closed-loop;
  * "ensemble": query every step and act with the weighted mean of all predictions made for the
    current step by the last H chunks (temporal ensembling, as in ACT), weights exp(-m * age) so
    older predictions count less when m > 0.
The policy is queried for all N envs at once; finished envs are frozen by the vector env.

Instructions a person typed (`instruction_override=` a string or one per seed) are grounded in each
seeded scene by the env (`tabletop.with_instruction`); an episode whose text names no task in its
scene still runs, but reports `judgeable=False` (and never success) with the env's note on why.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from vla_jax.envs import VectorTabletopEnv
from vla_jax.evaluation.policies import ChunkPolicy

EXECUTIONS = ("receding", "ensemble")


@dataclasses.dataclass
class EpisodeResult:
  seed: int
  family: str
  split: str
  instruction: str  # What the policy was told (differs from the task in the language-blind ablation).
  task_instruction: str  # The task that success is measured on.
  success: bool
  length: int
  frames: list[np.ndarray] | None = None
  judgeable: bool = True  # False: a typed instruction named no task in the scene; success is then False.
  grounding_note: str = ""  # How a typed instruction was read, or why it cannot be judged ("" otherwise).


def _ensemble(history: list[tuple[int, np.ndarray]], t: int, m: float) -> np.ndarray:
  """Mean of every stored prediction for step t; `history` holds (query step, chunk [N, H, A])."""
  preds, weights = [], []
  for start, chunk in history:
    age = t - start
    if 0 <= age < chunk.shape[1]:
      preds.append(chunk[:, age])
      weights.append(np.exp(-m * age))
  w = np.asarray(weights, np.float32)[:, None, None]
  return (np.stack(preds) * w).sum(0) / w.sum()


def run_episodes(
    policy: ChunkPolicy,
    seeds: Sequence[int],
    *,
    family: str,
    split: str,
    num_envs: int = 32,
    image_size: int = 64,
    max_episode_steps: int = 100,
    execution: str = "receding",
    execute_steps: int | None = None,
    ensemble_decay: float = 0.0,
    instruction_override: str | Sequence[str] | None = None,
    record_frames: int = 0,
) -> list[EpisodeResult]:
  """Runs one episode per seed (in batches of `num_envs`) and returns their results.

  instruction_override: None (the scene's own instruction); "shuffled" — each env is told the
    instruction of another env in its batch (the language-blind ablation); any other string — an
    instruction typed by a person, given to every episode; or a sequence of one such string per
    seed. Typed text replaces the task it names in each scene (`EpisodeResult.family` and
    `task_instruction` are then the typed task); see `judgeable` and `grounding_note`.
  record_frames: keep the rendered frames of the first this-many episodes (for videos).
  """
  if execution not in EXECUTIONS:
    raise ValueError(f"execution={execution!r} is not valid; expected one of {list(EXECUTIONS)}")
  horizon = policy.action_horizon
  k = horizon if execute_steps is None else int(execute_steps)
  if k < 1:
    raise ValueError(f"execute_steps={k} is not valid; expected >= 1")
  k = min(k, horizon)  # A policy with a shorter chunk (e.g. the expert, H = 1) re-plans sooner.
  typed = _typed_instructions(instruction_override, len(seeds))
  results: list[EpisodeResult] = []
  for begin in range(0, len(seeds), num_envs):
    batch_seeds = list(seeds[begin : begin + num_envs])
    venv = VectorTabletopEnv(len(batch_seeds), task_family=family, split=split, image_size=image_size,
                             max_episode_steps=max_episode_steps)
    options = None if typed is None else [{"instruction": text} for text in typed[begin : begin + num_envs]]
    obs, infos = venv.reset(batch_seeds, options)
    tasks = [info["instruction"] for info in infos]
    told = _derange(tasks) if instruction_override == "shuffled" else list(tasks)
    policy.reset(told, venv.scenes)
    keep = max(0, min(record_frames - begin, len(batch_seeds)))
    frames = [[obs["image"][i]] for i in range(keep)]
    history: list[tuple[int, np.ndarray]] = []
    t = 0
    chunk, chunk_start = None, 0
    while not venv.done.all():
      if execution == "ensemble":
        history.append((t, policy(obs, venv.scenes)))
        history = history[-horizon:]
        action = _ensemble(history, t, ensemble_decay)
      else:
        if chunk is None or t - chunk_start >= k:
          chunk, chunk_start = policy(obs, venv.scenes), t
        elif hasattr(policy, "observe"):
          policy.observe(obs)  # Keep the observation window current between queries.
        action = chunk[:, t - chunk_start]
      was_done = venv.done.copy()
      obs, _, _, _, _ = venv.step(np.asarray(action, np.float32))
      t += 1
      for i in range(keep):
        if not was_done[i]:
          frames[i].append(obs["image"][i])
    for i, seed in enumerate(batch_seeds):
      results.append(EpisodeResult(
          seed=int(seed), family=venv.scenes[i].family, split=split, instruction=told[i], task_instruction=tasks[i],
          success=bool(venv.success[i]), length=int(venv.lengths[i]), frames=frames[i] if i < keep else None,
          judgeable=bool(infos[i]["judgeable"]), grounding_note=infos[i]["grounding_note"],
      ))
  return results


def _typed_instructions(override: str | Sequence[str] | None, num_episodes: int) -> list[str] | None:
  """One typed instruction per episode from `instruction_override`, or None (none typed)."""
  if override is None or override == "shuffled":
    return None
  if isinstance(override, str):
    return [override] * num_episodes
  if isinstance(override, (list, tuple)) and all(isinstance(t, str) for t in override):
    if len(override) != num_episodes:
      raise ValueError(f"instruction_override has {len(override)} instructions for {num_episodes} seeds; "
                       "expected one per seed (or one string for all)")
    return list(override)
  raise ValueError(f"instruction_override={override!r} is not valid; expected None, 'shuffled', "
                   "an instruction string or a list of one per seed")


def _derange(items: list[str]) -> list[str]:
  """Each item replaced by one for a different task (a rotation; identical texts skipped past)."""
  n = len(items)
  if n < 2:
    return list(items)
  out = []
  for i in range(n):
    for shift in range(1, n):
      candidate = items[(i + shift) % n]
      if candidate != items[i]:
        out.append(candidate)
        break
    else:
      out.append(items[i])
  return out
