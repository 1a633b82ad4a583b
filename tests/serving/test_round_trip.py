"""Over a real websocket, the server's actions equal in-process inference, step by step, per connection."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.serving.conftest import PROMPTS, SEED, in_process_actions, observations
from vla_jax.serving import PolicyClient, ServerError

STEPS = 4  # > window_size: the window fills with padding first, then only real frames.


def _episode(client: PolicyClient, prompt: str, frames, new_episode: bool = False) -> list[dict]:
  replies = []
  for i, frame in enumerate(frames):
    request = {**frame, "prompt": prompt}
    if new_episode and i == 0:
      request["new_episode"] = True
    replies.append(client.infer(request))
  return replies


def test_jax_backend_equals_in_process_over_an_episode(jax_server, jax_reference):
  spec = jax_server.served.spec
  frames = observations(spec, STEPS, seed=1)
  expected = in_process_actions(jax_reference, PROMPTS[0], frames)
  with PolicyClient(jax_server.url) as client:
    replies = _episode(client, PROMPTS[0], frames)
  for step, (reply, want) in enumerate(zip(replies, expected)):
    assert reply["actions"].dtype == np.float32 and reply["actions"].shape == (spec.action_horizon, spec.action_dim)
    np.testing.assert_allclose(reply["actions"], want, rtol=0, atol=1e-6, err_msg=f"step {step}")
    assert reply["episode_step"] == step + 1 and reply["new_episode"] == (step == 0)
  assert not np.allclose(expected[0], expected[-1])  # The frames matter: this is not a constant policy.


def test_new_episode_flag_and_a_new_prompt_each_start_a_fresh_window(jax_server, jax_reference):
  frames = observations(jax_server.served.spec, 3, seed=2)
  fresh = in_process_actions(jax_reference, PROMPTS[1], frames)
  with PolicyClient(jax_server.url) as client:
    _episode(client, PROMPTS[0], observations(jax_server.served.spec, 3, seed=3))
    by_prompt = _episode(client, PROMPTS[1], frames)  # Prompt changed: new episode.
    by_flag = _episode(client, PROMPTS[1], frames, new_episode=True)  # Same prompt, flag set.
  for replies in (by_prompt, by_flag):
    assert replies[0]["new_episode"] and [r["episode_step"] for r in replies] == [1, 2, 3]
    for reply, want in zip(replies, fresh):
      np.testing.assert_allclose(reply["actions"], want, rtol=0, atol=1e-6)


def test_openpi_episode_start_control_is_acknowledged_and_ends_the_episode(jax_server):
  frame = observations(jax_server.served.spec, 1)[0]
  with PolicyClient(jax_server.url) as client:
    assert client.infer({**frame, "prompt": PROMPTS[0]})["episode_step"] == 1
    assert client.infer({"__ctrl__": "episode_start", "__experiment__": "x", "__task__": "", "__episode_id__": 3}) == {
        "__ack__": "episode_start"}
    assert client.infer({"__ctrl__": "somebody_elses"}) == {"__ack__": "ignored"}
    assert client.infer({**frame, "prompt": PROMPTS[0]})["episode_step"] == 1


def test_two_concurrent_clients_get_their_own_answers(jax_server, jax_reference):
  spec = jax_server.served.spec
  episodes = {name: (prompt, observations(spec, STEPS, seed=10 + i))
              for i, (name, prompt) in enumerate(zip("ab", PROMPTS))}
  expected = {name: in_process_actions(jax_reference, prompt, frames)
              for name, (prompt, frames) in episodes.items()}
  got: dict[str, list] = {}
  start = threading.Barrier(2)

  def robot(name: str) -> None:
    prompt, frames = episodes[name]
    with PolicyClient(jax_server.url) as client:
      start.wait()
      got[name] = [client.infer({**f, "prompt": prompt})["actions"] for f in frames]

  threads = [threading.Thread(target=robot, args=(name,)) for name in episodes]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=60)
  for name in episodes:
    for step, (a, want) in enumerate(zip(got[name], expected[name])):
      np.testing.assert_allclose(a, want, rtol=0, atol=1e-6, err_msg=f"client {name} step {step}")


def test_metadata_describes_the_policy_and_its_statistics(jax_server, tiny_bundle):
  from vla_jax.serving.backends import normalization_info

  with PolicyClient(jax_server.url) as client:
    meta = client.metadata
  cfg = tiny_bundle.model_config
  assert meta["protocol"] == "vla_jax.serving/1" and meta["backend"] == "jax"
  assert meta["observation"]["image"] == {"shape": [32, 32, 3], "dtype": "uint8", "camera": "primary"}
  assert meta["observation"]["state"] == {"shape": [cfg.proprio_dim], "dtype": "float32"}
  assert (meta["action_horizon"], meta["action_dim"]) == (cfg.action_horizon, cfg.action_dim)
  assert meta["normalization"] == normalization_info("bounds", tiny_bundle.action_stats, tiny_bundle.proprio_stats)
  assert meta["model_id"] == "tiny-random" and len(meta["artifact_sha256"]) == 64
  assert meta["control_rate"] == 1  # No training run: the simulator's default rate.


def test_metadata_carries_the_control_rate_of_the_policys_training_run(tiny_bundle):
  """A trial runs the simulator at the rate the served policy's data was recorded at."""
  import dataclasses

  from vla_jax.inference.jax_policy import JaxPolicy
  from vla_jax.serving.backends import from_jax_policy

  bundle = dataclasses.replace(tiny_bundle, run_config={"eval": {"control_rate": 4}})
  assert from_jax_policy(JaxPolicy(bundle)).metadata(1 << 20)["control_rate"] == 4


