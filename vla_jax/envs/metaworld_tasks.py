"""Meta-World task lists, difficulty groups and the language each task is given (no MuJoCo needed).

Meta-World names its tasks (`"pick-place-v3"`) but ships no instructions, so each task gets three
phrasings written here: the first two are the training phrasings (the dataset cycles through them),
the third is held out — used only by the `heldout_paraphrase` evaluation condition, to measure
whether the policy reads the instruction or keys on the exact string.

Difficulty groups follow Seo et al. 2022 ("Masked World Models"), the grouping the SmolVLA paper
reports MT50 success in (easy 28, medium 11, hard 6, very hard 5).

This module imports nothing heavy, so configs and tests can name tasks without MuJoCo installed.
"""

from __future__ import annotations

from typing import Sequence

# The MT10 suite as `metaworld.env_dict.MT10_V3` orders it.
MT10: tuple[str, ...] = (
    "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
    "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3",
)

# (training phrasing, training phrasing, held-out paraphrase) per task.
INSTRUCTIONS: dict[str, tuple[str, str, str]] = {
    "assembly-v3": ("put the ring on the peg", "slide the round nut down onto the peg",
                    "fit the loop over the post"),
    "basketball-v3": ("dunk the ball into the basket", "put the ball in the hoop",
                      "score by dropping the ball through the net"),
    "bin-picking-v3": ("move the cube from one bin to the other", "pick the block out of the bin and drop it in the other bin",
                       "transfer the cube into the neighbouring container"),
    "box-close-v3": ("put the lid on the box", "close the box with its lid",
                     "cover the box by placing the top on it"),
    "button-press-topdown-v3": ("press the button from the top", "push the button down",
                                "hit the button from above"),
    "button-press-topdown-wall-v3": ("press the button behind the wall from the top",
                                     "push down the button next to the wall",
                                     "hit the walled button from above"),
    "button-press-v3": ("press the button from the front", "push the button in",
                        "poke the button straight ahead"),
    "button-press-wall-v3": ("press the button behind the wall", "push in the button past the wall",
                             "reach around the wall and poke the button"),
    "coffee-button-v3": ("press the button on the coffee machine", "push the coffee machine's button",
                         "start the coffee maker with its button"),
    "coffee-pull-v3": ("pull the mug away from the coffee machine", "slide the cup out from under the coffee machine",
                       "take the mug back from the coffee maker"),
    "coffee-push-v3": ("push the mug under the coffee machine", "slide the cup into the coffee machine",
                       "move the mug beneath the coffee maker's spout"),
    "dial-turn-v3": ("turn the dial", "rotate the knob",
                     "twist the dial around"),
    "disassemble-v3": ("take the ring off the peg", "lift the round nut off the peg",
                       "remove the loop from the post"),
    "door-close-v3": ("close the door", "push the door shut",
                      "swing the door closed"),
    "door-lock-v3": ("lock the door", "turn the door lock down",
                     "secure the door by rotating its lock"),
    "door-open-v3": ("open the door", "pull the door open",
                     "swing the door wide by its handle"),
    "door-unlock-v3": ("unlock the door", "turn the door lock up",
                       "release the door's lock"),
    "hand-insert-v3": ("put the puck into the hole", "slide the puck into the hole in the table",
                       "drop the disc into the opening"),
    "drawer-close-v3": ("close the drawer", "push the drawer shut",
                        "slide the drawer back in"),
    "drawer-open-v3": ("open the drawer", "pull the drawer out",
                       "slide the drawer open by its handle"),
    "faucet-open-v3": ("turn the faucet on", "rotate the tap handle to open it",
                       "open the water tap"),
    "faucet-close-v3": ("turn the faucet off", "rotate the tap handle to close it",
                        "shut the water tap"),
    "hammer-v3": ("hammer the nail in", "drive the nail with the hammer",
                  "pick up the hammer and knock the nail into the wall"),
    "handle-press-side-v3": ("press the handle down from the side", "push the side handle down",
                             "lower the lever from the side"),
    "handle-press-v3": ("press the handle down", "push the handle down",
                        "lower the lever"),
    "handle-pull-side-v3": ("pull the handle up from the side", "lift the side handle",
                            "raise the lever from the side"),
    "handle-pull-v3": ("pull the handle up", "lift the handle",
                       "raise the lever"),
    "lever-pull-v3": ("pull the lever up", "lift the lever",
                      "swing the lever upwards"),
    "peg-insert-side-v3": ("insert the peg into the hole from the side", "push the peg sideways into the hole",
                           "slot the stick into the side opening"),
    "pick-place-wall-v3": ("pick up the puck and place it at the goal behind the wall",
                           "lift the puck over the wall to the goal",
                           "carry the disc past the wall to the target"),
    "pick-out-of-hole-v3": ("pick the puck out of the hole", "lift the puck out of the hole",
                            "take the disc up out of the opening"),
    "reach-v3": ("reach the goal position", "move the gripper to the target",
                 "bring your hand to the goal spot"),
    "push-back-v3": ("push the puck back to the goal", "slide the puck backwards to the target",
                     "shove the disc towards you onto the goal"),
    "push-v3": ("push the puck to the goal", "slide the puck to the target",
                "shove the disc over to the goal spot"),
    "pick-place-v3": ("pick up the puck and place it at the goal", "move the puck to the target through the air",
                      "grab the disc and put it down on the goal spot"),
    "plate-slide-v3": ("slide the plate into the goal", "push the plate into the net",
                       "shove the plate forward into the cage"),
    "plate-slide-side-v3": ("slide the plate sideways into the goal", "push the plate into the net from the side",
                            "shove the plate across into the cage"),
    "plate-slide-back-v3": ("slide the plate back out of the goal", "pull the plate out of the net",
                            "draw the plate backwards from the cage"),
    "plate-slide-back-side-v3": ("slide the plate sideways out of the goal", "pull the plate out of the net from the side",
                                 "draw the plate across out of the cage"),
    "peg-unplug-side-v3": ("unplug the peg from the side", "pull the peg out of the hole",
                           "draw the stick out of its socket"),
    "soccer-v3": ("push the ball into the goal", "kick the soccer ball into the net",
                  "score a goal with the ball"),
    "stick-push-v3": ("push the bottle with the stick", "use the stick to push the bottle to the goal",
                      "grab the stick and shove the bottle along with it"),
    "stick-pull-v3": ("pull the bottle with the stick", "use the stick to pull the bottle to the goal",
                      "grab the stick and drag the bottle back with it"),
    "push-wall-v3": ("push the puck around the wall to the goal", "slide the puck past the wall to the target",
                     "shove the disc around the barrier onto the goal"),
    "reach-wall-v3": ("reach over the wall to the goal", "move the gripper past the wall to the target",
                      "bring your hand over the barrier to the goal spot"),
    "shelf-place-v3": ("place the block on the shelf", "put the cube onto the shelf",
                       "set the block down on the rack"),
    "sweep-into-v3": ("sweep the puck into the hole", "push the puck into the hole",
                      "brush the disc into the opening"),
    "sweep-v3": ("sweep the puck off the table", "push the puck off the edge of the table",
                 "brush the disc over the side"),
    "window-open-v3": ("open the window", "slide the window open",
                       "push the window pane aside to open it"),
    "window-close-v3": ("close the window", "slide the window shut",
                        "push the window pane back to close it"),
}

