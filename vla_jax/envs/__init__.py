"""The built-in language-conditioned tabletop simulator (see vla_jax/envs/README.md).

Importing this package registers the gymnasium ids in `ENV_IDS`, e.g.
`gymnasium.make("vla_jax/TabletopPlace-v0", split="heldout_combo")`. `ground_instruction` and
`with_instruction` turn a typed instruction into a task in a scene (README: "Typed instructions").
"""

import gymnasium as gym

from vla_jax.envs.expert import ScriptedExpert
from vla_jax.envs.tabletop import (
    ACTION_DIM, ACTION_NAMES, STATE_DIM, STATE_NAMES, SceneState, TabletopEnv, with_instruction,
)
from vla_jax.envs.tasks import Grounding, ground_instruction
from vla_jax.envs.vector import VectorTabletopEnv

ENV_IDS = {
    "vla_jax/Tabletop-v0": "any",
    "vla_jax/TabletopPlace-v0": "place",
    "vla_jax/TabletopPush-v0": "push",
    "vla_jax/TabletopPick-v0": "pick",
}

for _env_id, _family in ENV_IDS.items():
  if _env_id not in gym.registry:
    # No max_episode_steps here: the env truncates itself, so TimeLimit is not stacked on top.
    gym.register(id=_env_id, entry_point="vla_jax.envs.tabletop:TabletopEnv", kwargs={"task_family": _family})

__all__ = [
    "ACTION_DIM", "ACTION_NAMES", "ENV_IDS", "Grounding", "STATE_DIM", "STATE_NAMES", "SceneState", "ScriptedExpert",
    "TabletopEnv", "VectorTabletopEnv", "ground_instruction", "with_instruction",
]
