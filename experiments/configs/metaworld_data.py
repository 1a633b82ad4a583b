"""Dataset generation config: Meta-World scripted-expert RLDS episodes from pixels, with language.

  python -m experiments.generate_data --config experiments/configs/metaworld_data.py         # MT10
  python -m experiments.generate_data --config experiments/configs/metaworld_data.py:mt50
  python -m experiments.generate_data --config experiments/configs/metaworld_data.py:mt10_wrist   # wrist camera
  python -m experiments.generate_data --config experiments/configs/metaworld_data.py:mt10_single  # corner4 only
  python -m experiments.generate_data --config experiments/configs/metaworld_data.py:tiny    # tests

Needs the optional extra (`make metaworld-deps`). See vla_jax/data/metaworld_builder.py.
"""

import ml_collections
from ml_collections import config_dict

# Name of a second view -> its Meta-World camera (image_<name> in the data; `envs.metaworld.CAMERA_NAMES`).
EXTRA_VIEWS = {"wrist": "gripperPOV", "corner": "corner"}
# Variant suffix -> the second view beside corner4 (as experiments/configs/metaworld.py's variants):
# by default the table's other front corner; "_wrist" the gripper camera; "_single" none.
SECOND_VIEW = {"": "corner", "wrist": "wrist", "single": None}


def get_config(variant: str = "mt10") -> ml_collections.ConfigDict:
  """variant: "mt10" (default), "mt50", or "tiny" (2 tasks x 2 episodes, for tests): corner4 and, as
  image_corner, the camera at the table's other front corner (corner4's mirror image); suffixed
  "_wrist" (e.g. "mt10_wrist") the gripper camera instead, as image_wrist; "_single" corner4 only."""
  variants = ("mt10", "mt50", "tiny")
  base, _, suffix = variant.partition("_")
  if base not in variants or suffix not in SECOND_VIEW:
    raise ValueError(f"unknown variant {variant!r} of metaworld_data; expected one of {variants}, "
                     f"optionally suffixed with one of {['_' + v for v in SECOND_VIEW if v]}")
  variant = base
  config = ml_collections.ConfigDict()
  config.builder = "metaworld"  # experiments.generate_data picks vla_jax.data.metaworld_builder.
  config.name = f"metaworld_{variant}" + (f"_{suffix}" if suffix else "")  # Written to <data_dir>/<name>/1.0.0.
  config.data_dir = "data"
  config.seed = 0  # Episode seeds derive from (seed, split, task, attempt): splits never share a scene.
  config.tasks = variant.upper() if variant != "tiny" else ("reach-v3", "drawer-close-v3")
  # 50 demos per task: SmolVLA's MT50 protocol; DP3's single-task MT10 results used 10.
  config.train_episodes_per_task = {"mt10": 50, "mt50": 50, "tiny": 2}[variant]
  config.val_episodes_per_task = {"mt10": 3, "mt50": 2, "tiny": 1}[variant]
  config.keep_failures = False
  config.num_workers = 2  # Processes rolling out episodes (0 = one per CPU).

  config.env = ml_collections.ConfigDict()
  config.env.image_size = 96 if variant != "tiny" else 64
  config.env.camera = "corner4"
  # None: the camera's own field of view (corner4: 60°). 45 magnifies the same view 1.4x (2x the
  # pixels per object, every MT10 object in frame) but did not raise MT10 success
  # (benchmarks/results/metaworld_mt10.md); evaluation must then use the same value.
  config.env.camera_fovy = config_dict.placeholder(float)
  # More views stored as steps/observation/image_<name> (`envs.metaworld.CAMERA_NAMES`: "corner" sees
  # the table from its other front corner, the second fixed view that gives the depth one view lacks;
  # "gripperPOV" is image_wrist, a camera on the gripper looking along the fingers), each with its own
  # referent labels.
  config.env.extra_cameras = (EXTRA_VIEWS[SECOND_VIEW[suffix]],) if SECOND_VIEW[suffix] else ()
  # Every MT10 expert finishes well inside 200 steps when it succeeds (peg-insert-side is the
  # slowest, ~130); longer attempts are failures that would be dropped anyway.
  config.env.max_episode_steps = 200

  config.expert = ml_collections.ConfigDict()
  config.expert.noise_std = 0.1  # Gaussian on the executed dx, dy, dz (action units; 1 = 1 cm).
  return config
