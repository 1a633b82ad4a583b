"""A trained policy as one object (`PolicyBundle`), and the one rule for choosing its statistics.

A checkpoint holds normalisation statistics for every dataset of its training mixture, but a
policy acts in one embodiment's units, so loading picks one dataset's entry. Every loader —
evaluation, export, the server, the training-time evaluation hook — goes through
`choose_statistics`, so a checkpoint and its export can never disagree on which statistics they use:

  1. the dataset the caller names, else
  2. the run's `eval_dataset`, else
  3. the only dataset there is;
  otherwise an error that names the choices.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from vla_jax.inference.window import observation_keys
from vla_jax.models.policy import Policy, count_params

Params = Any


@dataclasses.dataclass
class PolicyBundle:
  """The model, its (EMA) params, one dataset's statistics and where they all came from.

  action_stats / proprio_stats are one dataset's entries of `vla_jax.data.statistics` (with "mask");
  proprio_stats may be None when the model does not read proprio.
  """

  policy: Policy
  params: Params
  action_stats: dict[str, Any]
  proprio_stats: dict[str, Any] | None
  normalization: str
  source: dict[str, Any]  # {"kind": "checkpoint"|"random"|"training", "path", "step", "dataset", ...}
  run_config: dict[str, Any] | None = None  # The training run's full config (JSON), if any.
  # The frozen language encoder for MiniLM models (None: the process's shared one for the config's
  # `language.encoder`; the server passes one with a small cache, tests a tiny stand-in).
  encoder: Any = None

  @property
  def model_config(self) -> ml_collections.ConfigDict:
    return self.policy.config

  @property
  def camera(self) -> str:
    """The camera the simulator's (or a single-camera robot's) image feeds."""
    return str(self.model_config.cameras[0])

  @property
  def observation_keys(self) -> dict[str, str | None]:
    """{policy input → env / robot observation key}, from the run's spec of this bundle's dataset."""
    return observation_keys(self.model_config, self.run_config, self.source.get("dataset"))

  def num_params(self) -> int:
    return count_params(self.params)


def choose_statistics(statistics: Mapping[str, Any], *, dataset: str | None = None,
                      eval_dataset: str | None = None, where: str = "the checkpoint") -> str:
  """The dataset whose statistics a policy acts with (the rule in the module docstring)."""
  if not statistics:
    raise ValueError(f"{where} holds no dataset statistics; a policy needs one dataset's to (un)normalise")
  names = sorted(statistics)
  for wanted, why in ((dataset, "requested"), (eval_dataset, "the run's eval_dataset")):
    if wanted:
      if wanted not in statistics:
        raise ValueError(f"dataset {wanted!r} ({why}) has no statistics in {where}; it has {names}")
      return wanted
  if len(names) == 1:
    return names[0]
  raise ValueError(f"{where} holds statistics for {names} and its config names no eval_dataset; "
                   "choose one (dataset=... / --dataset)")


def from_statistics(policy: Policy, params: Params, statistics: Mapping[str, Any], *, normalization: str,
                    dataset: str | None = None, eval_dataset: str | None = None, source: dict[str, Any] | None = None,
                    run_config: dict[str, Any] | None = None, where: str = "the statistics") -> PolicyBundle:
  """A bundle from a policy, its params and a run's whole `dataset_statistics`."""
  name = choose_statistics(statistics, dataset=dataset, eval_dataset=eval_dataset, where=where)
  entry = statistics[name]
  if "action" not in entry:
    raise ValueError(f"statistics of dataset {name!r} in {where} lack 'action' (keys {sorted(entry)})")
  return PolicyBundle(policy=policy, params=params, action_stats=entry["action"],
                      proprio_stats=entry.get("proprio"), normalization=normalization,
                      source={**(source or {}), "dataset": name}, run_config=run_config)


def load_checkpoint(checkpoint_dir: str | Path, *, dataset: str | None = None, use_ema: bool = True) -> PolicyBundle:
  """Restores `.../checkpoints/<step>` (params, config, statistics) into a PolicyBundle.

  use_ema: the EMA params when the run kept them (what evaluation and export use), else the raw ones.
  Params come back as host numpy arrays; `JaxPolicy` puts them on the device once.
  """
  from vla_jax.training.checkpoint import restore_for_inference

  path = Path(checkpoint_dir)
  restored = restore_for_inference(path)
  config = restored["config"]
  if "model" not in config or "data" not in config:
    raise ValueError(f"checkpoint {path}: saved config lacks 'model' or 'data' (keys {sorted(config)})")
  state = restored["state"]
  which = "ema_params" if use_ema and state.get("ema_params") else "params"
  step = int(np.asarray(state["step"])) if "step" in state else (int(path.name) if path.name.isdigit() else None)
  return from_statistics(
      Policy(ml_collections.ConfigDict(config["model"])), jax.tree.map(np.asarray, state[which]),
      restored["dataset_statistics"], normalization=config["data"]["normalization"], dataset=dataset,
      eval_dataset=config.get("eval_dataset"), where=f"checkpoint {path}",
      source={"kind": "checkpoint", "path": str(path.resolve()), "step": step, "params": which}, run_config=config)
