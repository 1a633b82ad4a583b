"""Orbax checkpoints: the train state plus everything needed to resume exactly or deploy.

Each checkpoint `<workdir>/checkpoints/<step>/` holds
  state/               the TrainState arrays (params, optimizer state, EMA, rng, step), sharded
  config/              the run's config (JSON) — reproduces the run
  dataset_statistics/  normalisation statistics (JSON) — a deployed policy un-normalises as trained
  data_iterator/       the input pipeline position (JSON) — exact resume
Retention: the latest `keep` checkpoints plus the `keep_best` best by a validation metric.
Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run
killed mid-save (even with SIGKILL) never leaves a checkpoint that looks finished.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

ITEMS = ("state", "config", "dataset_statistics", "data_iterator")


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` with the items above."""

  def __init__(
      self,
      directory: str | Path,
      *,
      keep: int = 2,
      keep_best: int = 1,
      best_metric: str = "val/loss",
      best_mode: str = "min",
      async_save: bool = True,
  ):
    if best_mode not in ("min", "max"):
      raise ValueError(f"config.checkpoint.best_mode={best_mode!r} is not valid; expected 'min' or 'max'")
    self.directory = Path(directory).absolute()
    self.best_metric = best_metric
    sign = 1.0 if best_mode == "max" else -1.0  # BestN keeps the largest values.

    def score(metrics: dict[str, float]) -> float:
      value = metrics.get(best_metric)
      return -math.inf if value is None or not math.isfinite(value) else sign * value

    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=keep),
        ocp.checkpoint_managers.BestN(get_metric_fn=score, n=keep_best, keep_checkpoints_without_metrics=False),
    ])
    self.manager = ocp.CheckpointManager(
        self.directory,
        item_names=ITEMS,
        options=ocp.CheckpointManagerOptions(
            preservation_policy=policy, enable_async_checkpointing=async_save, create=True,
        ),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(
      self,
      step: int,
      state: Any,
      *,
      config: dict[str, Any],
      dataset_statistics: dict[str, Any],
      data_iterator: dict[str, Any],
      metrics: dict[str, float] | None = None,
  ) -> None:
    self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            config=ocp.args.JsonSave(config),
            dataset_statistics=ocp.args.JsonSave(dataset_statistics),
            data_iterator=ocp.args.JsonSave(data_iterator),
        ),
        metrics=metrics,
        force=True,
    )

  def restore_json(self, step: int) -> dict[str, Any]:
    """Only the small JSON items (config, statistics, data position): needed before the state."""
    restored = self.manager.restore(
        step,
        args=ocp.args.Composite(**{name: ocp.args.JsonRestore() for name in ITEMS if name != "state"}),
    )
    return {name: restored[name] for name in ITEMS if name != "state"}

  def restore(self, step: int, abstract_state: Any) -> dict[str, Any]:
    """Restores a checkpoint; `abstract_state` (ShapeDtypeStructs with shardings) sets the layout."""
    restored = self.manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            config=ocp.args.JsonRestore(),
            dataset_statistics=ocp.args.JsonRestore(),
            data_iterator=ocp.args.JsonRestore(),
        ),
    )
    return {name: restored[name] for name in ITEMS}

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def restore_for_inference(checkpoint_dir: str | Path) -> dict[str, Any]:
  """Loads one checkpoint directory (`.../checkpoints/<step>`) without knowing its shapes.

  Returns the state as host numpy arrays plus config and statistics: what evaluation and export
  need to rebuild a policy from a checkpoint alone.
  """
  path = Path(checkpoint_dir).absolute()
  if not (path / "state").is_dir():
    raise FileNotFoundError(f"{path} is not a checkpoint directory (expected {path}/state/)")
  # Restore onto this process's first device whatever mesh wrote the checkpoint (another host
  # count, FSDP...): deployment and evaluation machines rarely match the training cluster.
  metadata = ocp.StandardCheckpointer().metadata(path / "state").item_metadata
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  restored = checkpointer.restore(
      path,
      args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target),
          config=ocp.args.JsonRestore(),
          dataset_statistics=ocp.args.JsonRestore(),
      ),
  )
  state = jax.tree.map(lambda x: jax.device_get(x), restored["state"])
  return {"state": state, "config": restored["config"], "dataset_statistics": restored["dataset_statistics"]}


def checkpoint_steps(workdir: str | Path) -> list[Path]:
  """The checkpoint directories of a run (`<workdir>/checkpoints/<step>`), oldest first.

  Raises FileNotFoundError naming the directory when the run has none.
  """
  root = Path(workdir) / "checkpoints"
  steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []
  if not steps:
    raise FileNotFoundError(f"no checkpoints in {root}")
  return [root / str(s) for s in steps]


def latest_checkpoint(workdir: str | Path) -> Path:
  """The newest checkpoint directory of a run (see `checkpoint_steps`)."""
  return checkpoint_steps(workdir)[-1]
