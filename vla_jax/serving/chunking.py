"""Executing action chunks in a robot loop that runs at a fixed rate.

    executor = ChunkExecutor(RemoteSource(PolicyClient(url)), action_horizon=H,
                             config=ChunkingConfig(mode="async", refill_threshold=2))
    executor.reset("push the red block to the left")
    while running:                                   # one iteration per control tick
      action = executor.act({"image": rgb_uint8_SxSx3, "state": state_float32_D})   # float32 [A]
      robot.apply(action)
    executor.close()

A policy predicts a chunk of H actions (float32 [H, A], env units) from the observation of one
tick; the executor decides which observations to ask about and which action to execute at each
tick. Every tick's frame reaches the policy's observation window exactly once and in order —
observe-only (`ChunkSource.observe`) on the ticks that ask for no chunk — so a policy with a window
of T > 1 frames sees what it sees in process.

Modes (`ChunkingConfig.mode`):
  receding  ask every k = `execute_steps` ticks (default H) and execute the chunk's first k actions;
            the same actions as `vla_jax.evaluation.rollout.run_episodes(execution="receding")`.
  ensemble  ask every tick; execute the weighted mean of every prediction for this tick made by the
            last H chunks, weights exp(-ensemble_decay * age) (ACT's temporal ensembling); the same
            actions as run_episodes(execution="ensemble").
  async     a background thread owns the source and asks for a new chunk, for the latest
            observation, whenever the queue holds ≤ `refill_threshold` actions after this tick's
            (as LeRobot's asynchronous inference does), so the robot keeps executing the current
            chunk while the next is computed.

Timing model. A tick is one `act()` call; the robot calls it at its own rate and executes what it
returns at once. In receding and ensemble mode `act()` calls the source itself: at a query tick the
robot waits for the whole request (send → reply, `request_latency_ms`) — each such tick counts as a
starved tick — and between queries it waits only for the observe-only round trip. In async mode
`act()` never talks to the source: it hands the frame to the worker thread and returns an action
from the queue at once, so the request latency is hidden as long as it is shorter than the
`refill_threshold` ticks the queue still holds; if the queue runs dry, `act()` waits for the reply
in flight (a starved tick, its wait in `starved_wait_ms`).

Real-time chunking (async with `ChunkingConfig.guidance` "hard" | "rtc" | "conditioned"). Each
request carries the queue's plan aligned to the request's tick (`vla_jax.inference.execution.
align_prefix`, as the simulator's strategies build it) and the soft mask whose frozen part covers
the ticks that execute while the server thinks: `guided_delay` ticks, or by default the largest
delay (at least 1) measured over the last 4 replies (ticks executed between a request's tick and its reply;
each reply's is in `stats()["delay_ticks"]`). The server must list the mode in its metadata.

Alignment and stale replies (async). The chunk computed from the observation of tick t holds the
actions for ticks t, t+1, ..., t+H-1. If it arrives when tick t' is next to execute, it replaces
the queue from its index t'-t on: actions for ticks already executed are skipped, never executed
late. A reply is dropped (and counted in `stale_replies_dropped`) when it belongs to an episode
that `reset()` has ended, when it is not newer than the chunk the queue already holds, or when all
its ticks are past — a reply for an old observation is never executed as new. (Over one connection
the server answers in order, so late replies to a request a client gave up on are dropped by
`PolicyClient` through request ids before they reach this check.)
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import time
from typing import Any, Protocol

import numpy as np

from vla_jax.inference.execution import GUIDED, align_prefix, ensemble_mean
from vla_jax.inference.window import policy_observation, robot_fields
from vla_jax.serving.client import PolicyClient

logger = logging.getLogger(__name__)

MODES = ("receding", "ensemble", "async")
DELAY_MEMORY = 4  # Replies whose measured delay sets the next request's frozen prefix.
OBSERVATION_KEYS = ("image", "state")  # At least; a multi-camera policy's robot adds image_<camera>.


def robot_observation(observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The keys of one robot's observation a policy may read: its frames ("image", "image_<camera>")
  and "state"."""
  return {k: v for k, v in observation.items() if k == "state" or k == "image" or k.startswith("image_")}


