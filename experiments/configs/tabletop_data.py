"""Dataset generation config: scripted-expert RLDS episodes of the built-in tabletop.

Usage:
  python -m experiments.generate_data --config experiments/configs/tabletop_data.py
  python -m experiments.generate_data --config experiments/configs/tabletop_data.py:tiny \
      --config.num_train_episodes=20 --config.data_dir=/tmp/data
"""

import ml_collections


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
  """variant: "default" (the quickstart dataset), "tiny" (a few episodes, for tests), "rate4" (the
  same tasks at 4x the control rate, for real-time chunking: `rate4_variant`), or the
  few-demo transfer study's (benchmarks/finetune_transfer.py): "place_pick" (pretraining data
  without any push) and "push" (1 000 push demos; runs read its first 100 / 300 / 1 000)."""
  config = ml_collections.ConfigDict()
  config.name = "tabletop"  # Written to <data_dir>/<name>/1.0.0.
  config.data_dir = "data"
  config.seed = 0  # Episode seeds derive from (seed, split, index): splits never share a scene.
  # BC on 64x64 pixels needs many distinct scenes: with 3 000 the quickstart policy located the
  # named objects 3x worse on validation scenes than on training ones (referent error 0.036 vs
  # 0.011 image widths at step 4 000), i.e. it memorised scenes.
  config.num_train_episodes = 10000
  config.num_val_episodes = 60
  # Episode shares per task family (vla_jax/data/tabletop_episodes.family_schedule). Push gets
  # twice the share: its closed-fist steering is what a cloned policy learns last (at step 4 000
  # its median action-direction error on expert states was 14 deg while pushing, against 7-10 deg
  # for the other phases), and place / pick keep about the 2 667 episodes each they had.
  config.family_weights = ml_collections.ConfigDict(dict(place=1.0, push=2.0, pick=1.0))
  config.keep_failures = False  # Failed expert demos are skipped (and counted in the log).
  # Processes rolling out episodes while this one encodes and writes them: 0 = one per CPU core,
  # 1 = in this process. Not part of what is generated: every value writes the same dataset.
  config.num_workers = 0

  config.env = ml_collections.ConfigDict()
  config.env.task_family = "any"  # "any", or one of "place", "push", "pick".
  config.env.split = "train"  # Training data never uses held-out phrasings or colour-shape combos.
  config.env.image_size = 64
  config.env.max_episode_steps = 100
  config.env.num_objects = (4, 5)

  config.expert = ml_collections.ConfigDict()
  config.expert.noise_std = 0.1  # Per-step Gaussian noise on dx, dy (action units).
  config.expert.speed_range = (0.7, 1.0)  # Per-episode speed factor.
  # Recovery demos: the fraction of episodes in which the executed action closes the gripper once
  # too early, within a distance drawn from mistake_distance of the grasp/push point (the label
  # stays the intended action; the expert then recovers). See vla_jax/envs/expert.py.
  config.expert.mistake_prob = 0.3
  config.expert.mistake_distance = (0.06, 0.3)
  # Push-slip recovery demos (push episodes only): a few steps into the push, the executed motion
  # is turned slip_angle degrees to one side for slip_steps steps (labels stay the intended
  # action), so demos show steering back onto the push line, or opening and re-approaching once
  # the object is lost. A cloned policy's pushes drift off the target; without these it never saw
  # how to recover. See vla_jax/envs/expert.py.
  config.expert.slip_prob = 0.5
  config.expert.slip_steps = (2, 4)
  config.expert.slip_angle = (40.0, 90.0)
  config.expert.slip_after = (1, 5)  # Pushing steps before the slip.
  # Push decisions that survive a policy's small position errors (vla_jax/envs/expert.py says why):
  # close the fist within close_within of the approach point; keep pushing while the target is
  # within CONTACT_DIST + keep_within and arccos(keep_cos) of the push line; aim depth inside contact.
  config.expert.push = ml_collections.ConfigDict(
      dict(close_within=0.04, keep_within=0.12, keep_cos=0.4, depth=0.05))

  if variant == "tiny":
    config.name = "tabletop_tiny"
    config.num_train_episodes = 12
    config.num_val_episodes = 3
  elif variant == "place_pick":
    config.name = "tabletop_place_pick"
    config.num_train_episodes = 6000
    config.family_weights = ml_collections.ConfigDict(dict(place=1.0, push=0.0, pick=1.0))
  elif variant == "push":
    config.name = "tabletop_push"
    config.seed = 1  # Scenes of their own: none is shared with the pretraining data.
    config.num_train_episodes = 1000
    config.family_weights = ml_collections.ConfigDict(dict(place=0.0, push=1.0, pick=0.0))
  elif variant == "rate4":
    rate4_variant(config)
  elif variant != "default":
    raise ValueError(f"unknown variant {variant!r} of tabletop_data; expected 'default', 'tiny', "
                     "'rate4', 'place_pick' or 'push'")
  return config


def rate4_variant(config: ml_collections.ConfigDict, rate: int = 4) -> None:
  """The default dataset's tasks and scenes at `rate` x the control rate (each step 1/rate of the
  default one; vla_jax/envs/tabletop.py says why): what an inference delay of several steps means
  on a real arm commanded at 10-50 Hz. Episodes are `rate` x longer in steps; the expert's
  per-step noise grows by sqrt(rate) so the demos wander as far per unit of time, and premature
  closes and slips last as long in time (a one-step close at rate 4 left the policy an empty fist
  for 44-52 % of its place / pick steps: vla_jax/envs/expert.py). control_rate is set only here:
  the default dataset's config, and so its staleness check, stay as they were."""
  config.name = f"tabletop_rate{rate}"
  config.env.control_rate = rate
  config.env.max_episode_steps = 100 * rate
  config.expert.noise_std = round(0.1 * rate**0.5, 6)
  config.expert.mistake_steps = rate
  config.expert.slip_steps = (2 * rate, 4 * rate)
  config.expert.slip_after = (1 * rate, 5 * rate)
