"""The training loop, flat and readable top to bottom: mesh → data → policy → state → jit → loop.

    result = train_and_evaluate(config, workdir)   # -> TrainResult(state, metrics, workdir)

Resume is exact: the checkpoint holds the train state (with its rng), the data-iterator position
and the normalisation statistics, the step's randomness is `fold_in(rng, step)`, and the input
pipeline is a pure function of (config, position). A run killed at any moment and restarted in the
same workdir reproduces the uninterrupted run's parameters bit for bit (on CPU).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from vla_jax.data import pipeline
from vla_jax.io import write_json_atomic
from vla_jax.models.config import embodiment_names
from vla_jax.models.policy import Policy, count_params
from vla_jax.training import checkpoint as checkpoint_lib
from vla_jax.training import distributed, finetune, mesh as mesh_lib, optimizer as optimizer_lib, step as step_lib
from vla_jax.training.logger import MetricsLogger
from vla_jax.training.state import TrainState, create_state

CONFIG_FILE = "config.json"


@dataclasses.dataclass
class TrainResult:
  state: TrainState  # The final state, still sharded on the mesh.
  metrics: dict[str, Any]  # The last logged train/ and val/ metrics, and "step".
  workdir: Path


class ConfigMismatchError(RuntimeError):
  """The workdir holds a run with a different config."""


def config_to_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as plain JSON (tuples become lists), exactly as it is saved."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      out += _diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}{k}.")
    return out
  return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


# Keys whose saved value says nothing about the run: training derives them from other keys (older
# runs saved the derived value, newer ones None), so a difference in them never blocks a resume.
DERIVED_KEYS = ("data.batch_size",)


def prepare_workdir(workdir: Path, config: ml_collections.ConfigDict, allow_config_change: bool) -> None:
  """Writes config.json; refuses a workdir whose saved config differs (unless allowed)."""
  workdir.mkdir(parents=True, exist_ok=True)
  current = config_to_json(config)
  saved_path = workdir / CONFIG_FILE
  if saved_path.exists():
    saved = json.loads(saved_path.read_text())
    changes = [c for c in _diff(saved, current) if c.split(":")[0] not in DERIVED_KEYS]
    if changes and not allow_config_change:
      raise ConfigMismatchError(
          f"workdir {workdir} holds a run with a different config ({'; '.join(changes[:5])}"
          f"{'; ...' if len(changes) > 5 else ''}); use another --workdir or pass --allow_config_change"
      )
  if jax.process_index() == 0:
    write_json_atomic(saved_path, current, indent=2, sort_keys=True)


def data_config_for_process(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The pipeline config with this process's share of the global batch.

  `config.train.batch_size` is the one batch-size knob of a training run; `config.data.batch_size`
  is derived from it (None in the experiment configs). A value set there that disagrees is refused
  rather than silently replaced, so `--config.data.batch_size=32` cannot look as if it took effect.
  A state loss without state labels in the data is refused for the same reason.
  """
  data = ml_collections.ConfigDict(config.data.to_dict())
  global_batch = config.train.batch_size
  if global_batch % jax.process_count():
    raise ValueError(
        f"config.train.batch_size={global_batch} is not divisible by the {jax.process_count()} processes"
    )
  per_process = global_batch // jax.process_count()
  if data.get("batch_size") is not None and int(data.batch_size) != per_process:
    raise ValueError(
        f"config.data.batch_size={data.batch_size} disagrees with config.train.batch_size={global_batch} "
        f"({per_process} per process over {jax.process_count()} processes); training sets the "
        "pipeline's batch size itself: set config.train.batch_size and leave config.data.batch_size=None")
  data.batch_size = per_process
  state_loss = config.model.get("state_loss")
  if state_loss is not None and state_loss.weight > 0 and data.get("state_targets", 0) != state_loss.num_targets:
    raise ValueError(
        f"config.model.state_loss.weight={state_loss.weight} trains on {state_loss.num_targets} state labels but "
        f"config.data.state_targets={data.get('state_targets', 0)}: set data.state_targets={state_loss.num_targets} "
        "(datasets whose spec names a state_target_key) or model.state_loss.weight=0")
  return data


