"""The Meta-World adapter (vla_jax/envs/metaworld.py): tasks and language, GL errors, experts, orientation.

Rendering checks run in a fresh interpreter: in a process that has imported TensorFlow (any other
test may have), MuJoCo's EGL rendering segfaults — the adapter refuses that with a clear error.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from vla_jax.envs import metaworld_tasks

mw = pytest.importorskip("metaworld", reason="Meta-World is an optional extra: make metaworld-deps")

from vla_jax.envs import metaworld as adapter  # noqa: E402


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                        env={**os.environ, **env})


def test_instructions_cover_every_v3_task_and_hold_out_one_paraphrase_each():
  assert set(metaworld_tasks.MT50) == set(mw.env_dict.ALL_V3_ENVIRONMENTS)
  assert metaworld_tasks.MT10 == tuple(mw.env_dict.MT10_V3)
  for task in metaworld_tasks.MT50:
    train, heldout = metaworld_tasks.instructions(task, "train"), metaworld_tasks.instructions(task, "heldout_paraphrase")
    assert len(train) == 2 and len(heldout) == 1 and not set(train) & set(heldout)
  phrasings = [p for t in metaworld_tasks.MT50 for p in metaworld_tasks.INSTRUCTIONS[t]]
  assert len(set(phrasings)) == len(phrasings), "two tasks share a phrasing"


def test_difficulty_groups_partition_mt50_as_published():
  groups = metaworld_tasks.DIFFICULTY
  assert {k: len(v) for k, v in groups.items()} == {"easy": 28, "medium": 11, "hard": 6, "very_hard": 5}
  assert sorted(t for v in groups.values() for t in v) == sorted(metaworld_tasks.MT50)


def test_a_missing_gl_library_is_one_error_saying_what_to_install(monkeypatch):
  def no_library(name):
    raise OSError(f"{name}: cannot open shared object file")

  for backend, package in (("egl", "libegl1"), ("osmesa", "libosmesa6")):
    monkeypatch.setenv("MUJOCO_GL", backend)
    with pytest.raises(adapter.MissingGLBackendError, match=f"MUJOCO_GL='{backend}'.*none of .* loads") as e:
      adapter.check_gl_backend(load=no_library)
    assert package in str(e.value) and "make metaworld-deps" in str(e.value)


@pytest.mark.slow
def test_the_data_command_reports_an_unusable_gl_backend_in_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.generate_data", "--config", "experiments/configs/metaworld_data.py:tiny",
       f"--config.data_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "MUJOCO_GL": "nonexistent"})
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and "MUJOCO_GL='nonexistent'" in lines[0] and "apt-get install" in lines[0]


@pytest.mark.slow
def test_rendering_in_a_tensorflow_process_is_refused_not_a_segfault():
  result = run_python("import tensorflow\nfrom vla_jax.envs.metaworld import MetaWorldEnv\n"
                      "MetaWorldEnv('reach-v3')")
  assert result.returncode == 1 and "num_workers" in result.stderr


@pytest.mark.slow
def test_the_scripted_expert_succeeds_through_the_adapter():
  result = run_python("""
import json
from vla_jax.envs.metaworld import MetaWorldEnv
out, diagnostics = {}, {}
for task in ("reach-v3", "drawer-close-v3", "push-v3"):
  env = MetaWorldEnv(task, image_size=64)
  wins = []
  for seed in range(3):
    obs, info = env.reset(seed)
    assert obs["image"].shape == (64, 64, 3) and obs["state"].shape == (4,), (obs["image"].shape, obs["state"].shape)
    done = False
    while not done:
      obs, reward, terminated, truncated, info = env.step(env.expert_action())
      done = terminated or truncated
    wins.append(bool(terminated))
  out[task] = wins
  diagnostics[task] = info["episode_diagnostics"]
