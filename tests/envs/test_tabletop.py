"""Specification of the built-in tabletop simulator."""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest

import vla_jax.envs  # noqa: F401  (registers the gymnasium ids)
from vla_jax.envs import tasks
from vla_jax.envs.expert import ScriptedExpert
from vla_jax.envs.tabletop import (
    CONTACT_DIST, GRASP_RADIUS, MAX_OBJECTS, MAX_STEP, NUM_REFERENTS, SceneState, TabletopEnv, attribute_referents,
    is_success, referents,
)
from vla_jax.envs.vector import VectorTabletopEnv


def run_expert(env: TabletopEnv, seed: int, noise_std: float = 0.1):
  obs, info = env.reset(seed=seed)
  expert = ScriptedExpert(noise_std=noise_std)
  expert.reset(env.scene, seed=seed)
  frames = [obs]
  while True:
    obs, reward, terminated, truncated, info = env.step(expert.act(env.scene))
    frames.append(obs)
    if terminated or truncated:
      return terminated, frames


def random_actions(seed: int, n: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  actions = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
  actions[:, 2] = rng.uniform(size=n) > 0.7
  return actions


def test_same_seed_gives_identical_episode():
  episodes = []
  for _ in range(2):
    env = TabletopEnv()
    obs, _ = env.reset(seed=123)
    trace = [obs]
    for action in random_actions(7, 40):
      obs, *_, truncated, _ = env.step(action)
      trace.append(obs)
      if truncated or env._done:
        break
    episodes.append(trace)
  assert len(episodes[0]) == len(episodes[1])
  for a, b in zip(*episodes):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["state"], b["state"])
    assert a["instruction"] == b["instruction"]


def test_different_seeds_give_different_scenes():
  env = TabletopEnv()
  images = [env.reset(seed=s)[0]["image"] for s in range(5)]
  assert all(not np.array_equal(images[0], im) for im in images[1:])


@pytest.mark.parametrize("split", ["train", "heldout_combo"])
@pytest.mark.parametrize("family", tasks.FAMILIES)
def test_expert_succeeds_at_least_98_percent_within_100_steps(family, split):
  env = TabletopEnv(task_family=family, split=split)
  results = [run_expert(env, seed) for seed in range(200)]
  success_rate = np.mean([ok for ok, _ in results])
  assert success_rate >= 0.98, f"{family}/{split}: expert success {success_rate:.3f}"
  assert max(len(frames) - 1 for _, frames in results) <= 100


def test_expert_noise_makes_demos_differ():
  env = TabletopEnv(task_family="place")
  _, a = run_expert(env, seed=3, noise_std=0.1)
  expert = ScriptedExpert(noise_std=0.1)
  env.reset(seed=3)
  expert.reset(env.scene, seed=4)  # Same scene, another expert seed.
  first = expert.act(env.scene)
  env.reset(seed=3)
  expert.reset(env.scene, seed=3)
  assert not np.allclose(first, expert.act(env.scene))


def test_every_scene_has_confusable_distractors():
  env = TabletopEnv()
  for seed in range(300):
    env.reset(seed=seed)
    s = env.scene
    combos = list(zip(s.obj_colour, s.obj_shape))
    assert len(set(combos)) == len(combos), "every object must be uniquely nameable"
    distractors = [c for i, c in enumerate(combos) if i not in (s.target, s.ref)]
    assert len(distractors) >= 2
    target = combos[s.target]
    assert any(c[0] == target[0] for c in distractors), "no distractor shares the target's colour"
    assert any(c[1] == target[1] for c in distractors), "no distractor shares the target's shape"


def test_train_split_never_produces_heldout_phrasings_or_combos():
  env = TabletopEnv(split="train")
  heldout_names = {tasks.object_name(*c) for c in tasks.HELDOUT_COMBOS}
  for seed in range(600):
    obs, info = env.reset(seed=seed)
    family, kind, _, _ = tasks.parse_instruction(obs["instruction"])
    assert kind == "train" and family == env.scene.family
    assert not set(info["scene_objects"].split(",")) & heldout_names
    assert not any(name in obs["instruction"] for name in heldout_names)


def test_heldout_splits_use_reserved_phrasings_and_combos():
  phr = TabletopEnv(split="heldout_phrasing")
  combo = TabletopEnv(split="heldout_combo")
  for seed in range(200):
    obs, _ = phr.reset(seed=seed)
    assert tasks.parse_instruction(obs["instruction"])[1] == "heldout"
    obs, _ = combo.reset(seed=seed)
    assert tasks.parse_instruction(obs["instruction"])[1] == "train"
    s = combo.scene
    assert (s.obj_colour[s.target], s.obj_shape[s.target]) in tasks.HELDOUT_COMBOS