@dataclasses.dataclass(frozen=True)
class ChunkingConfig:
  """How a `ChunkExecutor` executes chunks (see the module docstring).

  mode: "receding" | "ensemble" | "async".
  execute_steps: receding: actions executed per chunk, k (default H; clipped to H as in rollout).
  refill_threshold: async: ask for the next chunk when at most this many actions are queued after
    the current tick's (default H // 2; must be < H).
  ensemble_decay: ensemble: m in the weights exp(-m * age) (0: plain mean; > 0: older predictions
    count less).
  guidance: async: None, or "hard" | "rtc" | "conditioned" — requests carry the current plan as a
    prefix for real-time chunking (module docstring).
  guided_delay: with guidance: the frozen actions d per request; None = the measured delay.
  """

  mode: str = "receding"
  execute_steps: int | None = None
  refill_threshold: int | None = None
  ensemble_decay: float = 0.0
  guidance: str | None = None
  guided_delay: int | None = None

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"ChunkingConfig.mode={self.mode!r} is not valid; expected one of {list(MODES)}")
    if self.guidance is not None and (self.guidance not in GUIDED or self.mode != "async"):
      raise ValueError(f"ChunkingConfig.guidance={self.guidance!r} is not valid with mode={self.mode!r}; expected "
                       f"None, or one of {list(GUIDED)} with mode='async'")
    if self.guided_delay is not None and (not _is_int(self.guided_delay) or self.guided_delay < 0):
      raise ValueError(f"ChunkingConfig.guided_delay={self.guided_delay!r} is not valid; expected an int >= 0 "
                       "or None (measured)")
    if self.execute_steps is not None and (not _is_int(self.execute_steps) or self.execute_steps < 1):
      raise ValueError(f"ChunkingConfig.execute_steps={self.execute_steps!r} is not valid; expected an int >= 1 "
                       "or None (the whole chunk)")
    if self.refill_threshold is not None and (not _is_int(self.refill_threshold) or self.refill_threshold < 0):
      raise ValueError(f"ChunkingConfig.refill_threshold={self.refill_threshold!r} is not valid; expected an int "
                       ">= 0 or None (half the chunk)")
    if (isinstance(self.ensemble_decay, bool) or not isinstance(self.ensemble_decay, (int, float))
        or not math.isfinite(self.ensemble_decay) or self.ensemble_decay < 0):
      raise ValueError(f"ChunkingConfig.ensemble_decay={self.ensemble_decay!r} is not valid; expected a finite "
                       "number >= 0")


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# ---- Sources: where chunks come from. -------------------------------------------------------------


class ChunkSource(Protocol):
  """One robot's policy, a frame at a time. Called from one thread only.

  observation: {"image": uint8 [S, S, 3], "state": float32 [D]} (one robot, no batch axis), and
  "image_<camera>" frames for a policy with more cameras (the server's metadata lists them).
  """

  action_horizon: int

  def reset(self, prompt: str) -> None:
    """Starts an episode: the next frame is the first of the window."""

  def observe(self, observation: dict[str, np.ndarray]) -> None:
    """Pushes the frame into the policy's window, no inference."""

  def infer(self, observation: dict[str, np.ndarray], **guided: np.ndarray | str) -> np.ndarray:
    """Pushes the frame and returns the chunk for it: float32 [H, A], env units. guided: {} or
    guidance=str, prefix=float32 [H, A], weights=float32 [H] (real-time chunking)."""

  def close(self) -> None:
    ...


