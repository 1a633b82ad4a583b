"""Vocabulary, task families, phrasing templates and the held-out evaluation split.

The tabletop is a 2-D table seen from above, coordinates in [0, 1]^2 with x to the right and y
downwards (image rows), so "top left" means small x and small y.

Generalisation split (documented in vla_jax/envs/README.md, checked by tests):
  * `HELDOUT_COMBOS`: six colour-shape pairs (one per colour, every shape at least once) that never
    appear in a "train" scene — not as target, not as distractor. The "heldout_combo" split uses one
    of them as the target, so a policy must compose a colour and a shape it saw only separately.
  * Each family has `train` and `heldout` phrasing templates. "train" and "heldout_combo" scenes use
    only train templates; "heldout_phrasing" scenes use only held-out ones.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

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
SPLITS: tuple[str, ...] = ("train", "heldout_phrasing", "heldout_combo")


@dataclasses.dataclass(frozen=True)
class Templates:
  train: tuple[str, ...]
  heldout: tuple[str, ...]


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
    ),
}


def object_name(colour: str, shape: str) -> str:
  return f"{colour} {shape}"


def templates_for(family: str, split: str) -> tuple[str, ...]:
  check_choice("task_family", family, FAMILIES)
  check_choice("split", split, SPLITS)
  t = TEMPLATES[family]
  return t.heldout if split == "heldout_phrasing" else t.train


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
  """Finds which family/phrasing produced an instruction: (family, 'train'|'heldout', template, slots).

  Raises ValueError if no template matches. Used by tests and the dataset audit to prove that
  held-out phrasings never occur in training data.
  """
  for family, t in TEMPLATES.items():
    for kind, group in (("train", t.train), ("heldout", t.heldout)):
      for template in group:
        m = template_regex(template).match(instruction)
        if m:
          return family, kind, template, m.groupdict()
  raise ValueError(f"instruction {instruction!r} matches no template of {list(TEMPLATES)}")
