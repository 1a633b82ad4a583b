"""The few-demo transfer study: pretrain on place + pick, then learn push from N demos —
fine-tuned from the pretrained run or from scratch, with the same steps.

  python -m experiments.train --config experiments/configs/tabletop_transfer.py:pretrain \
      --workdir runs/transfer/pretrain
  python -m experiments.train --config experiments/configs/tabletop_transfer.py:push,300 \
      --workdir runs/transfer/push300_scratch_s0 --config.seed=0
  python -m experiments.train --config experiments/configs/tabletop_transfer.py:push,300 \
      --workdir runs/transfer/push300_finetune_s0 --config.init_from=runs/transfer/pretrain

Data: `experiments/configs/tabletop_data.py:place_pick` and `:push` (1 000 demos; a run with N
reads the first N, `train[:N]`). `benchmarks/finetune_transfer.py` runs the whole table.
Everything else is the quickstart `small` model and recipe, so the only difference between a
fine-tuned and a scratch run is where the parameters start.
"""

import ml_collections

from experiments.configs import tabletop
from vla_jax.data import spec

PRETRAIN_STEPS = 3000
FINETUNE_STEPS = 1000


def get_config(arg: str = "pretrain") -> ml_collections.ConfigDict:
  """arg: "pretrain", or "push,<N>" (N push demos: 100, 300 or 1000)."""
  stage, _, demos = arg.partition(",")
  config = tabletop.get_config("small")
  if stage == "pretrain":
    builder_dir, split, steps, families = "data/tabletop_place_pick/1.0.0", "train", PRETRAIN_STEPS, ("place", "pick")
  elif stage == "push":
    if not demos.isdigit() or not 1 <= int(demos) <= 1000:
      raise ValueError(f"tabletop_transfer: {arg!r} needs a demo count in 1..1000, e.g. 'push,300'")
    builder_dir, split, steps, families = "data/tabletop_push/1.0.0", f"train[:{int(demos)}]", FINETUNE_STEPS, ("push",)
  else:
    raise ValueError(f"unknown stage {stage!r} of tabletop_transfer; expected 'pretrain' or 'push,<N>'")
  # One dataset, named "tabletop" in both stages so a fine-tuned run is configured exactly like a
  # scratch one; its statistics are always computed from this stage's own data.
  config.data.datasets = ml_collections.ConfigDict({"tabletop": spec.tabletop_spec(builder_dir, train_split=split)})
  config.train.num_steps = steps
  config.train.closed_loop_every = steps  # One closed-loop evaluation, at the end.
  config.checkpoint.every = 500
  config.eval.families = families
  config.eval.conditions = ("seen",)
  config.eval.episodes_per_family = 50
  return config