class RemoteSource:
  """A policy server through a `PolicyClient` (observe-only requests between queries, request ids,
  and the client's reconnect with window replay)."""

  def __init__(self, client: PolicyClient):
    if not client.supports_request_ids:
      raise ValueError(f"the server at {client.url} ({client.metadata.get('protocol')}) does not advertise "
                       "'request_id' and 'infer' in its metadata's observation map; chunk execution needs "
                       "observe-only requests to keep the server's window fed")
    self.client = client
    self.action_horizon = int(client.metadata["action_horizon"])
    # Real-time chunking modes the server can sample (absent: none).
    self.guidance_modes = tuple(client.metadata["observation"].get("guidance", {}).get("choices", ()))
    # The frames each request carries: those the metadata lists (each entry names its camera).
    self.frames = [k for k, v in client.metadata["observation"].items() if isinstance(v, dict) and "camera" in v]
    self._prompt: str | None = None
    self._new_episode = False
    self.last_reply: dict[str, Any] | None = None  # The last inference reply (timings, episode step).

  def reset(self, prompt: str) -> None:
    if not isinstance(prompt, str) or not prompt:
      raise ValueError(f"prompt must be a non-empty str, got {prompt!r}")
    self._prompt, self._new_episode = prompt, True

  def _request(self, observation: dict[str, np.ndarray], infer: bool, guided: dict | None = None) -> dict[str, Any]:
    if self._prompt is None:
      raise RuntimeError("RemoteSource: reset(prompt) before the first observation")
    request = {**robot_fields(observation, self.frames, "the server's policy"), "prompt": self._prompt}
    if guided:
      request.update(guidance=guided["guidance"], prefix_actions=np.asarray(guided["prefix"], np.float32),
                     prefix_weights=np.asarray(guided["weights"], np.float32))
    if self._new_episode:
      request["new_episode"] = True
    reply = self.client.infer(request) if infer else self.client.observe(request)
    self._new_episode = False
    return reply

  def observe(self, observation: dict[str, np.ndarray]) -> None:
    self._request(observation, infer=False)

  def infer(self, observation: dict[str, np.ndarray], **guided) -> np.ndarray:
    self.last_reply = self._request(observation, infer=True, guided=guided)
    return self.last_reply["actions"]

  def close(self) -> None:
    self.client.close()

  def stats(self) -> dict[str, int]:
    return {"reconnects": self.client.reconnects, "late_replies_dropped": self.client.late_replies_dropped}


