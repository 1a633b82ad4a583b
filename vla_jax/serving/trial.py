"""Robot trials: the built-in simulator plays "the robot", driven through the policy server.

Each tick of the control loop at `control_hz`: take the simulator's observation, get an action
from the `ChunkExecutor` (which asks the server for chunks through the client as its mode says),
sleep to the tick's deadline, execute the action. Deadlines are 1 / control_hz apart, the first
one period after the episode's first observation. The tick's latency is observation -> action
ready; an action not ready by its deadline is a deadline miss — the simulator then executes it
late and the schedule restarts from that moment (a patient robot: the miss is counted, it does
not cascade into the following ticks).

`run_trial(config, url)` writes under <out_root>/<name>/:
  summary.json                   config (without the API key), server metadata, per-family success
                                 with 95 % intervals, tick and request latency p50 / p99, deadline
                                 misses, executor counters, one record per episode
  tabletop_trials/1.0.0/         every episode as RLDS with the built-in dataset's step schema: the
                                 executed actions, the instruction the policy was told, the outcome
                                 (`vla_jax.data.recording`) — train on it with `recording.trial_spec`

The entry point is `python -m experiments.robot_trial` (config: experiments/configs/robot_trial.py).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

from vla_jax.io import write_json_atomic

API_KEY_ENV = "VLA_JAX_API_KEY"
SOURCES = ("url", "checkpoint", "workdir", "export_dir", "untrained")



# ---- Where the policy comes from. ----------------------------------------------------------------


def check_config(config) -> None:
  """Errors that name the key, before anything heavy is loaded."""
  from vla_jax.envs import tasks

  given = [k for k in SOURCES if config[k]]
  if len(given) != 1:
    raise ValueError(f"pass exactly one of {', '.join('--config.' + k for k in SOURCES)} (got {given or 'none'})")
  if not config.name or "/" in config.name or config.name.startswith("."):
    raise ValueError(f"config.name={config.name!r} is not valid; expected a plain directory name")
  if not config.control_hz > 0:
    raise ValueError(f"config.control_hz={config.control_hz!r} is not valid; expected a rate > 0 (Hz)")
  if not isinstance(config.episodes_per_family, int) or config.episodes_per_family < 1:
    raise ValueError(f"config.episodes_per_family={config.episodes_per_family!r} is not valid; expected an int >= 1")
  if not config.families:
    raise ValueError(f"config.families is empty; expected some of {list(tasks.FAMILIES)}")
  for family in config.families:
    tasks.check_choice("config.families", family, tasks.FAMILIES)
  tasks.check_choice("config.split", config.split, tasks.SPLITS)
  if config.instruction:
    from vla_jax.envs.tabletop import check_typed_instruction

    check_typed_instruction(config.instruction)


def make_executor(config, url: str, api_key: str | None) -> tuple[Any, dict[str, Any]]:
  """A `ChunkExecutor` over a connection to `url`, and the server's metadata."""
  from vla_jax.serving import PolicyClient
  from vla_jax.serving.chunking import ChunkExecutor, ChunkingConfig, RemoteSource

  client = PolicyClient(url, api_key=api_key)
  chunking = ChunkingConfig(**config.chunking.to_dict())
  return ChunkExecutor(RemoteSource(client), int(client.metadata["action_horizon"]), chunking), client.metadata


def check_robot_fits(metadata: dict[str, Any]) -> int:
  """The simulator's image size for this policy; ValueError if its state or action is not the tabletop's."""
  from vla_jax.envs.tabletop import ACTION_DIM, ACTION_NAMES, STATE_DIM, STATE_NAMES

  state = list(metadata["observation"]["state"]["shape"])
  action_dim = int(metadata["action_dim"])
  if state != [STATE_DIM] or action_dim != ACTION_DIM:
    raise ValueError(f"the served policy ({metadata.get('model_id')}) reads state {state} and writes {action_dim}-d "
                     f"actions; the tabletop robot has state [{STATE_DIM}] ({', '.join(STATE_NAMES)}) and "
                     f"{ACTION_DIM}-d actions ({', '.join(ACTION_NAMES)})")
  return int(metadata["observation"]["image"]["shape"][0])


# ---- One episode at a fixed control rate. -------------------------------------------------------------