env.reset(0)  # push, standing still for 5 steps: as far from the goal and the puck as it started.
for _ in range(5):
  info = env.step([0.0, 0.0, 0.0, -1.0])[-1]
diagnostics["push-v3 still"] = info["episode_diagnostics"]
env = MetaWorldEnv("pick-place-v3", image_size=64)
env.reset(0)
done = False
while not done:
  _, _, terminated, truncated, info = env.step(env.expert_action())
  done = terminated or truncated
diagnostics["pick-place-v3"] = dict(info["episode_diagnostics"], success=bool(terminated))
print(json.dumps([out, diagnostics]))
""")
  assert result.returncode == 0, result.stderr[-2000:]
  wins, diagnostics = json.loads(result.stdout.splitlines()[-1])
  assert wins == {t: [True] * 3 for t in ("reach-v3", "drawer-close-v3", "push-v3")}
  # The closest approach of a success is within the task's success radius (push, reach: 5 cm).
  assert diagnostics["push-v3"]["closest_to_goal_m"] < 0.05 and diagnostics["reach-v3"]["closest_to_goal_m"] < 0.05
  # Pick-place: the hand reached the puck (it carried it), and the puck came within 7 cm of the goal.
  assert diagnostics["pick-place-v3"]["success"] and diagnostics["pick-place-v3"]["closest_to_goal_m"] < 0.07
  # The hand's reference point sits ~3.5 cm above the fingertips: holding the puck is ~3.5 cm.
  assert diagnostics["pick-place-v3"]["hand_to_object_m"] < 0.045 and diagnostics["push-v3"]["hand_to_object_m"] < 0.045
  assert diagnostics["push-v3 still"]["hand_to_object_m"] > 0.08  # Standing still, the hand never got there.
  assert diagnostics["push-v3 still"]["closest_to_goal_m"] > 0.05
  assert diagnostics["reach-v3"]["hand_to_object_m"] is None  # Reach has no task object.


@pytest.mark.slow
def test_images_are_upright_and_unmirrored_for_every_corner_camera():
  # Physical, not a copy of the adapter's rule: lowering the hand must move it down the image, and
  # moving it towards the camera's right (look direction x world up) must move it right.
  result = run_python("""
import json
import numpy as np
from vla_jax.envs.metaworld import MetaWorldEnv  # Before mujoco: it sets MUJOCO_GL.
import mujoco

def hand_centroid(env):
  seg = env.render(segmentation=True)
  m = env.env.model
  hand = {g for g in range(m.ngeom) if mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, m.geom_bodyid[g])
          in ("hand", "rightclaw", "leftclaw", "rightpad", "leftpad")}
  mask = (seg[..., 1] == mujoco.mjtObj.mjOBJ_GEOM) & np.isin(seg[..., 0], list(hand))
  rows, cols = np.nonzero(mask)
  return float(rows.mean()), float(cols.mean())

out = {}
for camera in ("corner", "corner2", "corner3", "corner4"):
  env = MetaWorldEnv("reach-v3", image_size=128, camera=camera)
  env.reset(0)
  cam = env.env.model.camera(camera).id
  forward = -env.env.data.cam_xmat[cam].reshape(3, 3)[:, 2]
  right = np.cross(forward, [0.0, 0.0, 1.0])[:2]
  right /= np.linalg.norm(right)
  r0, c0 = hand_centroid(env)
  for _ in range(10):
    env.step(np.array([0, 0, -1, 0], np.float32))
  r1, c1 = hand_centroid(env)
  for _ in range(12):
    env.step(np.array([right[0], right[1], 0, 0], np.float32))
  r2, c2 = hand_centroid(env)
  out[camera] = {"down_moves_rows": r1 - r0, "right_moves_cols": c2 - c1}