class LocalSource:
  """An in-process `ChunkPolicy` (JaxPolicy, OnnxPolicy) at batch size 1: no network, same calls as
  `run_episodes` makes. The source drives `policy` itself (pass `policy.new_session()` to keep a
  shared policy's episode state untouched). A policy without `observe()` keeps no window: its
  observe-only frames are dropped."""

  def __init__(self, policy: Any):
    self.policy = policy
    self.action_horizon = int(policy.action_horizon)

  def reset(self, prompt: str) -> None:
    self.policy.reset([prompt], None)  # Learned policies ignore the simulator's scenes.

  def _batch(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return policy_observation(self.policy, observation)

  def observe(self, observation: dict[str, np.ndarray]) -> None:
    self.policy.observe(self._batch(observation))

  def infer(self, observation: dict[str, np.ndarray], **guided) -> np.ndarray:
    if guided:
      guided = {"guidance": guided["guidance"], "prefix": np.asarray(guided["prefix"], np.float32)[None],
                "weights": np.asarray(guided["weights"], np.float32)[None]}
    return np.asarray(self.policy(self._batch(observation), None, **guided))[0]

  def close(self) -> None:
    pass


# ---- The executor. --------------------------------------------------------------------------------


@dataclasses.dataclass
class _Frame:
  """A tick's frame waiting for the async worker; `infer` may be switched on until it is sent."""

  episode: int
  tick: int
  observation: dict[str, np.ndarray]
  infer: bool


@dataclasses.dataclass
class _Reset:
  episode: int
  prompt: str


class ChunkExecutor:
  """Turns a `ChunkSource`'s chunks into one action per control tick (see the module docstring).

  Args:
    source: `RemoteSource(PolicyClient(url))`, `LocalSource(policy)` or any `ChunkSource`; the
      executor owns it (in async mode its worker thread is the only caller) and closes it.
    action_horizon: H, the chunk length the source returns.
    config: a `ChunkingConfig`.
  """

  def __init__(self, source: ChunkSource, action_horizon: int, config: ChunkingConfig):
    if not _is_int(action_horizon) or action_horizon < 1:
      raise ValueError(f"action_horizon={action_horizon!r} is not valid; expected an int >= 1")
    if not isinstance(config, ChunkingConfig):
      raise TypeError(f"config must be a ChunkingConfig, got {type(config).__name__}")
    source_horizon = getattr(source, "action_horizon", action_horizon)
    if source_horizon != action_horizon:
      raise ValueError(f"action_horizon={action_horizon}, but the source returns chunks of {source_horizon} actions")
    modes = getattr(source, "guidance_modes", None)
    if config.guidance is not None and modes is not None and config.guidance not in modes:
      raise ValueError(f"ChunkingConfig.guidance={config.guidance!r}, but the policy server can sample only "
                       f"{list(modes)} (its metadata's observation.guidance.choices)")
    self.source, self.config = source, config
    self.horizon = int(action_horizon)
    self.execute_steps = min(config.execute_steps or self.horizon, self.horizon)
    self.refill_threshold = self.horizon // 2 if config.refill_threshold is None else int(config.refill_threshold)
    if config.mode == "async" and self.refill_threshold >= self.horizon:
      raise ValueError(f"ChunkingConfig.refill_threshold={self.refill_threshold} is not valid for chunks of "
                       f"{self.horizon} actions; expected 0 <= refill_threshold < action_horizon")
    self._stats: dict[str, Any] = {"ticks": 0, "requests": 0, "observed": 0, "episodes": 0, "starved_ticks": 0,
                                   "stale_replies_dropped": 0, "request_latency_ms": [], "starved_wait_ms": [],
                                   "delay_ticks": [], "dropped": collections.Counter()}
    self._episode = 0  # 0: no episode yet.
    self._closed = False
    self._cv = threading.Condition()
    # Receding / ensemble: the current chunk and the tick it was asked for; the ensemble's history.
    self._tick = 0
    self._chunk: np.ndarray | None = None
    self._chunk_tick = 0
    self._history: collections.deque[tuple[int, np.ndarray]] = collections.deque(maxlen=self.horizon)
    # Async: frames and resets for the worker, in order; `_executed` ticks' actions have been taken;
    # `_requested_tick` is the tick of this episode's unanswered inference request (None: none).
    self._jobs: collections.deque[_Frame | _Reset] = collections.deque()
    self._executed = 0
    self._requested_tick: int | None = None
    self._error: BaseException | None = None
    self._worker: threading.Thread | None = None
    if config.mode == "async":
      self._worker = threading.Thread(target=self._work, name="vla-chunk-executor", daemon=True)
      self._worker.start()

  # ---- Public API. --------------------------------------------------------------------------------

  def reset(self, prompt: str) -> None:
    """Starts an episode with `prompt`: queued actions are dropped, a reply still in flight is stale."""
    if not isinstance(prompt, str) or not prompt:
      raise ValueError(f"prompt must be a non-empty str (the instruction), got {prompt!r}")
    with self._cv:
      self._check_usable()
      self._episode += 1
      self._stats["episodes"] += 1
      self._tick = self._executed = self._chunk_tick = 0
      self._chunk, self._requested_tick = None, None
      self._history.clear()
      if self._worker is not None:
        # Unsent frames of the ended episode would only go into a window about to be reset.
        self._jobs.clear()
        self._jobs.append(_Reset(self._episode, prompt))
        self._cv.notify_all()
        return
    self.source.reset(prompt)

  def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
    """This tick's observation {image uint8 [S, S, 3], state float32 [D]} (and image_<camera> per
    further camera of the policy) → the action to execute now, float32 [A] (env units)."""
    if not isinstance(observation, dict) or any(k not in observation for k in OBSERVATION_KEYS):
      got = sorted(observation) if isinstance(observation, dict) else type(observation).__name__
      raise ValueError(f"act(observation): expected a dict with keys {list(OBSERVATION_KEYS)}, got {got}")
    with self._cv:
      self._check_usable()
      if self._episode == 0:
        raise RuntimeError("ChunkExecutor: reset(prompt) before the first act()")
    if self.config.mode == "async":
      action = self._act_async(observation)
    elif self.config.mode == "ensemble":
      action = self._act_ensemble(observation)
    else:
      action = self._act_receding(observation)
    with self._cv:
      self._stats["ticks"] += 1
    return action

  def stats(self) -> dict[str, Any]:
    """Counters since construction: ticks, requests (inference), observed (observe-only frames),
    episodes, starved_ticks, stale_replies_dropped (by reason in `dropped`), request_latency_ms,
    starved_wait_ms and (async) delay_ticks — ticks executed while each reply was computed — (lists),
    and the source's own counters under `source` when it has them."""
    with self._cv:
      out = {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
             for k, v in self._stats.items()}
    out["mode"] = self.config.mode
    if hasattr(self.source, "stats"):
      out["source"] = self.source.stats()
    return out

  def close(self) -> None:
    """Stops the worker thread and closes the source. Idempotent."""
    with self._cv:
      if self._closed:
        return
      self._closed = True
      self._cv.notify_all()
    try:
      self.source.close()  # Unblocks a worker waiting for a reply.
    finally:
      if self._worker is not None:
        self._worker.join(timeout=30)
        if self._worker.is_alive():
          logger.warning("the chunk executor's worker thread did not stop within 30 s")

  def __enter__(self) -> "ChunkExecutor":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  # ---- Synchronous modes. ---------------------------------------------------------------------------

  def _infer_now(self, observation: dict[str, np.ndarray]) -> np.ndarray:
    start = time.perf_counter()
    chunk = self._check_chunk(self.source.infer(observation))
    latency_ms = (time.perf_counter() - start) * 1e3
    self._stats["requests"] += 1
    self._stats["request_latency_ms"].append(latency_ms)
    self._stats["starved_ticks"] += 1  # The robot waited for this reply.
    self._stats["starved_wait_ms"].append(latency_ms)
    return chunk

  def _act_receding(self, observation: dict[str, np.ndarray]) -> np.ndarray:
    t = self._tick
    if self._chunk is None or t - self._chunk_tick >= self.execute_steps:
      self._chunk, self._chunk_tick = self._infer_now(observation), t
    else:
      self.source.observe(observation)  # Keep the window current between queries.
      self._stats["observed"] += 1
    self._tick += 1
    return self._chunk[t - self._chunk_tick].copy()

  def _act_ensemble(self, observation: dict[str, np.ndarray]) -> np.ndarray:
    t = self._tick
    self._history.append((t, self._infer_now(observation)))
    self._tick += 1
    # The simulator's ensemble (one robot here): the chunk just asked for always covers tick t.
    mean = ensemble_mean([(start, chunk[None]) for start, chunk in self._history], t, self.config.ensemble_decay)
    return mean[0].astype(np.float32)

  def _check_chunk(self, chunk: Any) -> np.ndarray:
    chunk = np.asarray(chunk)
    if chunk.ndim != 2 or chunk.shape[0] != self.horizon:
      raise ValueError(f"the source returned actions of shape {list(chunk.shape)}; expected "
                       f"[{self.horizon}, action_dim] (one chunk, action_horizon={self.horizon})")
    return chunk.astype(np.float32, copy=False)

  # ---- Async mode: the robot thread. ------------------------------------------------------------------

  def _check_usable(self) -> None:
    if self._closed:
      raise RuntimeError("ChunkExecutor is closed")
    if self._error is not None:
      raise RuntimeError(f"the chunk source failed ({type(self._error).__name__}: {self._error}); "
                         "this executor cannot continue") from self._error

  def _covers(self, tick: int) -> bool:
    return self._chunk is not None and self._chunk_tick <= tick < self._chunk_tick + self.horizon

  def _queued(self) -> int:
    """Actions queued for the ticks not executed yet."""
    return 0 if self._chunk is None else max(0, self._chunk_tick + self.horizon - self._executed)

  def _act_async(self, observation: dict[str, np.ndarray]) -> np.ndarray:
    # Copies: the frame may wait for the worker while the robot reuses its buffers.
    frame = {k: np.array(v) for k, v in robot_observation(observation).items()}
    with self._cv:
      t = self._executed
      action = None
      if self._covers(t):
        action = self._chunk[t - self._chunk_tick].copy()
        self._executed = t + 1
      infer = self._requested_tick is None and self._queued() <= self.refill_threshold
      if infer:
        self._requested_tick = t
      self._jobs.append(_Frame(self._episode, t, frame, infer))
      self._cv.notify_all()
      if action is not None:
        return action
      self._stats["starved_ticks"] += 1
      start = time.perf_counter()
      while not self._covers(t):
        self._check_usable()
        if self._requested_tick is None:
          self._request_refill()
          if self._requested_tick is None:  # Cannot happen: this tick's frame is queued or answered.
            raise RuntimeError(f"ChunkExecutor: tick {t} has no action and no request that could bring one")
        self._cv.wait()
      self._stats["starved_wait_ms"].append((time.perf_counter() - start) * 1e3)
      self._executed = t + 1
      return self._chunk[t - self._chunk_tick].copy()

  def _request_refill(self) -> None:
    """Asks for a chunk with the newest frame not sent yet, if there is one (lock held)."""
    if self._jobs and isinstance(self._jobs[-1], _Frame) and self._jobs[-1].episode == self._episode:
      self._jobs[-1].infer = True
      self._requested_tick = self._jobs[-1].tick

  # ---- Async mode: the worker thread. -----------------------------------------------------------------

  def _work(self) -> None:
    while True:
      with self._cv:
        while not self._jobs and not self._closed:
          self._cv.wait()
        if self._closed:
          return
        job = self._jobs.popleft()
        infer = isinstance(job, _Frame) and job.infer  # Fixed from here on: the frame is being sent.
      try:
        if isinstance(job, _Reset):
          self.source.reset(job.prompt)
          continue
        if not infer:
          self.source.observe(job.observation)
          with self._cv:
            self._stats["observed"] += 1
          continue
        with self._cv:
          plan = self._guided_plan(job)
        guided = self._guided_request(plan)  # Outside the lock: the robot thread keeps acting.
        start = time.perf_counter()
        chunk = self._check_chunk(self.source.infer(job.observation, **guided))
        latency_ms = (time.perf_counter() - start) * 1e3
      except BaseException as e:  # Reported to the robot thread by the next act().
        with self._cv:
          if not self._closed:
            logger.exception("the chunk source failed")
            self._error = e
          self._cv.notify_all()
        return
      with self._cv:
        self._stats["requests"] += 1
        self._stats["request_latency_ms"].append(latency_ms)
        self._deliver(job, chunk)
        self._cv.notify_all()

  def _guided_plan(self, job: _Frame) -> tuple[np.ndarray, int, int] | None:
    """(plan [H, A], offset of job's tick in it, frozen actions d) for `job`'s request, or None
    without guidance or a plan (lock held; chunks are replaced, never modified, so the plan can be
    read after the lock is released)."""
    if self.config.guidance is None or self._chunk is None or job.episode != self._episode:
      return None
    delay = self.config.guided_delay
    if delay is None:  # At least 1: the request's own tick executed from the plan before it was sent.
      delay = max([1, *self._stats["delay_ticks"][-DELAY_MEMORY:]])
    return self._chunk, job.tick - self._chunk_tick, delay

  def _guided_request(self, plan: tuple[np.ndarray, int, int] | None) -> dict[str, Any]:
    """The real-time chunking fields of a request: {} for plain sampling."""
    if plan is None:
      return {}
    chunk, offset, delay = plan
    prefix, weights = align_prefix(chunk[None], offset, delay)
    return {"guidance": self.config.guidance, "prefix": prefix[0], "weights": weights[0]}

  def _deliver(self, job: _Frame, chunk: np.ndarray) -> None:
    """Installs the chunk for `job`'s observation, or drops it as stale (lock held)."""
    if job.episode == self._episode and self._requested_tick == job.tick:
      self._requested_tick = None
      self._stats["delay_ticks"].append(self._executed - job.tick)  # Ticks executed while it was computed.
    # Requests go out one at a time and a starving act() holds the clock until the reply that covers
    # its tick (refill_threshold < H), so only the first reason occurs today; the other two keep the
    # guarantee — no old chunk is ever executed — independent of the request policy.
    if job.episode != self._episode:
      reason = "previous_episode"
    elif self._chunk is not None and job.tick <= self._chunk_tick:
      reason = "older_than_queue"
    elif job.tick + self.horizon <= self._executed:
      reason = "in_the_past"
    else:
      reason = None
      self._chunk, self._chunk_tick = chunk, job.tick
    if reason is not None:
      self._stats["stale_replies_dropped"] += 1
      self._stats["dropped"][reason] += 1
    if self._requested_tick is None and self._episode and self._queued() <= self.refill_threshold:
      self._request_refill()