@dataclasses.dataclass
class EpisodeOutcome:
  index: int
  seed: int
  family: str  # The task judged (a typed instruction can name another family than the scene's).
  split: str
  instruction: str  # What the policy was told.
  success: bool
  length: int  # Executed steps.
  judgeable: bool
  grounding_note: str
  deadline_misses: int
  tick_latency_ms: list[float]  # Per executed step: observation -> action ready.
  deadline_missed: list[bool]  # Per executed step.
  request_latency_ms: list[float]
  delay_ticks: list[int]  # Async: ticks executed while each reply was computed (the inference delay d).
  requests: int
  stale_replies_dropped: int
  starved_ticks: int
  wall_time_s: float

  def record(self) -> dict[str, Any]:
    """The JSON record (latency lists summarised)."""
    out = {k: v for k, v in vars(self).items() if k not in ("tick_latency_ms", "deadline_missed", "request_latency_ms")}
    return out | {"tick_latency_ms": percentiles(self.tick_latency_ms),
                  "request_latency_ms": percentiles(self.request_latency_ms)}


def _sleep_until(deadline: float) -> None:
  while True:
    left = deadline - time.perf_counter()
    if left <= 0:
      return
    time.sleep(left)


def run_episode(env, executor, *, index: int, seed: int, family: str, instruction: str, period_s: float,
                recorder_cls=None) -> tuple[EpisodeOutcome, Any]:
  """Runs one episode; returns its outcome and its `EpisodeRecorder` (or None without `recorder_cls`)."""
  import numpy as np

  options = {"task_family": family} | ({"instruction": instruction} if instruction else {})
  obs, info = env.reset(seed=seed, options=options)
  executor.reset(obs["instruction"])
  before = executor.stats()  # Counters run since the executor was built: this episode's are the difference.
  recorder = recorder_cls(obs, env.scene) if recorder_cls else None
  ticks_ms: list[float] = []
  missed: list[bool] = []
  start_wall = time.perf_counter()
  observed = start_wall
  deadline = observed + period_s
  while True:
    action = np.asarray(executor.act({"image": obs["image"], "state": obs["state"]}), np.float32)
    ready = time.perf_counter()
    ticks_ms.append((ready - observed) * 1e3)
    missed.append(ready > deadline)
    if missed[-1]:
      deadline = ready  # Executed late, now; the next tick gets a whole period again.
    else:
      _sleep_until(deadline)
    obs, reward, terminated, truncated, _ = env.step(action)
    observed = time.perf_counter()
    deadline += period_s
    if recorder is not None:
      recorder.add(action, obs, reward, env.scene)
    if terminated or truncated:
      break
  after = executor.stats()
  delta = lambda key: int(after[key]) - int(before[key])  # noqa: E731
  outcome = EpisodeOutcome(
      index=index, seed=seed, family=env.scene.family, split=env.scene.split, instruction=obs["instruction"],
      success=bool(terminated), length=len(ticks_ms), judgeable=bool(info["judgeable"]),
      grounding_note=info["grounding_note"], deadline_misses=sum(missed), tick_latency_ms=ticks_ms,
      deadline_missed=missed,
      request_latency_ms=[float(x) for x in after["request_latency_ms"][len(before["request_latency_ms"]):]],
      delay_ticks=[int(x) for x in after["delay_ticks"][len(before["delay_ticks"]):]],
      requests=delta("requests"), stale_replies_dropped=delta("stale_replies_dropped"),
      starved_ticks=delta("starved_ticks"), wall_time_s=time.perf_counter() - start_wall)
  return outcome, recorder


def percentiles(values_ms: list[float]) -> dict[str, float]:
  import numpy as np

  if not values_ms:
    return {"count": 0}
  v = np.asarray(values_ms, np.float64)
  return {"count": int(v.size), "p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
          "mean": float(v.mean()), "max": float(v.max())}


# ---- A whole trial. -------------------------------------------------------------------------------


@dataclasses.dataclass
class Trial:
  summary: dict[str, Any]
  outcomes: list[EpisodeOutcome]
  episodes: list[dict[str, Any]]  # RLDS episodes as recorded (`vla_jax.data.recording`).
  out_dir: Path
  dataset_dir: Path | None


def out_dir(config) -> Path:
  return Path(config.out_root) / config.name


def check_out_dir(config) -> Path:
  """The trial's output directory; FileExistsError if an earlier trial is there (unless overwrite)."""
  outdir = out_dir(config)
  if not config.overwrite and ((outdir / "summary.json").exists() or (outdir / config.dataset_name).exists()):
    raise FileExistsError(f"{outdir} already holds a trial; pass --config.overwrite=True or another --config.name")
  return outdir


