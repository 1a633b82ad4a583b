"""Two robots in one policy: the built-in tabletop (3-D actions) and "arm7", the same
table driven by an arm turned 90° with 7-D end-effector actions (`vla_jax/data/synthetic_robots.py`).

  python -m experiments.train --config experiments/configs/tabletop_mixture.py --workdir runs/mixture
  python -m experiments.evaluate --workdir runs/mixture            # acts as the tabletop robot

arg: "token" (a learned embodiment token; default), "heads" (one action head per robot, plus the
token) or "none" (no embodiment input: the baseline that cannot tell the robots apart).
Everything else is the quickstart `small` recipe with the same 6 000 steps, so the tabletop's
closed-loop success can be compared with the quickstart policy trained on the tabletop alone.
"""

import ml_collections

from experiments.configs import tabletop
from vla_jax.data import spec, synthetic_robots
from vla_jax.models.config import embodiment_config


def get_config(arg: str = "token") -> ml_collections.ConfigDict:
  if arg not in ("token", "heads", "none"):
    raise ValueError(f"unknown variant {arg!r} of tabletop_mixture; expected 'token', 'heads' or 'none'")
  config = tabletop.get_config("small")
  # Both robots did the same 10 000 tabletop episodes (arm7 in its own frame), equally weighted.
  config.data.datasets = ml_collections.ConfigDict({
      "tabletop": spec.tabletop_spec("data/tabletop/1.0.0", weight=1.0),
      "arm7": synthetic_robots.arm7_spec("data/tabletop/1.0.0", weight=1.0),
  })
  config.data.action_dim = synthetic_robots.ARM7_ACTION_DIM  # Every robot's actions padded to 7 ...
  config.data.proprio_dim = synthetic_robots.ARM7_STATE_DIM  # ... and states to 6 (masks say which are real).
  config.model.action_dim = config.data.get_ref("action_dim")
  config.model.proprio_dim = config.data.get_ref("proprio_dim")
  if arg != "none":
    config.model.embodiment = embodiment_config(("tabletop", "arm7"), token=True, separate_heads=arg == "heads")
  config.eval_dataset = "tabletop"  # Closed-loop evaluation drives the simulator's own robot.
  return config
