"""Executing action chunks when inference takes d control steps: the strategies, in numpy.

A policy returns a chunk of H actions computed from the observation of one control step. On a real
robot that computation takes time: the chunk computed from the observation at step t becomes
available at step t + d, and until then the robot keeps executing what it already has. This module
decides, tick by tick, when to ask for a chunk, what to pass with the request, and which action to
execute — for N robots at once, on one clock — so the simulator rollout
(`vla_jax.evaluation.rollout.run_episodes`) and a robot client can share the same code. It imports
no JAX: the strategies are bookkeeping over numpy arrays.

Indexing: index i of a chunk requested at env step t is the action for env step t + i. Env steps
count executed actions; a tick on which the robot stands still ("waits") is not an env step (in
the simulator the scene does not move), so a chunk stays aligned to the scene it was computed from.

Strategies (`STRATEGIES`), with s = `execute_steps` (the execution horizon) and d the delay:
  sync         ask, stand still for d ticks (counted in `wait_steps`), then execute the chunk's first
               s actions; at d = 0 this is receding-horizon execution, today's "receding".
  naive_async  ask every s env steps from the current observation and keep executing the current
               plan; on arrival switch to the new chunk at the index of the current step (d when
               nothing starved). Nothing ties the new chunk to the actions it replaces.
  ensemble     ask every env step (at d = 0; with d > 0 as soon as the model is free) and execute
               the mean of all arrived predictions for this step, weights exp(-m · age) (ACT).
  hard         as naive_async, but the request carries the current plan's actions for steps
               t .. t+H-1 as a prefix: the sampler overwrites the frozen ones (hard inpainting).
  rtc          the same prefix, followed by guided sampling with the soft mask (Black et al. 2025).
  conditioned  the same prefix, continued by a head trained with prefix conditioning (the frozen
               actions are its input; no guidance).
For hard, rtc and conditioned the prefix Y [N, H, A] holds the plan's action for step t + i at index i where the
plan has one (zeros after), and the weights are `prefix_weights(H, d, s', xp=np)` with s' = steps
since the current plan started (= s when requests keep their schedule): 1 on the d actions that
execute while the model thinks, decaying to 0 where the plan ends. The first request of an episode
has no plan and is plain sampling.

One inference is in flight at a time (one model, one accelerator): a request that falls due while
the previous one is still running starts when it arrives. If the plan runs out before the new chunk
arrives (d too large for the plan), the robot waits, and those ticks count as `wait_steps` too.

The loop, per control tick:

    execution.receive()                       # chunks whose delay has elapsed become the plan
    if execution.wants_chunk():
      request = execution.request(delay)      # .guidance, .prefix [N, H, A], .weights [N, H]
      execution.submit(policy(obs, **request.policy_kwargs()))
    action = execution.act()                  # float32 [N, A], or None: wait this tick
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

STRATEGIES = ("sync", "naive_async", "ensemble", "hard", "rtc", "conditioned")
GUIDED = ("hard", "rtc", "conditioned")  # Strategies whose requests carry a prefix (guidance = the strategy's name).
LEGACY_NAMES = {"receding": "sync"}  # rollout's former `execution="receding"`: sync at d = 0.


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_strategy(strategy: str) -> str:
  """The strategy's canonical name ("receding" → "sync"), or a ValueError naming the choices."""
  name = LEGACY_NAMES.get(strategy, strategy)
  if name not in STRATEGIES:
    raise ValueError(f"strategy={strategy!r} is not valid; expected one of {list(STRATEGIES)}")
  return name


class DelaySampler:
  """The inference delay in control steps: fixed, or drawn per inference from a distribution.

  Args:
    delay: the fixed delay d ≥ 0 (used when `distribution` is empty).
    distribution: ((d, probability), ...) — probabilities ≥ 0 summing to 1; empty for fixed.
    seed: seeds the draws (numpy's default generator), so an evaluation is reproducible.
  """

  def __init__(self, delay: int = 0, distribution: Sequence[Sequence[float]] = (), seed: int = 0):
    if not _is_int(delay) or delay < 0:
      raise ValueError(f"delay={delay!r} is not valid; expected an int >= 0 (control steps)")
    distribution = tuple(tuple(entry) for entry in (distribution or ()))
    if distribution and delay:
      raise ValueError(f"delay={delay} and delay_distribution={distribution} are both set; give one of them")
    if distribution:
      bad = [e for e in distribution if len(e) != 2 or not _is_int(e[0]) or e[0] < 0
             or not isinstance(e[1], (int, float)) or not math.isfinite(e[1]) or e[1] < 0]
      if bad:
        raise ValueError(f"delay_distribution entries {bad} are not valid; expected (delay int >= 0, "
                         "probability >= 0) pairs")
      total = sum(p for _, p in distribution)
      if abs(total - 1.0) > 1e-6:
        raise ValueError(f"delay_distribution={distribution}: probabilities sum to {total:.6g}; expected 1")
    self.delays = np.array([d for d, _ in distribution] or [delay], np.int64)
    self.probabilities = np.array([p for _, p in distribution] or [1.0], np.float64)
    self.rng = np.random.default_rng(seed)

  @property
  def fixed(self) -> bool:
    return len(self.delays) == 1

  def __call__(self) -> int:
    if self.fixed:
      return int(self.delays[0])
    return int(self.rng.choice(self.delays, p=self.probabilities / self.probabilities.sum()))


