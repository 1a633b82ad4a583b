"""Specification of typed instructions: grounding free text in a scene, and running it in the env."""

import numpy as np
import pytest

from vla_jax.envs import tasks
from vla_jax.envs.expert import ScriptedExpert
from vla_jax.envs.tabletop import TabletopEnv, in_region, is_success, referents, with_instruction

# A scene's objects in index order, as `SceneState.object_names()` lists them.
NAMES = ["red square", "blue circle", "green triangle", "yellow circle", "purple square"]


def ground(text, names=NAMES) -> tasks.Grounding:
  return tasks.ground_instruction(text, names)


def task_of(g: tasks.Grounding, names=NAMES) -> tuple:
  """(family, target name, ref name, region) of a grounding, names instead of indices."""
  return (g.family, names[g.target] if g.target >= 0 else "", names[g.ref] if g.ref >= 0 else "", g.region)


@pytest.mark.parametrize("kind", tasks.PHRASING_KINDS)
@pytest.mark.parametrize("family", tasks.FAMILIES)
def test_every_template_phrasing_grounds_to_its_own_task(family, kind):
  for template in getattr(tasks.TEMPLATES[family], kind):
    for i, obj in enumerate(NAMES):
      ref = NAMES[(i + 2) % len(NAMES)] if family == "push" else ""
      for region in tasks.REGIONS if family == "place" else [""]:
        g = ground(template.format(obj=obj, ref=ref, region=region))
        assert g.judgeable, (template, g.note)
        assert task_of(g) == (family, obj, ref, region), template


@pytest.mark.parametrize("text, expected", [
    ("Please grab the RED square!", ("pick", "red square", "", "")),
    ("hey, could you pick that Yellow Circle up for me?", ("pick", "yellow circle", "", "")),
    ("Could you put the blue circle in the top-left corner?", ("place", "blue circle", "", "top left corner")),
    ("the purple square goes bottom right", ("place", "purple square", "", "bottom right corner")),
    ("Lift the red square into the TOP RIGHT corner.", ("place", "red square", "", "top right corner")),
    ("PUSH the green triangle until it's touching the red square.", ("push", "green triangle", "red square", "")),
    ("Next to the blue circle, please shove the yellow circle.", ("push", "yellow circle", "blue circle", "")),
    ("move the red square to the blue circle", ("push", "red square", "blue circle", "")),
    ("move the red square to the blue circle in the top left corner", ("place", "red square", "", "top left corner")),
])
def test_hand_written_free_text_grounds_to_what_it_asks(text, expected):
  g = ground(text)
  assert g.judgeable, g.note
  assert task_of(g) == expected
  assert g.note.startswith("understood as: ")


@pytest.mark.parametrize("text, other, same", [
    ("lift the red square", "grab the red square", True),
    ("put the red square in the top left corner", "the red square belongs in the top left corner", True),
    ("push the red square next to the blue circle", "shove the red square until it touches the blue circle", True),
    ("lift the red square", "lift the purple square", False),
    ("put the red square in the top left corner", "put the red square in the top right corner", False),
    ("push the red square next to the blue circle", "push the blue circle next to the red square", False),
    ("lift the red square", "put the red square in the top left corner", False),
    ("lift the red square", "lift the orange diamond", False),  # Not in the scene: no task there.
    ("lift the orange diamond", "lift the orange diamond", False),  # Nothing to judge.
])
def test_same_task_compares_what_two_texts_ask_in_one_scene(text, other, same):
  assert tasks.same_task(text, other, NAMES) is same


def test_an_instruction_naming_an_absent_object_is_not_judgeable_and_says_so():
  g = ground("Please pick up the orange diamond")
  assert not g.judgeable and g.family is None
  assert g.note == ("the orange diamond named in the instruction is not in the scene "
                    "(scene has: red square, blue circle, green triangle, yellow circle, purple square)")
  g = ground("push the red square next to the orange diamond")  # One present, one absent.
  assert not g.judgeable and "orange diamond" in g.note and "not in the scene" in g.note


def test_an_instruction_naming_no_object_is_not_judgeable_and_lists_the_scene():
  for text in ("pick up the red thing", "grab it", "put the square in the top left corner"):
    g = ground(text)
    assert not g.judgeable
    assert g.note == ("no object named in the instruction is in the scene "
                      "(scene has: red square, blue circle, green triangle, yellow circle, purple square)")


@pytest.mark.parametrize("text, why", [
    ("push the red square", "names no second object"),
    ("put the red square over there", "names no corner"),
    ("dance with the red square", "cannot be told"),
    ("push the red square to the blue circle and the green triangle", "names 3 objects"),
    ("put the red square in the top left or the bottom right corner", "names 2 corners"),
])
def test_an_instruction_whose_task_cannot_be_told_is_not_judgeable(text, why):
  g = ground(text)
  assert not g.judgeable and why in g.note, g.note


# -- in the env -------------------------------------------------------------------------------------


def other_object(scene, seed: int) -> int:
  """An object of the scene that is neither its drawn target nor its reference."""
  others = [i for i in range(len(scene.obj_pos)) if i not in (scene.target, scene.ref)]
  return others[seed % len(others)]


def run_expert(env: TabletopEnv, seed: int):
  expert = ScriptedExpert()
  expert.reset(env.scene, seed=seed)
  while True:
    obs, reward, terminated, truncated, info = env.step(expert.act(env.scene))
    if terminated or truncated:
      return reward, terminated, info