def test_split_definitions_are_disjoint_and_cover_every_colour_and_shape():
  assert not set(tasks.TRAIN_COMBOS) & set(tasks.HELDOUT_COMBOS)
  assert {c for c, _ in tasks.HELDOUT_COMBOS} == set(tasks.COLOURS)
  assert {s for _, s in tasks.HELDOUT_COMBOS} == set(tasks.SHAPES)
  for family, t in tasks.TEMPLATES.items():
    assert not set(t.train) & set(t.heldout), family
    for template in t.heldout:  # A held-out phrasing must not be parseable as a train one.
      text = template.format(obj="red square", ref="blue circle", region="top left corner")
      assert tasks.parse_instruction(text)[1] == "heldout"


def _scene(family, **kw) -> SceneState:
  base = dict(
      obj_pos=np.array([[0.5, 0.5], [0.8, 0.8], [0.2, 0.8], [0.8, 0.2]]),
      obj_colour=["red", "blue", "green", "yellow"],
      obj_shape=["square", "circle", "triangle", "circle"],
      gripper_pos=np.array([0.5, 0.5]), gripper_closed=False, held=-1, family=family, split="train",
      target=0, ref=1 if family == "push" else -1, region="top left corner" if family == "place" else "",
      instruction="",
  )
  base.update(kw)
  return SceneState(**base)


def test_success_predicates():
  assert not is_success(_scene("pick"))
  assert is_success(_scene("pick", held=0, gripper_closed=True))
  assert not is_success(_scene("pick", held=1, gripper_closed=True))
  inside = np.array([[0.1, 0.1], [0.8, 0.8], [0.2, 0.8], [0.8, 0.2]])
  assert is_success(_scene("place", obj_pos=inside))
  assert not is_success(_scene("place", obj_pos=inside, held=0, gripper_closed=True)), "still held"
  assert not is_success(_scene("place"))
  near = np.array([[0.7, 0.7], [0.8, 0.8], [0.2, 0.8], [0.8, 0.2]])
  assert is_success(_scene("push", obj_pos=near))
  assert not is_success(_scene("push", obj_pos=near, held=0, gripper_closed=True)), "carried, not pushed"
  assert not is_success(_scene("push"))


def test_target_referent_is_the_target_objects_centre_in_every_family():
  for family in tasks.FAMILIES:
    scene = _scene(family, obj_pos=np.array([[0.3, 0.6], [0.8, 0.8], [0.2, 0.8], [0.8, 0.2]]))
    position, valid = referents(scene)
    assert position.shape == (NUM_REFERENTS, 2) and position.dtype == np.float32
    assert valid.shape == (NUM_REFERENTS,) and valid.dtype == bool
    np.testing.assert_allclose(position[0], [0.3, 0.6], rtol=1e-6)
    assert valid[0]


def test_attribute_referents_list_every_object_sharing_the_targets_colour_or_shape():
  env = TabletopEnv(num_objects=(6, 6))
  for seed in range(6):
    env.reset(seed=seed)
    s = env.scene
    position, valid = attribute_referents(s)
    assert position.shape == (2, MAX_OBJECTS, 2) and position.dtype == np.float32
    assert valid.shape == (2, MAX_OBJECTS) and valid.dtype == bool
    for row, values in enumerate((s.obj_colour, s.obj_shape)):
      want = [i for i, v in enumerate(values) if v == values[s.target]]
      assert len(want) >= 2, "every scene has a distractor sharing each attribute"
      assert valid[row].sum() == len(want) and valid[row, :len(want)].all()
      np.testing.assert_allclose(position[row, :len(want)], s.obj_pos[want], rtol=1e-6)
      assert (position[row, len(want):] == 0).all()
  ungrounded = dataclasses.replace(_scene("pick"), judgeable=False)
  assert not attribute_referents(ungrounded)[1].any()


def test_push_goal_referent_is_the_reference_objects_centre():
  position, valid = referents(_scene("push"))
  np.testing.assert_allclose(position[1], [0.8, 0.8], rtol=1e-6)
  assert valid[1]


@pytest.mark.parametrize("region", list(tasks.REGIONS))
def test_place_goal_referent_is_the_centre_of_the_named_region(region):
  x0, y0, x1, y1 = tasks.REGIONS[region]
  position, valid = referents(_scene("place", region=region))
  np.testing.assert_allclose(position[1], [(x0 + x1) / 2, (y0 + y1) / 2], rtol=1e-6)
  assert valid[1]


def test_pick_has_no_goal_referent():
  position, valid = referents(_scene("pick"))
  assert not valid[1] and (position[1] == 0).all()