print(json.dumps(out))
""")
  assert result.returncode == 0, result.stderr[-2000:]
  for camera, moved in json.loads(result.stdout.splitlines()[-1]).items():
    assert moved["down_moves_rows"] > 2, (camera, moved)  # A flipped image moves it ~as far up.
    assert moved["right_moves_cols"] > 2, (camera, moved)


def test_a_bad_field_of_view_is_named():
  for fovy in (0, 200, "45"):
    with pytest.raises(ValueError, match=r"camera_fovy=.* expected None \(the camera's own\) or degrees"):
      adapter.MetaWorldEnv("reach-v3", camera_fovy=fovy)


def test_bad_extra_cameras_are_named():
  for extra in (("nope",), ("corner4",), ("gripperPOV", "gripperPOV")):
    with pytest.raises(ValueError, match=r"extra_cameras=.* expected distinct cameras"):
      adapter.MetaWorldEnv("reach-v3", camera="corner4", extra_cameras=extra)
  from experiments.configs import metaworld_data
  from vla_jax.data import metaworld_builder

  config = metaworld_data.get_config("tiny_wrist")
  config.env.extra_cameras = ("corner4",)  # The primary camera again: refused before any process starts.
  with pytest.raises(ValueError, match=r"config.env.extra_cameras=\('corner4',\) is not valid.*config.env.camera="):
    metaworld_builder.validate_config(config)


@pytest.mark.slow
def test_a_narrower_field_of_view_magnifies_the_same_view():
  # 60° -> 45°: tan(30°) / tan(22.5°) = 1.39x in each direction, ~1.9x the area of any object.
  result = run_python("""
import json
import numpy as np
from vla_jax.envs.metaworld import MetaWorldEnv  # Before mujoco: it sets MUJOCO_GL.
import mujoco

out = {}
for fovy in (None, 45.0):
  env = MetaWorldEnv("push-v3", image_size=96, camera="corner4", camera_fovy=fovy)
  env.reset(3)
  seg = env.render(segmentation=True)
  m = env.env.model
  puck = {g for g in range(m.ngeom) if mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, m.geom_bodyid[g]) == "obj"}
  out[str(fovy)] = int(((seg[..., 1] == mujoco.mjtObj.mjOBJ_GEOM) & np.isin(seg[..., 0], list(puck))).sum())
print(json.dumps(out))
""")
  assert result.returncode == 0, result.stderr[-2000:]
  pixels = json.loads(result.stdout.splitlines()[-1])
  assert pixels["None"] > 0 and 1.5 < pixels["45.0"] / pixels["None"] < 2.5, pixels


@pytest.mark.slow
def test_referents_are_projected_where_the_renderer_draws_them():
  # Independent of the pinhole maths: the puck's segmentation centroid in the rendered frame.
  result = run_python("""
import json
import numpy as np
from vla_jax.envs.metaworld import MetaWorldEnv  # Before mujoco: it sets MUJOCO_GL.
import mujoco

out = []
# (primary camera, the view labelled and rendered, field of view): the last a second view.
for primary, camera, fovy in (("corner4", "corner4", None), ("corner4", "corner4", 45.0), ("corner2", "corner2", None),
                              ("corner4", "corner", None)):
  extra = (camera,) if camera != primary else ()
  env = MetaWorldEnv("push-v3", image_size=96, camera=primary, camera_fovy=fovy, extra_cameras=extra)
  for seed in (1, 2):
    env.reset(seed)
    for _ in range(20):
      env.step(env.expert_action())
    seg = env.render(segmentation=True, camera=camera)
    m = env.env.model
    puck = {g for g in range(m.ngeom) if mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, m.geom_bodyid[g]) == "obj"}
    ys, xs = np.nonzero((seg[..., 1] == mujoco.mjtObj.mjOBJ_GEOM) & np.isin(seg[..., 0], list(puck)))
    ref = env.referents(camera)
    behind = env.project(2 * env.env.data.cam_xpos[m.camera(camera).id] - env.env.data.body("obj").xpos, camera)[1]
    out.append({"label": (ref["position"][0] * 96).tolist(), "centroid": [xs.mean() + 0.5, ys.mean() + 0.5],
                "valid": ref["valid"].tolist(), "behind_in_view": bool(behind[0])})
  env.close()