def test_a_typed_instruction_keeps_the_seeded_scene_and_random_stream():
  plain, typed = TabletopEnv(), TabletopEnv()
  for seed in range(20):
    a, _ = plain.reset(seed=seed)
    b, info = typed.reset(seed=seed, options={"instruction": "  Please grab the RED square!  "})
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["state"], b["state"])
    assert plain.scene.object_names() == typed.scene.object_names()
    assert b["instruction"] == info["instruction"] == "Please grab the RED square!"
    assert typed.observation_space.contains(b)
    assert plain.np_random.integers(1 << 30) == typed.np_random.integers(1 << 30)


def test_without_a_typed_instruction_every_episode_is_judgeable_with_no_note():
  env = TabletopEnv()
  for seed in range(10):
    _, info = env.reset(seed=seed)
    assert info["judgeable"] is True and info["grounding_note"] == ""


@pytest.mark.parametrize("split", tasks.SPLITS)
def test_typing_the_scenes_own_instruction_gives_the_scenes_own_task(split):
  plain, typed = TabletopEnv(split=split), TabletopEnv(split=split)
  for seed in range(60):
    obs, _ = plain.reset(seed=seed)
    _, info = typed.reset(seed=seed, options={"instruction": obs["instruction"]})
    a, b = plain.scene, typed.scene
    assert info["judgeable"], info["grounding_note"]
    assert (a.family, a.target, a.ref, a.region) == (b.family, b.target, b.ref, b.region), obs["instruction"]


def test_a_typed_place_instruction_is_judged_on_the_named_object_not_the_drawn_one():
  env = TabletopEnv(task_family="pick")
  env.reset(seed=5)
  drawn_target, named = env.scene.target, other_object(env.scene, 5)
  name = env.scene.object_names()[named]
  _, info = env.reset(seed=5, options={"instruction": f"Could you put the {name.upper()} in the top left corner?"})
  s = env.scene
  assert info["judgeable"] and info["task_family"] == "place"
  assert (s.family, s.target, s.region) == ("place", named, "top left corner")
  np.testing.assert_allclose(referents(s)[0][1], [0.15, 0.15])
  moved = with_instruction(s, s.instruction)  # Drop the drawn target in the corner: not what was asked.
  moved.obj_pos[drawn_target] = [0.1, 0.1]
  assert not in_region(moved.obj_pos[named], "top left corner") and not is_success(moved)
  moved.obj_pos[named] = [0.2, 0.2]  # Now the named one.
  assert is_success(moved)


@pytest.mark.parametrize("scene_family, typed_family", [("pick", "place"), ("place", "push"), ("push", "pick")])
def test_the_scripted_expert_solves_typed_instructions_about_other_objects(scene_family, typed_family):
  """After grounding the expert follows the typed task, so its success is success on the text."""
  env = TabletopEnv(task_family=scene_family)
  successes = 0
  for seed in range(100):
    env.reset(seed=seed)
    names = env.scene.object_names()
    named = other_object(env.scene, seed)
    if typed_family == "place":
      region = list(tasks.REGIONS)[seed % 4]
      text = f"um, drop the {names[named]} in the {region.upper()} please"
    elif typed_family == "push":
      text = f"Nudge the {names[named]} toward the {names[env.scene.target]}!"
    else:
      text = f"Please grab the {names[named]}."
    _, info = env.reset(seed=seed, options={"instruction": text})
    assert info["judgeable"] and env.scene.family == typed_family and env.scene.target == named, text
    reward, terminated, info = run_expert(env, seed)
    successes += terminated
    assert info["success"] == terminated and reward == float(terminated)
  assert successes >= 98


def test_an_unjudgeable_episode_runs_to_the_end_and_never_succeeds():
  env = TabletopEnv(task_family="pick", max_episode_steps=60)
  env.reset(seed=3)
  absent = next(tasks.object_name(*c) for c in tasks.TRAIN_COMBOS
                if tasks.object_name(*c) not in env.scene.object_names())
  _, info = env.reset(seed=3, options={"instruction": f"pick up the {absent}"})
  assert info["judgeable"] is False and "not in the scene (scene has: " in info["grounding_note"]
  position, valid = referents(env.scene)
  assert not valid.any() and (position == 0).all()
  # The expert still does the drawn task (it reads the scene), and holding the drawn target would
  # be a pick success, but nothing is judged against a task the policy was not told.
  reward, terminated, info = run_expert(env, 3)
  assert env.scene.held == env.scene.target
  assert not terminated and reward == 0 and info["success"] is False and info["judgeable"] is False
  assert env.scene.steps == 60


def test_with_instruction_leaves_the_given_scene_unchanged():
  env = TabletopEnv(task_family="place")
  env.reset(seed=0)
  scene = env.scene
  before = (scene.obj_pos.copy(), scene.instruction, scene.family, scene.target)
  grounded = with_instruction(scene, "pick up the " + scene.object_names()[1])
  grounded.obj_pos[:] = 0.5
  assert grounded.family == "pick" and grounded.target == 1
  np.testing.assert_array_equal(scene.obj_pos, before[0])
  assert (scene.instruction, scene.family, scene.target) == before[1:]


@pytest.mark.parametrize("instruction, expected", [
    ("", "instruction=''"),
    ("   ", "instruction=''"),
    (7, "instruction=7"),
    ("put the red square in the top left corner " * 4, "at most 128"),
    ("put the red square in the top left corner ✓", "outside the observation charset"),
    ("pick up the red square\n", None),  # Surrounding whitespace is stripped, not refused.
])
def test_typed_instructions_outside_the_observation_space_are_refused(instruction, expected):
  env = TabletopEnv()
  if expected is None:
    obs, _ = env.reset(seed=0, options={"instruction": instruction})
    assert env.observation_space.contains(obs)
    return
  with pytest.raises(ValueError, match=expected):
    env.reset(seed=0, options={"instruction": instruction})