def episode_plan(config) -> list[tuple[str, int]]:
  """(family, scene seed) of every episode, families interleaved so load drifts hit all alike."""
  from vla_jax.envs import tasks

  return [(f, int(config.seed) + 100_000 * tasks.FAMILIES.index(f) + i)
          for i in range(config.episodes_per_family) for f in config.families]


def run_trial(config, url: str, api_key: str | None = None, *,
              executor_factory: Callable[..., tuple[Any, dict]] = make_executor,
              print_fn: Callable[[str], None] = print) -> Trial:
  """Runs every episode of `config` against the server at `url`; writes summary.json and the dataset."""
  import tqdm

  from vla_jax.data import recording
  from vla_jax.envs import TabletopEnv

  outdir = check_out_dir(config)
  executor, metadata = executor_factory(config, url, api_key)
  interrupted = False
  outcomes, episodes = [], []
  started = time.time()
  try:
    image_size = check_robot_fits(metadata)
    # Left open, the control rate is the served policy's (its data's; the server's metadata) and
    # the episode limit the simulator's default for it (100 x the rate).
    rate = config.get("control_rate")
    env = TabletopEnv(task_family=tuple(config.families), split=config.split, image_size=image_size,
                      max_episode_steps=config.get("max_episode_steps"),
                      control_rate=int(rate if rate is not None else metadata.get("control_rate", 1)))
    plan = episode_plan(config)
    print_fn(f"trial {config.name}: {len(plan)} episodes of {metadata.get('model_id')} ({metadata.get('backend')}) "
             f"at {url}, {config.control_hz:g} Hz, chunking {config.chunking.mode}")
    bar = tqdm.tqdm(total=len(plan), desc=f"trial {config.name}", unit="ep", disable=not config.progress)
    try:
      for index, (family, seed) in enumerate(plan):
        start_ms = int(time.time() * 1e3)
        outcome, recorder = run_episode(env, executor, index=index, seed=seed, family=family,
                                        instruction=config.instruction, period_s=1.0 / config.control_hz,
                                        recorder_cls=recording.EpisodeRecorder if config.record else None)
        outcomes.append(outcome)
        if recorder is not None:
          episodes.append(_finish(recorder, outcome, config, metadata, env, start_ms))
        ticks = percentiles(outcome.tick_latency_ms)
        bar.write(f"  ep {index + 1}/{len(plan)} {outcome.family:<5} seed {seed}: "
                  f"{'success' if outcome.success else 'fail   '} {outcome.length:>3} steps, tick p50 "
                  f"{ticks['p50']:.1f} ms p99 {ticks['p99']:.1f} ms, {outcome.deadline_misses} deadline misses, "
                  f"{outcome.requests} requests")
        bar.update(1)
    except KeyboardInterrupt:  # Keep what ran: the finished episodes are still written.
      interrupted = True
      print_fn(f"interrupted after {len(outcomes)} episodes; writing those")
    finally:
      bar.close()
  finally:
    executor.close()
  if not outcomes:
    raise RuntimeError("no episode finished; nothing to write")
  summary = summarise(config, url, metadata, outcomes, started, interrupted)
  summary["simulator"] = {"control_rate": env.control_rate, "max_episode_steps": env.max_episode_steps}
  dataset = None
  if config.record:
    dataset = recording.write_episodes(episodes, outdir, name=config.dataset_name, overwrite=config.overwrite,
                                       metadata={"trial_config": saved_config(config), "server": metadata})
    summary["dataset"] = str(dataset)
  write_json_atomic(outdir / "summary.json", summary)
  print_fn(format_table(summary))
  print_fn(f"summary: {outdir / 'summary.json'}" + (f"\ndataset: {dataset}" if dataset else ""))
  return Trial(summary=summary, outcomes=outcomes, episodes=episodes, out_dir=outdir, dataset_dir=dataset)


