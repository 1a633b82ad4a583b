"""Vocabulary, task families, phrasing templates, the held-out evaluation splits and grounding.

The tabletop is a 2-D table seen from above, coordinates in [0, 1]^2 with x to the right and y
downwards (image rows), so "top left" means small x and small y.

Generalisation splits (documented in vla_jax/envs/README.md, checked by tests):
  * `HELDOUT_COMBOS`: six colour-shape pairs (one per colour, every shape at least once) that never
    appear in a "train" scene — not as target, not as distractor. The "heldout_combo" split uses one
    of them as the target, so a policy must compose a colour and a shape it saw only separately.
  * Each family has three groups of phrasing templates. "train" and "heldout_combo" scenes use only
    `train` templates; "heldout_phrasing" scenes only `heldout` ones (new wordings of familiar
    verbs); "heldout_paraphrase" scenes only `paraphrase` ones, which differ more: changed word
    order, filler and politeness words, and a verb that no train or held-out template uses (a test
    of whether a pretrained sentence encoder carries the policy to words it never saw).

Grounding (`ground_instruction`): any text a person types is mapped to a task in a given scene —
family, target, reference object, region — or declared not judgeable with a note saying why, so
a typed instruction can be run and scored only on what it actually asked.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Sequence

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 225),
    "yellow": (235, 205, 30),
    "purple": (150, 60, 195),
    "orange": (250, 135, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")

ALL_COMBOS: tuple[tuple[str, str], ...] = tuple(itertools.product(COLOURS, SHAPES))
HELDOUT_COMBOS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "diamond"),
    ("blue", "circle"),
    ("yellow", "square"),
    ("purple", "diamond"),
    ("orange", "circle"),
)
TRAIN_COMBOS: tuple[tuple[str, str], ...] = tuple(c for c in ALL_COMBOS if c not in HELDOUT_COMBOS)

# Goal regions of the "place" family: name -> (x0, y0, x1, y1) in table coordinates.
REGION_SIZE = 0.3
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "top left corner": (0.0, 0.0, REGION_SIZE, REGION_SIZE),
    "top right corner": (1.0 - REGION_SIZE, 0.0, 1.0, REGION_SIZE),
    "bottom left corner": (0.0, 1.0 - REGION_SIZE, REGION_SIZE, 1.0),
    "bottom right corner": (1.0 - REGION_SIZE, 1.0 - REGION_SIZE, 1.0, 1.0),
}

FAMILIES: tuple[str, ...] = ("place", "push", "pick")
SPLITS: tuple[str, ...] = ("train", "heldout_phrasing", "heldout_combo", "heldout_paraphrase")


@dataclasses.dataclass(frozen=True)
class Templates:
  """The phrasings of one family, by group (see the module docstring for which split uses which)."""

  train: tuple[str, ...]
  heldout: tuple[str, ...]
  paraphrase: tuple[str, ...]


# Template instructions use only lowercase letters and spaces (the charset the datasets were written
# with): the paraphrases' commas are left out ("into the corner deposit the red square please").


# {obj} is the target ("red square"), {ref} the reference object of "push", {region} a REGIONS key.
TEMPLATES: dict[str, Templates] = {
    "place": Templates(
        train=(
            "put the {obj} in the {region}",
            "move the {obj} to the {region}",
            "place the {obj} in the {region}",
            "carry the {obj} over to the {region}",
        ),
        heldout=(
            "set the {obj} down in the {region}",
            "the {obj} belongs in the {region}",
        ),
        paraphrase=(
            "um drop the {obj} in the {region}",
            "could you park the {obj} in the {region}",
            "kindly position the {obj} in the {region}",
            "into the {region} deposit the {obj} please",
            "go ahead and drag the {obj} to the {region}",
        ),
    ),
    "push": Templates(
        train=(
            "push the {obj} next to the {ref}",
            "slide the {obj} over to the {ref}",
            "nudge the {obj} toward the {ref}",
        ),
        heldout=(
            "shove the {obj} until it touches the {ref}",
            "bring the {obj} beside the {ref} without lifting it",
        ),
        paraphrase=(
            "scoot the {obj} over so it sits by the {ref}",
            "um roll the {obj} up against the {ref}",
            "could you shift the {obj} beside the {ref}",
            "go ahead and sweep the {obj} to the {ref}",
            "over to the {ref} steer the {obj} please",
            "kindly budge the {obj} toward the {ref}",
        ),
    ),
    "pick": Templates(
        train=(
            "pick up the {obj}",
            "grab the {obj}",
            "grasp the {obj}",
            "lift the {obj}",
        ),
        heldout=(
            "take hold of the {obj}",
            "get the {obj} into your gripper",
        ),
        paraphrase=(
            "raise the {obj} off the table",
            "um hoist the {obj} up",
            "could you please seize the {obj}",
            "would you kindly snatch the {obj}",
            "go ahead and clutch the {obj}",
            "the {obj} is the one to pluck off the table",
        ),
    ),
}
PHRASING_KINDS: tuple[str, ...] = ("train", "heldout", "paraphrase")  # The `Templates` groups.
# The words that name objects and places: an instruction without them names no single task.
NAME_WORDS = frozenset(COLOURS) | frozenset(SHAPES) | frozenset(w for r in REGIONS for w in r.split())
# Articles, pronouns, prepositions, politeness and filler: words that never name a task. A
# template's verb is its first word outside this set; grounding never reads them as task cues.
FUNCTION_WORDS = frozenset({
    "a", "an", "the", "it", "you", "your", "one", "is", "and", "so", "to", "into", "in", "over", "of", "off",
    "up", "by", "please", "kindly", "could", "would", "um", "uh", "go", "ahead",
})


def object_name(colour: str, shape: str) -> str:
  return f"{colour} {shape}"


def templates_for(family: str, split: str) -> tuple[str, ...]:
  """The templates a split phrases a family's instructions with ("train": only the train group)."""
  check_choice("task_family", family, FAMILIES)
  check_choice("split", split, SPLITS)
  t = TEMPLATES[family]
  if split == "heldout_phrasing":
    return t.heldout
  if split == "heldout_paraphrase":
    return t.paraphrase
  return t.train


