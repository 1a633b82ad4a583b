"""The trial runner (vla_jax/serving/trial.py, experiments/robot_trial.py): the simulator as the robot, through a real server."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from experiments import robot_trial
from vla_jax.serving import trial as trial_lib
from experiments.configs import robot_trial as robot_trial_config
from tests.conftest import REPO

STEPS = 15


class Spy:
  """Wraps the runner's ChunkExecutor and keeps every action it handed to the robot, per episode."""

  def __init__(self, executor):
    self.executor, self.actions = executor, []

  def reset(self, prompt):
    self.actions.append([])
    self.prompts = getattr(self, "prompts", []) + [prompt]
    return self.executor.reset(prompt)

  def act(self, obs):
    action = self.executor.act(obs)
    self.actions[-1].append(np.array(action, np.float32))
    return action

  def stats(self):
    return self.executor.stats()

  def close(self):
    return self.executor.close()


def trial_config(tmp_path, **overrides):
  config = robot_trial_config.get_config()
  config.out_root = str(tmp_path)
  config.families = ("place", "push")
  config.episodes_per_family = 1
  config.max_episode_steps = STEPS
  config.control_hz = 50.0
  config.progress = False
  config.update(overrides)
  return config


def read_episodes(path) -> list[dict]:
  builder = tfds.builder_from_directory(str(path))
  return [{"steps": list(ep["steps"].as_numpy_iterator()),
           "episode_metadata": tf.nest.map_structure(lambda t: t.numpy(), ep["episode_metadata"])}
          for ep in builder.as_dataset(split="train")]


@pytest.fixture(scope="module")
def trial(jax_server, tmp_path_factory):
  """Two short episodes (place, push) at 50 Hz through the session's tiny JAX server."""
  spies = []

  def factory(config, url, api_key):
    executor, metadata = trial_lib.make_executor(config, url, api_key)
    spies.append(Spy(executor))
    return spies[-1], metadata

  config = trial_config(tmp_path_factory.mktemp("trials"), url=jax_server.url, name="loopback")
  result = trial_lib.run_trial(config, jax_server.url, executor_factory=factory, print_fn=lambda *_: None)
  return result, spies[0]


def test_runs_each_episode_through_the_server_and_records_it_as_rlds(trial):
  result, spy = trial
  episodes = read_episodes(result.dataset_dir)
  assert len(episodes) == 2 == len(result.outcomes)
  for outcome, episode, actions in zip(result.outcomes, episodes, spy.actions):
    assert 1 <= outcome.length <= STEPS and len(actions) == outcome.length
    assert len(episode["steps"]) == outcome.length + 1  # RLDS: plus the final observation.
    stored = np.stack([s["action"] for s in episode["steps"]])
    np.testing.assert_array_equal(stored[:-1], np.stack(actions))  # Exactly what the robot executed.
    assert {s["language_instruction"].decode() for s in episode["steps"]} == {outcome.instruction}
    meta = episode["episode_metadata"]
    assert meta["task_family"].decode() == outcome.family and meta["seed"] == outcome.seed
    assert bool(meta["success"]) == outcome.success == bool(episode["steps"][-1]["is_terminal"])
    assert meta["trial"]["deadline_misses"] == outcome.deadline_misses
    assert meta["trial"]["policy_id"].decode() == "tiny-random" and meta["trial"]["control_hz"] == 50.0
    np.testing.assert_allclose(meta["trial"]["tick_latency_ms"], outcome.tick_latency_ms, rtol=1e-6)
  assert spy.prompts == [o.instruction for o in result.outcomes]  # The policy was told the scene's instruction.