def _finish(recorder, outcome: EpisodeOutcome, config, metadata: dict, env, start_ms: int) -> dict[str, Any]:
  return recorder.finish(
      success=outcome.success,
      metadata={"task_family": outcome.family, "split": outcome.split,
                "scene_objects": ",".join(env.scene.object_names()), "seed": outcome.seed,
                "episode_index": outcome.index},
      trial={"name": config.name, "policy_id": str(metadata.get("model_id", "")),
             "policy_backend": str(metadata.get("backend", "")),
             "policy_sha256": str(metadata.get("artifact_sha256", "")), "control_hz": float(config.control_hz),
             "chunk_mode": config.chunking.mode,
             "execute_steps": min(int(config.chunking.execute_steps), int(metadata["action_horizon"])),
             "typed_instruction": bool(config.instruction), "judgeable": outcome.judgeable,
             "grounding_note": outcome.grounding_note, "deadline_misses": outcome.deadline_misses,
             "tick_latency_ms": outcome.tick_latency_ms, "deadline_missed": outcome.deadline_missed,
             "request_latency_ms": outcome.request_latency_ms, "stale_replies_dropped": outcome.stale_replies_dropped,
             "starved_ticks": outcome.starved_ticks, "start_time_unix_ms": start_ms,
             "wall_time_s": float(outcome.wall_time_s)})


def saved_config(config) -> dict[str, Any]:
  """The config as JSON, without the API key."""
  out = json.loads(config.to_json_best_effort())
  out["api_key"] = "<set>" if config.api_key else ""
  return out


def summarise(config, url: str, metadata: dict, outcomes: list[EpisodeOutcome], started: float,
              interrupted: bool) -> dict[str, Any]:
  from vla_jax.evaluation import metrics

  families = {}
  for family in dict.fromkeys(o.family for o in outcomes):
    mine = [o for o in outcomes if o.family == family]
    families[family] = metrics.summarise(mine) | _timing(mine)
  ticks = sum(o.length for o in outcomes)
  return {
      "name": config.name,
      "started_unix_s": started,
      "wall_time_s": time.time() - started,
      "interrupted": interrupted,
      "url": url,
      "config": saved_config(config),
      "server": metadata,
      "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                  "python": platform.python_version()},
      "families": families,
      "overall": metrics.summarise(outcomes) | _timing(outcomes),
      "ticks": ticks,
      "deadline_misses": sum(o.deadline_misses for o in outcomes),
      "deadline_miss_rate": sum(o.deadline_misses for o in outcomes) / max(ticks, 1),
      "executor": {k: sum(getattr(o, k) for o in outcomes) for k in ("requests", "stale_replies_dropped",
                                                                     "starved_ticks")}
                  | {"delay_ticks": dict(sorted(collections.Counter(d for o in outcomes for d in o.delay_ticks).items()))},
      "episodes": [o.record() for o in outcomes],
  }


def _timing(outcomes: list[EpisodeOutcome]) -> dict[str, Any]:
  return {"deadline_misses": sum(o.deadline_misses for o in outcomes),
          "tick_latency_ms": percentiles([t for o in outcomes for t in o.tick_latency_ms]),
          "request_latency_ms": percentiles([t for o in outcomes for t in o.request_latency_ms])}


def format_table(summary: dict[str, Any]) -> str:
  """Success % [95 % CI], deadline misses and latency p50 / p99 per family and overall."""
  header = ("| family | episodes | success | mean length | deadline misses | tick p50 / p99 ms "
            "| request p50 / p99 ms |")
  lines = [header, "|" + "---|" * 7]
  rows = list(summary["families"].items()) + [("overall", summary["overall"])]
  for name, s in rows:
    tick, req = s["tick_latency_ms"], s["request_latency_ms"]
    cell = lambda p: f"{p['p50']:.1f} / {p['p99']:.1f}" if p["count"] else "-"  # noqa: E731
    lines.append(f"| {name} | {s['episodes']} | {100 * s['success_rate']:.0f} % [{100 * s['ci95_low']:.0f}, "
                 f"{100 * s['ci95_high']:.0f}] | {s['mean_length']:.1f} | {s['deadline_misses']} | {cell(tick)} "
                 f"| {cell(req)} |")
  c = summary["config"]
  lines.append(f"\n{summary['ticks']} ticks at {c['control_hz']:g} Hz: {summary['deadline_misses']} deadline misses "
               f"({100 * summary['deadline_miss_rate']:.1f} %); {summary['executor']['requests']} requests, "
               f"{summary['executor']['stale_replies_dropped']} stale replies dropped, "
               f"{summary['executor']['starved_ticks']} starved ticks. tick = observation -> action ready; "
               "request = inference round trip.")
  return "\n".join(lines)
