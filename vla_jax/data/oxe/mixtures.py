"""Named OXE mixtures: lists of (registry name, weight), turned into weighted dataset specs.

The weights are Octo's (`octo/data/oxe/oxe_dataset_mixes.py`), restricted to the datasets this
registry has. What a weight means differs: Octo multiplies it by each dataset's size
(`balance_weights`), our pipeline draws each sample's dataset with probability proportional to
the weight. `mixture_specs(..., balance_by_episodes=True)` multiplies by the number of training
episodes recorded in each dataset's `dataset_info.json`, the closest we get to Octo's sampling
without reading the data (Octo counts transitions).

Use with the existing mixture mechanism:

    specs = mixtures.mixture_specs("octo_magic_soup", "/data/oxe")
    config = pipeline.pipeline_config(specs, **mixtures.pipeline_overrides(specs))
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import ml_collections

from vla_jax.data import spec as spec_lib
from vla_jax.data.oxe import registry

# Octo's OXE_MAGIC_SOUP; not yet registered here (so left out): furniture_bench, iamlab_cmu_pickup_insert,
# utaustin_mutex, berkeley_fanuc_manipulation, cmu_stretch.
OCTO_MAGIC_SOUP: tuple[tuple[str, float], ...] = (
    ("fractal20220817_data", 0.54087122203), ("kuka", 0.8341046294), ("bridge", 1.0), ("taco_play", 2.0),
    ("jaco_play", 1.0), ("berkeley_cable_routing", 1.0), ("roboturk", 2.0), ("nyu_door_opening", 1.0),
    ("viola", 2.0), ("berkeley_autolab_ur5", 2.0), ("toto", 1.0), ("language_table", 0.1), ("stanford_hydra", 2.0),
    ("austin_buds", 1.0), ("nyu_franka_play", 3.0), ("ucsd_kitchen", 2.0), ("austin_sailor", 1.0),
    ("austin_sirius", 1.0), ("bc_z", 0.2), ("dlr_edan_shared_control", 1.0),
)

# Octo's RT_X_MIX (the RT-X paper's datasets).
RTX: tuple[tuple[str, float], ...] = (
    ("fractal20220817_data", 0.54087122203), ("kuka", 0.8341046294), ("bridge", 1.0), ("taco_play", 2.0),
    ("jaco_play", 2.0), ("berkeley_cable_routing", 3.0), ("roboturk", 1.0), ("nyu_door_opening", 5.0),
    ("viola", 2.0), ("berkeley_autolab_ur5", 1.0), ("toto", 1.0),
)

MIXTURES: dict[str, tuple[tuple[str, float], ...]] = {
    "octo_magic_soup": OCTO_MAGIC_SOUP,
    "rtx": RTX,
    "bridge": (("bridge", 1.0),),
}


def get(name: str) -> tuple[tuple[str, float], ...]:
  if name not in MIXTURES:
    raise ValueError(f"OXE mixture {name!r} is not defined; defined: {sorted(MIXTURES)}")
  return MIXTURES[name]


def train_episodes(spec: ml_collections.ConfigDict) -> int:
  """Training episodes recorded in the dataset's dataset_info.json (the base split of train_split)."""
  builder_dir = spec_lib.resolve_builder_dir(spec)
  with open(os.path.join(builder_dir, "dataset_info.json")) as f:
    info = json.load(f)
  split = spec.train_split.split("[")[0]
  for s in info.get("splits", []):
    if s.get("name") == split:
      return int(sum(int(n) for n in s.get("shardLengths", [])))
  raise ValueError(f"dataset '{spec.name}': split {split!r} not in {builder_dir}/dataset_info.json")


def mixture_specs(mixture: str | Sequence[tuple[str, float]], data_dir: str, *, balance_by_episodes: bool = False,
                  **overrides: Any) -> list[ml_collections.ConfigDict]:
  """One `spec.oxe_spec` per dataset of a named (or given) mixture, its weight set.

  `overrides` apply to every spec (e.g. `train_split="train[:1000]"`).
  """
  entries = get(mixture) if isinstance(mixture, str) else tuple(mixture)
  specs = []
  for name, weight in entries:
    s = spec_lib.oxe_spec(name, data_dir, weight=weight, **overrides)
    if balance_by_episodes:
      s.weight = float(weight) * train_episodes(s)
    specs.append(s)
  return specs


def pipeline_overrides(specs: Sequence[ml_collections.ConfigDict]) -> dict[str, Any]:
  """`pipeline_config` keywords a mixture of OXE specs needs: every action is 7-d; proprio sizes
  differ, so all are zero-padded to the largest; cameras = primary and wrist, each when any
  dataset has it (a dataset without one gets black frames)."""
  cameras = tuple(c for c in ("primary", "wrist") if any(c in s.cameras for s in specs))
  return {"action_dim": 7, "proprio_dim": max(int(s.proprio_dim) for s in specs), "cameras": cameras}


def registered_names() -> list[str]:
  return sorted(registry.REGISTRY)