reach = MetaWorldEnv("reach-v3", image_size=64)
reach.reset(0)
print(json.dumps({"push": out, "reach_valid": reach.referents()["valid"].tolist()}))
""")
  assert result.returncode == 0, result.stderr[-2000:]
  out = json.loads(result.stdout.splitlines()[-1])
  for case in out["push"]:
    assert case["valid"] == [True, True] and not case["behind_in_view"], case
    assert np.abs(np.subtract(case["label"], case["centroid"])).max() < 1.0, case  # Within a pixel at 96 px.
  assert out["reach_valid"] == [False, True]  # Reach has no object to act on; its goal is labelled.


@pytest.mark.slow
def test_vector_env_in_workers_freezes_finished_episodes_and_serves_smaller_batches():
  venv = adapter.VectorMetaWorldEnv(3, "reach-v3", num_workers=2, image_size=64, max_episode_steps=5,
                                    extra_cameras=("gripperPOV",))
  try:
    obs, infos = venv.reset([1, 2, 3])
    assert obs["image"].shape == obs["image_wrist"].shape == (3, 64, 64, 3) and obs["state"].shape == (3, 4)
    # The full state: proprio first, the goal (differing per scene) last.
    assert obs["env_state"].shape == (3, 39) and np.array_equal(obs["env_state"][:, :4], obs["state"])
    assert len({tuple(g) for g in obs["env_state"][:, -3:].round(4)}) == 3
    assert [i["instruction"] for i in infos] == [metaworld_tasks.instruction("reach-v3", "train", s) for s in (1, 2, 3)]
    for _ in range(7):
      obs, reward, terminated, truncated, _ = venv.step(np.zeros((3, 4), np.float32))
    assert venv.done.all() and (venv.lengths == 5).all() and truncated.all()
    frozen = obs["image"].copy()
    obs, *_ = venv.step(np.ones((3, 4), np.float32))
    np.testing.assert_array_equal(obs["image"], frozen)
    obs, _ = venv.reset([1, 2])  # A smaller batch on the same envs, same scenes as before.
    assert obs["image"].shape == (2, 64, 64, 3) and len(venv.scenes) == 2
    first = adapter.VectorMetaWorldEnv(1, "reach-v3", num_workers=1, image_size=64)
    again, _ = first.reset([1])
    first.close()
    np.testing.assert_array_equal(again["image"][0], obs["image"][0])
  finally:
    venv.close()


def test_depth_ambiguity_of_one_view_is_bounded_by_the_goal_box():
  from tests.conftest import load_benchmark

  views = load_benchmark("metaworld_views")
  low, high = np.array([-0.1, 0.8, 0.05]), np.array([0.1, 0.9, 0.3])
  # A goal on a plane (push's 1 cm box) is fixed by its ray; a tall box seen from above is not.
  assert views.depth_guess_success(np.array([0.0, 0.85, 1.5]), low * [1, 1, 0] + [0, 0, 0.01],
                                   high * [1, 1, 0] + [0, 0, 0.02], 0.05) == 1.0
  above = views.depth_guess_success(np.array([0.0, 0.85, 1.5]), low, high, 0.05)
  assert 0.3 < above < 0.6  # Depth along z, 25 cm deep: ~40 % within 5 cm of the middle.
  # Looking along y, where the box is 10 cm deep, the middle is always within 5 cm (plus a sliver of slant).
  assert views.depth_guess_success(np.array([0.0, 3.0, 0.175]), low, high, 0.05) > 0.95
  with pytest.raises(SystemExit, match="camera 'side' is not one of"):
    views.parse_view("side@45")
  assert views.parse_view("corner4@45") == ("corner4", 45.0) and views.parse_view("topview") == ("topview", None)