MT50: tuple[str, ...] = tuple(INSTRUCTIONS)

# Seo et al. 2022's groups (names without the version suffix there).
DIFFICULTY: dict[str, tuple[str, ...]] = {
    "easy": tuple(f"{t}-v3" for t in (
        "button-press", "button-press-topdown", "button-press-topdown-wall", "button-press-wall",
        "coffee-button", "dial-turn", "door-close", "door-lock", "door-open", "door-unlock", "drawer-close",
        "drawer-open", "faucet-close", "faucet-open", "handle-press", "handle-press-side", "handle-pull",
        "handle-pull-side", "lever-pull", "plate-slide", "plate-slide-back", "plate-slide-back-side",
        "plate-slide-side", "reach", "reach-wall", "window-close", "window-open", "peg-unplug-side")),
    "medium": tuple(f"{t}-v3" for t in (
        "basketball", "bin-picking", "box-close", "coffee-pull", "coffee-push", "hammer", "peg-insert-side",
        "push-wall", "soccer", "sweep", "sweep-into")),
    "hard": tuple(f"{t}-v3" for t in (
        "assembly", "hand-insert", "pick-out-of-hole", "pick-place", "push", "push-back")),
    "very_hard": tuple(f"{t}-v3" for t in (
        "shelf-place", "disassemble", "stick-pull", "stick-push", "pick-place-wall")),
}

SUITES: dict[str, tuple[str, ...]] = {"MT10": MT10, "MT50": MT50}

# Instruction splits: which phrasings of a task an episode may be given.
SPLITS = ("train", "heldout_paraphrase")


def difficulty(task: str) -> str:
  """The difficulty group of a task ("easy", "medium", "hard" or "very_hard")."""
  for group, members in DIFFICULTY.items():
    if task in members:
      return group
  raise ValueError(f"Meta-World task {task!r} has no difficulty group; expected one of the 50 in MT50")


def resolve_tasks(tasks: str | Sequence[str]) -> tuple[str, ...]:
  """A suite name ("MT10", "MT50"), task names ("push-v3,reach-v3" or a list) -> the checked names, in order."""
  if isinstance(tasks, str):
    if tasks in SUITES:
      return SUITES[tasks]
    tasks = tuple(t.strip() for t in tasks.split(","))
  tasks = tuple(tasks)
  unknown = [t for t in tasks if t not in INSTRUCTIONS]
  if unknown or not tasks:
    raise ValueError(f"Meta-World tasks {unknown or tasks!r} are not valid; expected a suite name "
                     f"({', '.join(SUITES)}) or names among {list(MT50)}")
  return tasks


def instructions(task: str, split: str = "train") -> tuple[str, ...]:
  """The phrasings of `task` that episodes of `split` are given."""
  if split not in SPLITS:
    raise ValueError(f"instruction split {split!r} is not valid; expected one of {SPLITS}")
  if task not in INSTRUCTIONS:
    raise ValueError(f"Meta-World task {task!r} is unknown; expected one of {list(MT50)}")
  phrasings = INSTRUCTIONS[task]
  return phrasings[:2] if split == "train" else phrasings[2:]


def instruction(task: str, split: str, index: int) -> str:
  """The `index`-th episode's phrasing (cycling through the split's phrasings)."""
  options = instructions(task, split)
  return options[int(index) % len(options)]