@dataclasses.dataclass
class Request:
  """What to ask the policy for at this tick.

  guidance: None (plain sampling) or "hard" | "rtc" (the policy's `guidance=` argument).
  prefix: float32 [N, H, A] env units, index i = the current plan's action for step t + i; or None.
  weights: float32 [N, H], the soft mask (1: frozen, 0: free); or None.
  delay: d, the ticks until the chunk arrives.
  """

  guidance: str | None
  prefix: np.ndarray | None
  weights: np.ndarray | None
  delay: int

  def policy_kwargs(self) -> dict[str, Any]:
    """Keyword arguments for `JaxPolicy` / `OnnxPolicy.__call__` ({} for plain sampling)."""
    if self.guidance is None:
      return {}
    return {"guidance": self.guidance, "prefix": self.prefix, "weights": self.weights}


@dataclasses.dataclass
class _InFlight:
  request_step: int  # Env step of the observation the chunk was computed from (its index 0).
  arrival_tick: int
  chunk: np.ndarray | None = None  # [N, H, A]; None until submitted.


def ensemble_mean(history: Sequence[tuple[int, np.ndarray]], step: int, decay: float) -> np.ndarray | None:
  """Weighted mean of every prediction for `step` in `history` ((start step, chunk [N, H, A]) pairs,
  oldest first), weights exp(-decay · age); None when no chunk covers the step."""
  preds, weights = [], []
  for start, chunk in history:
    age = step - start
    if 0 <= age < chunk.shape[1]:
      preds.append(chunk[:, age])
      weights.append(np.exp(-decay * age))
  if not preds:
    return None
  w = np.asarray(weights, np.float32)[:, None, None]
  return (np.stack(preds) * w).sum(0) / w.sum()


def align_prefix(plan: np.ndarray, offset: int, delay: int) -> tuple[np.ndarray, np.ndarray]:
  """A plan [N, H, A] whose index 0 was `offset` steps ago, aligned to a chunk requested now:
  (Y float32 [N, H, A], the plan's action for step t + i at index i, zeros where the plan ends;
  W float32 [N, H], the soft mask with min(delay, planned) frozen actions). Shared by the simulator's
  strategies and the robot client's (`vla_jax.serving.chunking`)."""
  # Imported here, not at the top: the mask is the model's (one definition), but its module imports
  # JAX, which the strategies (and a JAX-free robot client using sync, naive_async or ensemble)
  # must not need.
  from vla_jax.models.heads.realtime import prefix_weights

  horizon = plan.shape[1]
  planned = int(np.clip(horizon - offset, 0, horizon))  # Plan entries for steps t .. t+H-1.
  prefix = np.zeros_like(plan, dtype=np.float32)
  prefix[:, :planned] = plan[:, offset:offset + planned]
  w = prefix_weights(horizon, min(delay, planned), horizon - planned, xp=np)
  return prefix, np.broadcast_to(w, prefix.shape[:2]).astype(np.float32)


