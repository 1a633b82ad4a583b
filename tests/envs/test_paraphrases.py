"""Specification of the "heldout_paraphrase" split: harder rewordings, never in training data."""

import re

import numpy as np
import pytest

from vla_jax.envs import tasks
from vla_jax.envs.tabletop import MAX_INSTRUCTION_CHARS, TabletopEnv

SLOTS = {"place": {"obj", "region"}, "push": {"obj", "ref"}, "pick": {"obj"}}
NAMES = [tasks.object_name(*c) for c in tasks.ALL_COMBOS]
LONGEST_NAME = max(NAMES, key=len)
LONGEST_REGION = max(tasks.REGIONS, key=len)


def familiar_verbs() -> set[str]:
  """The verb of every train and held-out template of every family."""
  return {tasks.template_verb(t) for f in tasks.FAMILIES for t in tasks.TEMPLATES[f].train + tasks.TEMPLATES[f].heldout}


def fill(template: str, obj: str = "red square", ref: str = "blue circle", region: str = "top left corner") -> str:
  return template.format(obj=obj, ref=ref, region=region)


@pytest.mark.parametrize("family", tasks.FAMILIES)
def test_each_family_has_four_to_six_paraphrases_with_the_familys_slots(family):
  paraphrases = tasks.TEMPLATES[family].paraphrase
  assert 4 <= len(paraphrases) <= 6 and len(set(paraphrases)) == len(paraphrases)
  for template in paraphrases:
    assert set(re.findall(r"\{(\w+)\}", template)) == SLOTS[family], template


def test_paraphrases_never_coincide_with_a_train_or_heldout_template():
  familiar = {t for f in tasks.FAMILIES for t in tasks.TEMPLATES[f].train + tasks.TEMPLATES[f].heldout}
  for family in tasks.FAMILIES:
    assert not set(tasks.TEMPLATES[family].paraphrase) & familiar, family


def test_no_paraphrase_uses_a_train_or_heldout_verb_even_inflected():
  familiar = familiar_verbs()
  for family in tasks.FAMILIES:
    for template in tasks.TEMPLATES[family].paraphrase:
      assert tasks.template_verb(template) not in familiar, template
      for word in tasks.template_words(template):  # Not anywhere, not as "placed" or "lifting" either.
        assert not any(word.startswith(verb) for verb in familiar), (template, word)


def test_paraphrase_verbs_are_distinct_words():
  verbs = [tasks.template_verb(t) for f in tasks.FAMILIES for t in tasks.TEMPLATES[f].paraphrase]
  assert len(set(verbs)) == len(verbs), verbs


@pytest.mark.parametrize("family", tasks.FAMILIES)
def test_every_paraphrase_parses_back_as_a_paraphrase_of_its_family(family):
  for template in tasks.TEMPLATES[family].paraphrase:
    for obj, ref in zip(NAMES, NAMES[1:] + NAMES[:1]):
      for region in tasks.REGIONS:
        text = fill(template, obj, ref, region)
        parsed_family, kind, parsed_template, slots = tasks.parse_instruction(text)
        assert (parsed_family, kind, parsed_template) == (family, "paraphrase", template)
        assert slots == {k: v for k, v in dict(obj=obj, ref=ref, region=region).items() if k in SLOTS[family]}


def test_template_instructions_are_lowercase_words_within_the_length_limits():
  """The datasets' charset; and paraphrases fit the default 64-byte language tokens uncut."""
  allowed = set("abcdefghijklmnopqrstuvwxyz ")
  for family in tasks.FAMILIES:
    for kind in tasks.PHRASING_KINDS:
      for template in getattr(tasks.TEMPLATES[family], kind):
        text = fill(template, LONGEST_NAME, LONGEST_NAME, LONGEST_REGION)
        assert set(text) <= allowed, text
        assert len(text) <= MAX_INSTRUCTION_CHARS
        if kind == "paraphrase":
          assert len(text.encode()) <= 64, text  # vla_jax.models.config: language max_len = 64.


def test_heldout_paraphrase_scenes_use_only_paraphrases_and_train_combos():
  env = TabletopEnv(split="heldout_paraphrase")
  kinds, families = set(), set()
  for seed in range(200):
    obs, info = env.reset(seed=seed)
    family, kind, _, _ = tasks.parse_instruction(obs["instruction"])
    kinds.add(kind)
    families.add(family)
    assert family == env.scene.family and info["split"] == "heldout_paraphrase"
    assert set(zip(env.scene.obj_colour, env.scene.obj_shape)) <= set(tasks.TRAIN_COMBOS)
    assert env.observation_space.contains(obs)
  assert kinds == {"paraphrase"} and families == set(tasks.FAMILIES)


def test_paraphrase_scenes_are_the_seen_scenes_with_another_phrasing():
  """Only the last draw (the template) differs, so the condition is paired with "seen"."""
  seen, para = TabletopEnv(split="train"), TabletopEnv(split="heldout_paraphrase")
  for seed in range(50):
    a, _ = seen.reset(seed=seed)
    b, _ = para.reset(seed=seed)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert tasks.parse_instruction(a["instruction"])[3] == tasks.parse_instruction(b["instruction"])[3]


def test_nothing_that_generates_training_data_can_draw_a_paraphrase():
  from experiments.configs import tabletop_data

  for family in tasks.FAMILIES:
    assert not set(tasks.templates_for(family, "train")) & set(tasks.TEMPLATES[family].paraphrase)
  config = tabletop_data.get_config("default")
  env = TabletopEnv(**config.env.to_dict())  # As tabletop_episodes.generate_episodes builds it ...
  for seed in range(600):
    family = tasks.FAMILIES[seed % 3]
    obs, _ = env.reset(seed=seed, options={"task_family": family})  # ... and rollout_episode resets it.
    assert tasks.parse_instruction(obs["instruction"])[1] == "train", obs["instruction"]