@pytest.mark.slow  # Builds the tiny ONNX export (~20-40 s): kept out of the default suite's budget.
def test_onnx_backend_equals_in_process_over_an_episode(onnx_server, tiny_export):
  from vla_jax.inference.onnx_runtime import OnnxPolicy
  from vla_jax.inference.artifacts import default_model_file

  assert default_model_file(tiny_export) == "policy.opt.onnx"
  reference = OnnxPolicy(tiny_export, model_file="policy.opt.onnx", threads=1, noise="numpy", seed=SEED)
  frames = observations(onnx_server.served.spec, STEPS, seed=4)
  expected = in_process_actions(reference, PROMPTS[0], frames)
  with PolicyClient(onnx_server.url) as client:
    assert client.metadata["backend"] == "onnxruntime"
    replies = _episode(client, PROMPTS[0], frames)
  for step, (reply, want) in enumerate(zip(replies, expected)):
    np.testing.assert_allclose(reply["actions"], want, rtol=0, atol=1e-6, err_msg=f"step {step}")


@pytest.mark.slow  # Builds the tiny ONNX export (~20-40 s): kept out of the default suite's budget.
def test_an_export_reports_the_normalisation_hash_of_its_source(onnx_server, jax_server):
  assert onnx_server.metadata["normalization"] == jax_server.metadata["normalization"]
  assert onnx_server.metadata["source"]["kind"] == "random"


def test_a_two_camera_policy_is_served_one_frame_per_camera():
  """Requests carry "image" for the first camera and image_<camera> for each other; the server's
  actions equal in-process inference on both frames, and a request without one is refused by name."""
  from experiments.configs import tabletop
  from vla_jax.serving import serve_in_background
  from vla_jax.serving.backends import from_random
  from vla_jax.serving.chunking import ChunkExecutor, ChunkingConfig, LocalSource, RemoteSource

  model = tabletop.get_config("tiny").model
  model.cameras = ("primary", "wrist")
  served = from_random(model, seed=3)
  spec = served.spec
  assert spec.image_keys == ("image", "image_wrist") and spec.cameras == ("primary", "wrist")
  meta = served.metadata(1 << 20)["observation"]
  assert meta["image_wrist"] == {"shape": list(spec.image_shape), "dtype": "uint8", "camera": "wrist"}
  frames = observations(spec, STEPS, seed=5)
  reference = served.policy.new_session()  # Same weights and compiled functions, its own window.
  expected = in_process_actions(reference, PROMPTS[0], frames)
  # The second camera is read: another wrist frame changes the chunk.
  reference.reset([PROMPTS[0]], None)
  other = reference({"image": frames[0]["image"][None], "image_wrist": frames[1]["image_wrist"][None],
                     "state": frames[0]["state"][None]}, None)[0]
  assert not np.allclose(other, expected[0])
  with serve_in_background(served, warm_up_guided=False) as server, PolicyClient(server.url) as client:
    assert client.metadata["observation"]["image"]["camera"] == "primary"
    replies = _episode(client, PROMPTS[0], frames)
    with pytest.raises(ServerError, match=r"request keys: missing \['image_wrist'\]"):
      client.infer({"image": frames[0]["image"], "state": frames[0]["state"], "prompt": PROMPTS[0]})
    # Chunk execution, in process and through the server, passes both frames on (and neither sends
    # a view the policy does not read).
    executed = {}
    for name, source in (("local", LocalSource(served.policy.new_session())), ("remote", RemoteSource(client))):
      with ChunkExecutor(source, spec.action_horizon, ChunkingConfig("receding", execute_steps=2)) as executor:
        executor.reset(PROMPTS[1])
        executed[name] = np.stack([executor.act({**f, "image_unused": f["image"]}) for f in frames])
    source = RemoteSource(client)
    source.reset(PROMPTS[1])
    with pytest.raises(ValueError, match=r"the observation lacks \['image_wrist'\]"):
      source.infer({"image": frames[0]["image"], "state": frames[0]["state"]})
  for step, (reply, want) in enumerate(zip(replies, expected)):
    np.testing.assert_allclose(reply["actions"], want, rtol=0, atol=1e-6, err_msg=f"step {step}")
  np.testing.assert_allclose(executed["remote"], executed["local"], rtol=0, atol=1e-6)