class ChunkExecution:
  """One strategy's chunk bookkeeping for N robots on one clock (see the module docstring).

  Args:
    strategy: one of `STRATEGIES` ("receding" is accepted as "sync").
    action_horizon: H, the chunk length.
    execute_steps: s, actions executed per inference (sync) or env steps between requests (async,
      hard, rtc); None = H; clipped to H (a policy with a shorter chunk re-plans sooner).
    ensemble_decay: m in the ensemble's weights exp(-m · age).

  Counters (per episode, since `reset`): `ticks`, `steps` (actions executed), `wait_steps` (ticks
  standing still), `requests`; `switched` says whether the last action came from a different chunk
  than the one before it (for the ensemble: a chunk joined the mean) — a chunk boundary.
  """

  def __init__(self, strategy: str, action_horizon: int, execute_steps: int | None = None,
               ensemble_decay: float = 0.0):
    self.strategy = check_strategy(strategy)
    if not _is_int(action_horizon) or action_horizon < 1:
      raise ValueError(f"action_horizon={action_horizon!r} is not valid; expected an int >= 1")
    if execute_steps is not None and (not _is_int(execute_steps) or execute_steps < 1):
      raise ValueError(f"execute_steps={execute_steps!r} is not valid; expected an int >= 1 or None (the whole chunk)")
    if (isinstance(ensemble_decay, bool) or not isinstance(ensemble_decay, (int, float))
        or not math.isfinite(ensemble_decay) or ensemble_decay < 0):
      raise ValueError(f"ensemble_decay={ensemble_decay!r} is not valid; expected a finite number >= 0")
    self.horizon = int(action_horizon)
    self.execute_steps = min(self.horizon, int(execute_steps) if execute_steps is not None else self.horizon)
    self.ensemble_decay = float(ensemble_decay)
    self.reset()

  def reset(self) -> None:
    """Starts new episodes: no plan, nothing in flight, counters at 0."""
    self.ticks = self.steps = self.wait_steps = self.requests = 0
    self.switched = False
    self._plan: np.ndarray | None = None  # [N, H, A]; index i = env step plan_start + i.
    self._plan_start = 0
    self._history: list[tuple[int, np.ndarray]] = []  # Ensemble: (start step, chunk), oldest first.
    self._in_flight: _InFlight | None = None
    self._last_request_step: int | None = None
    self._last_source: int | None = None  # Start step of the chunk the last action came from.
    self._arrived = False  # Ensemble: a chunk joined since the last action.

  # ---- Requests. ----------------------------------------------------------------------------------

  def receive(self) -> None:
    """Makes the chunk in flight the plan once its delay has elapsed (at tick request + d)."""
    flight = self._in_flight
    if flight is None or flight.chunk is None or flight.arrival_tick > self.ticks:
      return
    self._in_flight = None
    if self.strategy == "ensemble":
      self._history.append((flight.request_step, flight.chunk))
      self._history = [(s, c) for s, c in self._history if self.steps - s < c.shape[1]]
      self._arrived = True
    else:
      self._plan, self._plan_start = flight.chunk, flight.request_step

  def wants_chunk(self) -> bool:
    """Whether to start an inference at this tick, from the current observation."""
    if self._in_flight is not None:
      return False
    if self._last_request_step is None:
      return True
    since = self.steps - self._last_request_step
    if self.strategy == "ensemble":
      return since >= 1
    return since >= self.execute_steps

  def request(self, delay: int) -> Request:
    """Starts an inference whose chunk arrives `delay` ticks from now; `submit` its chunk next."""
    if not _is_int(delay) or delay < 0:
      raise ValueError(f"delay={delay!r} is not valid; expected an int >= 0 (control steps)")
    if self._in_flight is not None:
      raise RuntimeError("ChunkExecution.request: an inference is already in flight; wait for wants_chunk()")
    self._in_flight = _InFlight(request_step=self.steps, arrival_tick=self.ticks + int(delay))
    self._last_request_step = self.steps
    self.requests += 1
    if self.strategy not in GUIDED or self._plan is None:
      return Request(None, None, None, int(delay))
    prefix, weights = self.prefix(int(delay))
    return Request(self.strategy, prefix, weights, int(delay))

  def prefix(self, delay: int) -> tuple[np.ndarray, np.ndarray]:
    """The current plan aligned to a chunk requested now: (Y float32 [N, H, A], W float32 [N, H])."""
    return align_prefix(self._plan, self.steps - self._plan_start, delay)

  def submit(self, chunk: np.ndarray) -> None:
    """The chunk (float32 [N, H, A]) for the request just made; it arrives after its delay."""
    if self._in_flight is None or self._in_flight.chunk is not None:
      raise RuntimeError("ChunkExecution.submit: no request waiting for its chunk; call request(delay) first")
    chunk = np.asarray(chunk)
    if chunk.ndim != 3 or chunk.shape[1] != self.horizon:
      raise ValueError(f"chunk has shape {chunk.shape}; expected [N, {self.horizon}, A]")
    self._in_flight.chunk = chunk

  # ---- Acting. ------------------------------------------------------------------------------------

  def act(self) -> np.ndarray | None:
    """This tick's action float32 [N, A], or None: the robot waits (stands still) this tick."""
    self.receive()
    self.ticks += 1
    if self.strategy == "ensemble":
      action, source = ensemble_mean(self._history, self.steps, self.ensemble_decay), None
      switched = self._arrived and self.steps > 0
    else:
      action, source = None, self._plan_start
      index = self.steps - self._plan_start
      limit = self.execute_steps if self.strategy == "sync" else self.horizon
      if self._plan is not None and index < limit:
        action = self._plan[:, index]
      switched = action is not None and self._last_source is not None and source != self._last_source
    if action is None:
      self.wait_steps += 1
      return None
    self.switched = bool(switched)
    self._last_source, self._arrived = source, False
    self.steps += 1
    return np.asarray(action, np.float32)