def zeros_like_batches(element_spec: Any, batch_size: int) -> Any:
  """Zeros shaped like the pipeline's batches (used to build parameters before any data is read);
  `models.policy.example_batch` builds the same from a model config instead."""
  return jax.tree.map(lambda s: np.zeros((batch_size, *s.shape[1:]), s.dtype.as_numpy_dtype), element_spec)


def embodiment_lookup(config: ml_collections.ConfigDict) -> np.ndarray | None:
  """int32 [num_datasets]: the model's embodiment index of each `dataset_index` (None for a
  single-embodiment model). Every dataset of the mixture must be one of the model's embodiments."""
  names = embodiment_names(config.model)
  if not names:
    return None
  datasets = pipeline.dataset_names(config.data)
  unknown = [d for d in datasets if d not in names]
  if unknown:
    raise ValueError(f"datasets {unknown} are not embodiments of the model: config.model.embodiment.names="
                     f"{list(names)}; add them (each dataset is one embodiment)")
  return np.asarray([names.index(d) for d in datasets], np.int32)


def model_inputs(batch: dict[str, Any], embodiments: np.ndarray | None = None) -> dict[str, Any]:
  """The model's inputs: drops pipeline bookkeeping and, for a multi-embodiment model, turns
  `dataset_index` into `task/embodiment` (see `embodiment_lookup`)."""
  out = {k: batch[k] for k in ("observation", "task", "action", "action_pad_mask", "action_dim_mask", "aux")
         if k in batch}
  if embodiments is not None:
    out["task"] = {**out["task"], "embodiment": embodiments[np.asarray(batch["dataset_index"])]}
  return out


def evaluate_validation(eval_step: Callable, state: TrainState, config: ml_collections.ConfigDict,
                        statistics: dict[str, Any], mesh) -> dict[str, float]:
  """Mean validation metrics over up to `config.train.val_batches` batches (one ordered pass)."""
  val_iter = pipeline.make_val_iterator(data_config_for_process(config), statistics_by_name=statistics)
  totals: dict[str, float] = {}
  count = 0
  for i, batch in enumerate(val_iter):
    if i >= config.train.val_batches:
      break
    inputs = model_inputs(batch, embodiment_lookup(config))
    metrics = jax.device_get(eval_step(state, mesh_lib.shard_batch(inputs, mesh)))
    for k, v in metrics.items():
      totals[k] = totals.get(k, 0.0) + float(v)
    count += 1
  return {k: v / max(count, 1) for k, v in totals.items()}