def test_referents_are_a_snapshot_that_later_steps_do_not_change():
  """The dataset writer stores one label per frame: it must not alias the live scene."""
  grip = np.array([0.5 + GRASP_RADIUS * 0.8, 0.5])
  env = _env_with(_scene("place", gripper_pos=grip))
  env.step(np.array([0, 0, 1], np.float32))  # Grasp the target ...
  before, _ = referents(env.scene)
  env.step(np.array([-1, 0, 1], np.float32))  # ... and carry it.
  after, _ = referents(env.scene)
  assert after[0, 0] < before[0, 0] - 0.5 * MAX_STEP
  np.testing.assert_allclose(after[0], env.scene.obj_pos[0], rtol=1e-6)


def test_referents_of_an_unknown_family_raise():
  with pytest.raises(ValueError, match="unknown task family 'stack'"):
    referents(_scene("stack"))


def _env_with(scene: SceneState) -> TabletopEnv:
  env = TabletopEnv()
  env.reset(seed=0)
  env.scene = scene
  return env


def test_closing_grasps_nearest_object_within_radius_and_carries_it():
  grip = np.array([0.5 + GRASP_RADIUS * 0.8, 0.5])
  env = _env_with(_scene("place", gripper_pos=grip, region="bottom right corner"))
  obs, *_ = env.step(np.array([0, 0, 1], np.float32))
  assert env.scene.held == 0 and obs["state"][3] == 1.0  # grasp_contact channel
  obs, *_ = env.step(np.array([-1, 0, 1], np.float32))
  np.testing.assert_allclose(env.scene.obj_pos[0], env.scene.gripper_pos)
  env.step(np.array([0, 0, 0], np.float32))
  assert env.scene.held == -1


def test_closed_fist_pushes_objects_and_open_gripper_passes_over():
  start = np.array([0.5 - CONTACT_DIST - 0.01, 0.5])
  env = _env_with(_scene("push", gripper_pos=start.copy()))
  before = env.scene.obj_pos[0].copy()
  env.step(np.array([0.5, 0, 0], np.float32))  # Open: moves over the object's edge.
  np.testing.assert_array_equal(env.scene.obj_pos[0], before)
  env = _env_with(_scene("push", gripper_pos=start.copy()))
  obs, *_ = env.step(np.array([0, 0, 1], np.float32))  # Close far from objects: an empty fist.
  assert env.scene.held == -1
  obs, *_ = env.step(np.array([0.5, 0, 1], np.float32))
  assert env.scene.obj_pos[0][0] > before[0] + 0.5 * MAX_STEP * 0.5
  assert np.linalg.norm(env.scene.obj_pos[0] - env.scene.gripper_pos) == pytest.approx(CONTACT_DIST)
  assert obs["state"][4] > 0  # push_force channel


@pytest.mark.parametrize("size", [32, 64, 128, 224])
def test_renders_any_size_with_every_object_visible(size):
  env = TabletopEnv(image_size=size)
  obs, _ = env.reset(seed=1)
  assert obs["image"].shape == (size, size, 3) and obs["image"].dtype == np.uint8
  assert np.array_equal(env.render(), obs["image"])
  for colour in set(env.scene.obj_colour):
    rgb = np.array(tasks.COLOURS[colour], np.uint8)
    assert np.all(obs["image"] == rgb, axis=-1).sum() > 0, f"{colour} missing at {size}px"


def test_gymnasium_registration_and_api():
  from gymnasium.utils.env_checker import check_env

  for env_id, family in vla_jax.envs.ENV_IDS.items():
    env = gym.make(env_id, split="heldout_phrasing")
    obs, info = env.reset(seed=0)
    assert obs["instruction"] == info["instruction"]
    if family != "any":
      assert info["task_family"] == family
    assert env.observation_space.contains(obs)
  check_env(gym.make("vla_jax/Tabletop-v0").unwrapped)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(task_family="stack"), "task_family='stack'"),
        (dict(split="test"), "split='test'"),
        (dict(image_size=500), "image_size=500"),
        (dict(image_size=64.0), "image_size=64.0"),
        (dict(max_episode_steps=0), "max_episode_steps=0"),
        (dict(num_objects=(2, 3)), "num_objects=(2, 3)"),
        (dict(render_mode="human"), "render_mode='human'"),
        (dict(control_rate=0), "control_rate=0"),
        (dict(control_rate=2.0), "control_rate=2.0"),
    ],
)
def test_bad_env_arguments_raise_clear_errors(kwargs, expected):
  with pytest.raises(ValueError, match=r"expected") as e:
    TabletopEnv(**kwargs)
  assert expected in str(e.value)