def test_summary_reports_success_latency_and_deadline_misses_per_family(trial):
  result, _ = trial
  summary = json.loads((result.out_dir / "summary.json").read_text())
  assert set(summary["families"]) == {o.family for o in result.outcomes}
  assert summary["overall"]["episodes"] == 2
  assert summary["ticks"] == sum(o.length for o in result.outcomes)
  assert summary["deadline_misses"] == sum(o.deadline_misses for o in result.outcomes)
  ticks = summary["overall"]["tick_latency_ms"]
  assert ticks["count"] == summary["ticks"] and 0 < ticks["p50"] <= ticks["p99"]
  assert summary["overall"]["request_latency_ms"]["count"] == summary["executor"]["requests"] >= 2
  assert summary["server"]["model_id"] == "tiny-random" and summary["dataset"] == str(result.dataset_dir)
  assert summary["config"]["api_key"] == ""  # Never the key itself.
  assert summary["simulator"] == {"control_rate": 1, "max_episode_steps": STEPS}  # The served policy's rate.


@pytest.mark.parametrize("rate, expected", [(None, 4), (2, 2)])
def test_an_open_control_rate_is_the_served_policys(jax_server, tmp_path, rate, expected):
  def factory(config, url, api_key):  # As if the server's policy had been trained at 4x the rate.
    executor, metadata = trial_lib.make_executor(config, url, api_key)
    return executor, {**metadata, "control_rate": 4}

  config = trial_config(tmp_path, url=jax_server.url, name="rate", families=("pick",), record=False,
                        control_rate=rate)
  result = trial_lib.run_trial(config, jax_server.url, executor_factory=factory, print_fn=lambda *_: None)
  assert result.summary["simulator"] == {"control_rate": expected, "max_episode_steps": STEPS}


def test_an_earlier_trial_is_not_overwritten(trial):
  result, _ = trial
  config = trial_config(result.out_dir.parent, url="ws://127.0.0.1:1", name=result.out_dir.name)
  with pytest.raises(FileExistsError, match="overwrite=True"):
    trial_lib.run_trial(config, config.url, print_fn=lambda *_: None)  # Refused before connecting.


@pytest.mark.parametrize("overrides, message", [
    ([], "exactly one of"),
    (["--config.url=ws://127.0.0.1:1", "--config.workdir=runs/x"], "exactly one of"),
    (["--config.url=ws://127.0.0.1:1", "--config.control_hz=0"], "config.control_hz=0.0 is not valid"),
    (["--config.url=ws://127.0.0.1:1", "--config.families=('place', 'fly')"], "'fly'"),
    (["--config.url=ws://127.0.0.1:1", "--config.contrl_hz=5"], "unknown key"),
])
def test_command_line_overrides_reach_the_config(overrides, message):
  proc = subprocess.run([sys.executable, "-m", "experiments.robot_trial", *overrides], cwd=str(REPO),
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]


@pytest.mark.slow
def test_the_command_line_runs_a_trial_against_a_server(jax_server, tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.robot_trial", f"--config.url={jax_server.url}", "--config.name=cli",
       f"--config.out_root={tmp_path}", "--config.families=('pick',)", "--config.episodes_per_family=2",
       "--config.max_episode_steps=6", "--config.control_hz=40", "--config.progress=False",
       "--config.chunking.mode=async", "--config.chunking.guidance=rtc"],  # Real-time chunking over the wire.
      cwd=str(REPO), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
  assert summary["config"]["control_hz"] == 40.0 and summary["overall"]["episodes"] == 2
  assert summary["config"]["chunking"]["guidance"] == "rtc"
  delays = summary["executor"]["delay_ticks"]  # One measured delay per reply (JSON keys are strings).
  assert sum(delays.values()) == summary["executor"]["requests"] and all(int(d) >= 0 for d in delays)
  assert [e["family"] for e in summary["episodes"]] == ["pick", "pick"]
  assert "| overall |" in proc.stdout
  assert len(read_episodes(tmp_path / "cli" / "tabletop_trials" / "1.0.0")) == 2


@pytest.mark.slow
def test_serves_a_run_directory_in_process(tiny_run, tmp_path):
  config = trial_config(tmp_path, workdir=str(tiny_run), name="inprocess", families=("pick",), max_episode_steps=5)
  with robot_trial.policy_server(config) as (url, api_key):
    result = trial_lib.run_trial(config, url, api_key, print_fn=lambda *_: None)
  assert result.summary["server"]["model_id"] == "tiny/checkpoints/20"
  assert len(read_episodes(result.dataset_dir)) == 1