def _host_params(params: Any) -> Any:
  """Parameters as host numpy arrays, gathered from every process if sharded across hosts."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(params, tiled=True)
  return jax.device_get(params)


INIT_REPORT_FILE = "init_from.json"


def _init_from_checkpoint(state: TrainState, state_sharding: Any, config: ml_collections.ConfigDict,
                          workdir: Path) -> tuple[TrainState, finetune.MergeReport]:
  """Fresh `state` with every parameter that `config.init_from`'s checkpoint has at the same path
  and shape copied in (params and EMA alike); prints the merge table and writes it to the workdir.

  The normalisation statistics are not taken from that checkpoint: the pipeline computed this
  run's for this run's data (another robot's units would be silently wrong).
  """
  source, directory, source_config = finetune.load_init_params(
      config.init_from, config.get("init_params", "ema_params"))
  merged, report = finetune.merge_params(_host_params(state.params), source, where=f"checkpoint {directory}")

  def place(x: np.ndarray, sharding: Any) -> jax.Array:
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  params = jax.tree.map(place, merged, state_sharding.params)
  ema = jax.tree.map(place, merged, state_sharding.ema_params)
  table = finetune.format_report(report, str(directory))
  if jax.process_index() == 0:
    print(table, flush=True)
    source_datasets = sorted(source_config.get("data", {}).get("datasets", {}))
    write_json_atomic(workdir / INIT_REPORT_FILE, {
        "checkpoint": str(directory.resolve()), "params": config.get("init_params", "ema_params"),
        "source_datasets": source_datasets, **report.to_json()}, indent=2)
  return state.replace(params=params, ema_params=ema), report


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    resume: bool = True,
    allow_config_change: bool = False,
    closed_loop_eval: Callable[[int, Policy, Any, dict[str, Any]], dict[str, float]] | None = None,
) -> TrainResult:
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  closed_loop_eval: `hook(step, policy, ema_params_on_host, statistics) -> scalars`, called every
    `config.train.closed_loop_every` steps and at the end (evaluation lives in a higher layer, so
    the entry point passes it in; see vla_jax.evaluation.run.make_training_hook).
  """
  distributed.maybe_initialize(config.distributed)
  workdir = Path(workdir)
  prepare_workdir(workdir, config, allow_config_change)
  mesh = mesh_lib.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.num_devices)
  total_steps = config.train.num_steps

  # Checkpoints and (when resuming) the pieces that the data pipeline needs first.
  ckpt = checkpoint_lib.Checkpointer(
      workdir / "checkpoints", keep=config.checkpoint.keep, keep_best=config.checkpoint.keep_best,
      best_metric=config.checkpoint.best_metric, best_mode=config.checkpoint.best_mode,
      async_save=config.checkpoint.async_save,
  )
  start_step = ckpt.latest_step() if resume else None
  if not resume and ckpt.latest_step() is not None:
    raise FileExistsError(f"{workdir} already has checkpoints; pass resume=True (the default) or use a new workdir")
  restored_json = {}
  if start_step is not None:
    restored_json = ckpt.restore_json(start_step)

  # Data: this process's shard of every batch; statistics come from the checkpoint when resuming.
  data_config = data_config_for_process(config)
  train_iter = pipeline.make_train_iterator(
      data_config, state=restored_json.get("data_iterator"), statistics_by_name=restored_json.get("dataset_statistics"),
  )
  statistics = train_iter.statistics

  # Policy and state, created directly in their shardings (never materialised on one device).
  policy = Policy(config.model)
  embodiments = embodiment_lookup(config)
  init_batch = model_inputs(zeros_like_batches(train_iter.element_spec, 1), embodiments)
  init_fn = lambda rng: policy.init(rng, init_batch)  # noqa: E731
  rng = jax.random.PRNGKey(config.seed)
  frozen = config.train.get("frozen", ())
  labels = finetune.frozen_labels(jax.eval_shape(init_fn, rng), frozen) if frozen else None
  tx, schedule = optimizer_lib.make_optimizer(config.optim, total_steps, labels)
  make_state = lambda rng: create_state(init_fn, tx, rng)  # noqa: E731
  abstract_state = jax.eval_shape(make_state, rng)
  state_sharding = mesh_lib.state_shardings(abstract_state, mesh, config.mesh.strategy, config.mesh.fsdp_min_size)
  if start_step is None:
    state = jax.jit(make_state, out_shardings=state_sharding)(rng)
    report = None
    if config.get("init_from"):
      state, report = _init_from_checkpoint(state, state_sharding, config, workdir)
    if labels is not None:
      finetune.check_frozen_were_copied(labels, report)
    start_step = 0
  else:
    abstract = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), abstract_state, state_sharding
    )
    state = ckpt.restore(start_step, abstract)["state"]

  batch_sharding = mesh_lib.batch_sharding(mesh)
  replicated = mesh_lib.replicated(mesh)
  loss_fn = lambda params, batch, rng: policy.loss(params, batch, rng)  # noqa: E731
  train_step = jax.jit(
      step_lib.make_train_step(
          loss_fn, tx, schedule, ema_decay=config.train.ema_decay,
          grad_accum_steps=config.train.grad_accum_steps, compute_dtype=config.train.compute_dtype,
          labels=labels,
      ),
      in_shardings=(state_sharding, batch_sharding),
      out_shardings=(state_sharding, replicated),
      donate_argnums=(0,),
  )
  sample_fn = lambda params, batch, rng: policy.sample_actions(params, batch["observation"], batch["task"], rng)  # noqa: E731
  eval_step = jax.jit(
      step_lib.make_eval_step(loss_fn, sample_fn), in_shardings=(state_sharding, batch_sharding), out_shardings=replicated
  )

  logger = MetricsLogger(workdir, total_steps, initial_step=start_step)
  logger.print(
      f"{config.model.size} {config.model.head.kind} policy: {count_params(state.params):,} params; "
      f"mesh {dict(mesh.shape)} ({config.mesh.strategy}); global batch {config.train.batch_size}; "
      f"{'resuming at' if start_step else 'starting at'} step {start_step}/{total_steps}"
  )

  def save(step: int, metrics: dict[str, float] | None) -> None:
    ckpt.save(step, state, config=config_to_json(config), dataset_statistics=statistics,
              data_iterator=train_iter.state(), metrics=metrics)

  def check_loss(step: int, loss: jax.Array) -> float:
    value = float(loss)  # Waits for the step that produced it.
    if not math.isfinite(value):
      ckpt.wait()
      logger.close()
      raise FloatingPointError(
          f"loss became {value} at step {step}; stopped without saving. The last good checkpoint is "
          f"{'step ' + str(last_good) if last_good is not None else 'none'} in {ckpt.directory}"
      )
    return value

  val_metrics: dict[str, float] = {}
  val_step = -1
  train_metrics: dict[str, float] = {}
  last_good = ckpt.latest_step()
  step = start_step
  # The NaN guard reads every step's loss, but the previous step's, after this one is dispatched:
  # reading a loss waits for its step, and reading the current one would leave the device idle
  # while the host fetches and places the next batch (~7 % of a quickstart step on 2 CPU cores).
  # Steps that log, validate, evaluate or save read their own loss first.
  pending: tuple[int, jax.Array] | None = None
  closed_loop_every = config.train.get("closed_loop_every", 0)
  while step < total_steps:
    try:
      host_batch = next(train_iter)
    except pipeline.DataReadError as e:
      ckpt.wait()
      logger.close()
      raise pipeline.DataReadError(
          f"{e}. Stopped at step {step}; the last good checkpoint is "
          f"{'step ' + str(last_good) if last_good is not None else 'none'} in {ckpt.directory}") from None
    batch = mesh_lib.shard_batch(model_inputs(host_batch, embodiments), mesh)
    state, metrics = train_step(state, batch)
    step += 1
    if pending is not None:
      check_loss(*pending)
    pending = (step, metrics["loss"])
    is_last = step == total_steps
    validates = bool(config.train.eval_every) and (step % config.train.eval_every == 0 or is_last)
    evaluates = closed_loop_eval is not None and bool(closed_loop_every) and (step % closed_loop_every == 0 or is_last)
    saves = step % config.checkpoint.every == 0 or is_last
    logs = step % config.train.log_every == 0 or is_last
    if not (logs or validates or evaluates or saves):
      continue
    loss = check_loss(*pending)
    pending = None
    if logs:
      rate = logger.rate(step)
      train_metrics = logger.write(step, {
          **jax.device_get(metrics), "steps_per_s": rate, "samples_per_s": rate * config.train.batch_size,
      }, prefix="train/")
      logger.progress(step, {"loss": loss, "steps/s": rate})
    if validates:
      val_metrics = logger.write(step, evaluate_validation(eval_step, state, config, statistics, mesh), prefix="val/")
      val_step = step
      logger.print(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in val_metrics.items()))
    if evaluates:
      params = _host_params(state.ema_params)
      if jax.process_index() == 0:
        scalars = closed_loop_eval(step, policy, params, statistics)
        logger.write(step, scalars, prefix="eval/")
        logger.print(f"step {step}: closed-loop success " + ", ".join(
            f"{k.split('/')[0]} {v:.0%}" for k, v in scalars.items() if k.endswith("overall/success_rate")))
    if saves:
      save(step, val_metrics if val_step == step else None)  # Rank only on fresh metrics.
      last_good = step
  ckpt.wait()
  ckpt.close()
  logger.close()
  return TrainResult(state=state, metrics={"step": step, **train_metrics, **val_metrics}, workdir=workdir)