def test_bad_actions_and_call_order_raise_clear_errors():
  env = TabletopEnv()
  with pytest.raises(RuntimeError, match="before reset"):
    env.step(np.zeros(3, np.float32))
  env.reset(seed=0)
  with pytest.raises(ValueError, match=r"shape \(2,\); expected \(3,\)"):
    env.step(np.zeros(2, np.float32))
  with pytest.raises(ValueError, match="NaN"):
    env.step(np.array([np.nan, 0, 0], np.float32))
  with pytest.raises(ValueError, match="unknown"):
    env.reset(seed=0, options={"family": "pick"})


def test_episode_truncates_at_max_steps():
  env = TabletopEnv(task_family="pick", max_episode_steps=5)
  env.reset(seed=0)
  for i in range(5):
    _, _, terminated, truncated, _ = env.step(np.array([0, 0, 0], np.float32))
  assert truncated and not terminated
  with pytest.raises(RuntimeError, match="ended"):
    env.step(np.zeros(3, np.float32))


def test_vector_env_matches_single_envs_and_freezes_finished_ones():
  n = 4
  venv = VectorTabletopEnv(n, task_family="pick", max_episode_steps=30)
  obs, _ = venv.reset(seeds=100)
  singles = [TabletopEnv(task_family="pick", max_episode_steps=30) for _ in range(n)]
  single_obs = [e.reset(seed=100 + i)[0] for i, e in enumerate(singles)]
  experts = [ScriptedExpert() for _ in range(n)]
  for i, (e, x) in enumerate(zip(singles, experts)):
    x.reset(e.scene, seed=i)
  single_done = np.zeros(n, bool)
  np.testing.assert_array_equal(obs["image"], np.stack([o["image"] for o in single_obs]))
  while not venv.done.all():
    actions = np.stack([x.act(e.scene) for x, e in zip(experts, singles)])
    frozen_images = obs["image"].copy()
    was_done = venv.done.copy()
    obs, reward, terminated, truncated, _ = venv.step(actions)
    for i, e in enumerate(singles):
      if single_done[i]:
        np.testing.assert_array_equal(obs["image"][i], frozen_images[i])
        assert reward[i] == 0 and was_done[i]
        continue
      o, r, t, tr, _ = e.step(actions[i])
      single_done[i] = t or tr
      np.testing.assert_array_equal(obs["image"][i], o["image"])
      assert reward[i] == r and terminated[i] == t
  assert venv.success.all()
  with pytest.raises(ValueError, match=r"expected \(4, 3\)"):
    venv.step(np.zeros((3, 3), np.float32))


def test_control_rate_divides_every_step_and_stretches_the_episode_limit():
  """control_rate k: the same scene, each step 1/k of the default one (a k-times finer control
  period), the default limit k x 100; the fist's push_force stays in units of the step."""
  coarse, fine = TabletopEnv(task_family="push"), TabletopEnv(task_family="push", control_rate=4)
  assert (coarse.max_episode_steps, fine.max_episode_steps) == (100, 400)
  assert TabletopEnv(control_rate=4, max_episode_steps=50).max_episode_steps == 50
  a, _ = coarse.reset(seed=5)
  b, _ = fine.reset(seed=5)
  np.testing.assert_array_equal(a["image"], b["image"])
  assert a["instruction"] == b["instruction"]
  move = np.array([1.0, -0.5, 0.0], np.float32)
  coarse.step(move)
  for _ in range(4):
    fine.step(move)
  np.testing.assert_allclose(fine.scene.gripper_pos, coarse.scene.gripper_pos, atol=1e-12)
  start = np.array([0.5 - CONTACT_DIST - 0.001, 0.5])
  forces = []
  for rate in (1, 4):
    env = _env_with(_scene("push", gripper_pos=start.copy()))
    env.scene.step_size = MAX_STEP / rate
    env.step(np.array([0, 0, 1], np.float32))
    obs, *_ = env.step(np.array([0.5, 0, 1], np.float32))
    forces.append(obs["state"][4])
  # Half a step forward from 0.001 short of contact: 0.5 - 0.001 / step_size of a step deep.
  np.testing.assert_allclose(forces, [0.5 - 0.001 / MAX_STEP, 0.5 - 0.001 / (MAX_STEP / 4)], atol=1e-6)


@pytest.mark.parametrize("family", tasks.FAMILIES)
def test_expert_at_four_times_the_control_rate_succeeds_in_about_four_times_the_steps(family):
  lengths = {}
  for rate in (1, 4):
    env = TabletopEnv(task_family=family, control_rate=rate)
    results = [run_expert(env, seed, noise_std=0.1 * rate**0.5) for seed in range(30)]
    assert np.mean([ok for ok, _ in results]) >= 0.95, f"{family} at control_rate {rate}"
    lengths[rate] = np.mean([len(frames) - 1 for ok, frames in results if ok])
  assert 3.0 < lengths[4] / lengths[1] < 5.0, lengths