def template_words(template: str) -> list[str]:
  """The fixed words of a template, in order, slots ({obj}, {ref}, {region}) left out."""
  return re.sub(r"\{\w+\}", " ", template).split()


def template_verb(template: str) -> str:
  """A template's verb: its first fixed word that is not in `FUNCTION_WORDS`.

  ("the {obj} belongs in the {region}" -> "belongs"; "into the {region} deposit the {obj} please"
  -> "deposit"). Tests use it to prove that no paraphrase shares a verb with a train or held-out
  template.
  """
  for word in template_words(template):
    if word not in FUNCTION_WORDS:
      return word
  raise ValueError(f"template {template!r} has no verb: every word is in FUNCTION_WORDS")


def check_choice(name: str, value, allowed) -> None:
  """Raises a ValueError naming the argument, the bad value and the allowed ones."""
  if value not in allowed:
    raise ValueError(f"{name}={value!r} is not valid; expected one of {list(allowed)}")


_OBJ = "(?P<obj>[a-z]+ [a-z]+)"
_REF = "(?P<ref>[a-z]+ [a-z]+)"
_REGION = "(?P<region>" + "|".join(REGIONS) + ")"


def template_regex(template: str) -> re.Pattern:
  """A regex that matches exactly the instructions a template can produce."""
  body = re.escape(template).replace(r"\{obj\}", _OBJ).replace(r"\{ref\}", _REF)
  return re.compile("^" + body.replace(r"\{region\}", _REGION) + "$")


def parse_instruction(instruction: str) -> tuple[str, str, str, dict[str, str]]:
  """Finds which family/phrasing produced an instruction: (family, kind, template, slots).

  kind is the template group: "train", "heldout" or "paraphrase". Raises ValueError if no template
  matches. Used by tests and the dataset audit to prove that held-out phrasings and paraphrases
  never occur in training data. (For text a person typed, see `ground_instruction`.)
  """
  for family, t in TEMPLATES.items():
    for kind in PHRASING_KINDS:
      for template in getattr(t, kind):
        m = template_regex(template).match(instruction)
        if m:
          return family, kind, template, m.groupdict()
  raise ValueError(f"instruction {instruction!r} matches no template of {list(TEMPLATES)}")


# -- Grounding: text a person typed -> a task in one scene ------------------------------------------


def _family_cues() -> dict[str, frozenset[str]]:
  """Words of exactly one family's templates (any group), function words left out."""
  words = {
      f: {w for kind in PHRASING_KINDS for t in getattr(TEMPLATES[f], kind) for w in template_words(t)} - FUNCTION_WORDS
      for f in FAMILIES
  }
  return {f: frozenset(words[f].difference(*(words[g] for g in FAMILIES if g != f))) for f in FAMILIES}


# The verbs and other words that say which family a text means ("grab" -> pick, "nudge" -> push).
FAMILY_CUES: dict[str, frozenset[str]] = _family_cues()
# A word just before an object mention (articles skipped) that makes it the reference of a push:
# "next TO the blue circle", "BESIDE the blue circle", "so it sits BY the blue circle".
RELATION_WORDS = frozenset({"to", "toward", "towards", "beside", "by", "near", "against", "touches", "touching"})
_ARTICLES = frozenset({"a", "an", "the"})


@dataclasses.dataclass(frozen=True)
class Grounding:
  """What an instruction asks for among one scene's objects (see `ground_instruction`).

  family is None when the instruction cannot be judged in the scene; `note` then says why. Else
  `target` (and for "push" `ref`) index the scene's objects, `region` is a REGIONS key for
  "place", and `note` says what the instruction was understood as.
  """

  family: str | None
  target: int = -1
  ref: int = -1
  region: str = ""
  note: str = ""

  @property
  def judgeable(self) -> bool:
    return self.family is not None


def _join(names: Sequence[str]) -> str:
  return ", ".join(names)


def _mentions(words: list[str], first: Sequence[str], second: Sequence[str]) -> list[tuple[str, int]]:
  """Distinct "<first> <second>" word pairs in order of first mention: [(pair, word index)]."""
  found: dict[str, int] = {}
  for i in range(len(words) - 1):
    if words[i] in first and words[i + 1] in second:
      found.setdefault(f"{words[i]} {words[i + 1]}", i)
  return list(found.items())


def _names_a_relation(words: list[str], index: int) -> bool:
  """Whether the mention at words[index] follows a relation word ("next to [the] ...")."""
  j = index - 1
  while j >= 0 and words[j] in _ARTICLES:
    j -= 1
  return j >= 0 and words[j] in RELATION_WORDS


def ground_instruction(text: str, object_names: Sequence[str]) -> Grounding:
  """Maps free text to a task among a scene's objects, or says why it cannot be judged there.

  Args:
    text: any instruction; case, punctuation and extra words are ignored ("Please grab the RED
      square!" is "pick: red square"). Objects are named "<colour> <shape>", corners "top left"
      (with or without "corner"), as in the templates; no synonyms.
    object_names: the scene's objects in index order ("red square", ...; `SceneState.object_names`).

  The goal the text names decides the family, because success is judged on it: a corner -> place,
  a second object -> push (the one after a relation word such as "to", "beside", "by" is the
  reference, else the second mentioned), neither -> pick, if a pick word is present. Words of only
  one family's templates (`FAMILY_CUES`, paraphrases included) break the tie when a corner and a
  second object are both named. Not judgeable (family None): no object, an object that is not in
  the scene, more than two objects or corners, or no way to tell the family.
  """
  words = re.sub(r"[^a-z]+", " ", text.lower()).split()
  objects = _mentions(words, COLOURS, SHAPES)
  regions = [f"{name} corner" for name, _ in _mentions(words, ("top", "bottom"), ("left", "right"))]
  scene_has = f"(scene has: {_join(object_names)})"
  absent = [name for name, _ in objects if name not in object_names]
  if absent:
    verb = "is" if len(absent) == 1 else "are"
    return Grounding(None, note=f"the {_join(absent)} named in the instruction {verb} not in the scene {scene_has}")
  if not objects:
    return Grounding(None, note=f"no object named in the instruction is in the scene {scene_has}")
  if len(objects) > 2:
    return Grounding(None, note=f"the instruction names {len(objects)} objects ({_join([n for n, _ in objects])}); "
                                "a task names one (pick, place) or two (push: the object and what to push it next to)")
  if len(regions) > 1:
    return Grounding(None, note=f"the instruction names {len(regions)} corners ({_join(regions)}); place needs one")
  cues = {f: sum(w in FAMILY_CUES[f] for w in words) for f in FAMILIES}
  target = objects[0][0]
  if regions and len(objects) == 2:
    if cues["place"] == cues["push"]:
      return Grounding(None, note=f"the instruction names a corner and two objects ({_join([n for n, _ in objects])}) "
                                  "and its words do not tell place from push")
    family = "place" if cues["place"] > cues["push"] else "push"
  elif regions:
    family = "place"
  elif len(objects) == 2:
    family = "push"
  elif cues["pick"]:
    family = "pick"
  elif cues["place"]:
    return Grounding(None, note=f"the instruction reads as place but names no corner (one of: {_join(REGIONS)})")
  elif cues["push"]:
    return Grounding(None, note=f"the instruction reads as push but names no second object to push the {target} "
                                "next to")
  else:
    return Grounding(None, note=f"the instruction names the {target} but no corner, second object or known verb "
                                "(e.g. pick up, put, push), so its task cannot be told")
  ref, region = "", ""
  if family == "push":
    (target, at_target), (ref, at_ref) = objects
    if _names_a_relation(words, at_target) and not _names_a_relation(words, at_ref):
      target, ref = ref, target
  elif family == "place":
    region = regions[0]
  understood = TEMPLATES[family].train[0].format(obj=target, ref=ref, region=region)
  return Grounding(
      family=family,
      target=list(object_names).index(target),
      ref=list(object_names).index(ref) if ref else -1,
      region=region,
      note=f"understood as: {understood}",
  )


def same_task(text: str, other: str, object_names: Sequence[str]) -> bool:
  """Whether `other` asks, among one scene's objects, for the task `text` asks for.

  Wordings of one task match ("grab the red square", "lift the red square"); False when `text`
  cannot be judged in the scene.
  """
  a, b = ground_instruction(text, object_names), ground_instruction(other, object_names)
  return a.judgeable and (a.family, a.target, a.ref, a.region) == (b.family, b.target, b.ref, b.region)
