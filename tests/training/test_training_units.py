"""Fast unit specifications of the training pieces (no policy, no data pipeline)."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vla_jax.training import mesh as mesh_lib
from vla_jax.training import optimizer as optimizer_lib
from vla_jax.training import step as step_lib
from vla_jax.training.state import create_state


def optim_config(**kw):
  c = ml_collections.ConfigDict(dict(
      learning_rate=1e-2, warmup_steps=2, final_lr_ratio=0.1, weight_decay=0.0, b1=0.9, b2=0.999, grad_clip_norm=1.0,
  ))
  c.update(kw)
  return c


def linear_loss(params, batch, rng):
  del rng
  pred = batch["x"] @ params["w"] + params["b"]
  loss = jnp.mean((pred - batch["y"]) ** 2)
  return loss, {"mse": loss}


def toy_batch(n=8, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 4)).astype(np.float32)
  return {"x": x, "y": (x @ np.arange(1, 5, dtype=np.float32)[:, None] + 0.5).astype(np.float32)}


def toy_state(tx):
  init = lambda rng: {"w": jax.random.normal(rng, (4, 1)), "b": jnp.zeros((1,))}  # noqa: E731
  return create_state(init, tx, jax.random.PRNGKey(0))


def test_fsdp_spec_shards_the_largest_divisible_dimension_and_replicates_small_arrays():
  assert mesh_lib.fsdp_spec((256, 1024), 8, min_size=16) == jax.sharding.PartitionSpec(None, "fsdp")
  assert mesh_lib.fsdp_spec((1024, 6), 4, min_size=16) == jax.sharding.PartitionSpec("fsdp", None)
  assert mesh_lib.fsdp_spec((7, 9), 4, min_size=16) == jax.sharding.PartitionSpec()  # Nothing divides.
  assert mesh_lib.fsdp_spec((64,), 8, min_size=4096) == jax.sharding.PartitionSpec()  # Too small.
  assert mesh_lib.fsdp_spec((256, 1024), 1, min_size=16) == jax.sharding.PartitionSpec()


def test_make_mesh_rejects_impossible_layouts_naming_the_key():
  with pytest.raises(ValueError, match="config.mesh.fsdp=3"):
    mesh_lib.make_mesh(fsdp=3, num_devices=1) if len(jax.devices()) == 1 else mesh_lib.make_mesh(fsdp=3)
  with pytest.raises(ValueError, match="config.mesh.num_devices=99"):
    mesh_lib.make_mesh(num_devices=99)
  with pytest.raises(ValueError, match="config.mesh.strategy='zero3'"):
    mesh_lib.state_shardings({"w": jnp.zeros(3)}, mesh_lib.make_mesh(), "zero3")


def test_schedule_warms_up_then_decays_to_the_final_ratio():
  schedule = optimizer_lib.make_schedule(optim_config(learning_rate=1.0, warmup_steps=10, final_lr_ratio=0.1), 100)
  assert float(schedule(0)) == 0.0
  assert float(schedule(10)) == pytest.approx(1.0)
  assert float(schedule(55)) < 1.0
  assert float(schedule(100)) == pytest.approx(0.1)


def test_weight_decay_skips_vectors():
  tx, _ = optimizer_lib.make_optimizer(optim_config(learning_rate=0.1, weight_decay=0.5, warmup_steps=0), 10)
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  assert float(jnp.abs(updates["b"]).max()) == 0.0
  assert float(jnp.abs(updates["w"]).max()) > 0.0


def test_ema_tracks_params_with_warmup():
  ema = {"w": jnp.zeros(())}
  out = optimizer_lib.ema_update(ema, {"w": jnp.ones(())}, jnp.asarray(0), decay=0.999)
  assert float(out["w"]) == pytest.approx(0.9)  # decay (1 + 0) / (10 + 0) = 0.1 at step 0.


def test_train_step_reduces_loss_and_reports_metrics():
  tx, schedule = optimizer_lib.make_optimizer(optim_config(learning_rate=0.1, grad_clip_norm=100.0), 100)
  step = jax.jit(step_lib.make_train_step(linear_loss, tx, schedule, ema_decay=0.9))
  state = toy_state(tx)
  batch = toy_batch()
  losses = []
  for _ in range(60):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.2 * losses[0]
  assert set(metrics) >= {"loss", "mse", "grad_norm", "lr"}
  assert int(state.step) == 60


def test_gradient_accumulation_matches_one_big_batch():
  tx, schedule = optimizer_lib.make_optimizer(optim_config(), 100)
  batch = toy_batch(n=8)
  one = jax.jit(step_lib.make_train_step(linear_loss, tx, schedule, ema_decay=0.9))
  four = jax.jit(step_lib.make_train_step(linear_loss, tx, schedule, ema_decay=0.9, grad_accum_steps=4))
  s1, m1 = one(toy_state(tx), batch)
  s4, m4 = four(toy_state(tx), batch)
  np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
  np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), s1.params, s4.params)
  with pytest.raises(ValueError, match="grad_accum_steps=3"):
    jax.jit(step_lib.make_train_step(linear_loss, tx, schedule, ema_decay=0.9, grad_accum_steps=3))(toy_state(tx), batch)


def test_bfloat16_compute_keeps_float32_master_weights():
  tx, schedule = optimizer_lib.make_optimizer(optim_config(), 100)
  seen = {}

  def loss(params, batch, rng):
    seen["dtype"] = params["w"].dtype
    return linear_loss(params, jax.tree.map(lambda x: x.astype(params["w"].dtype), batch), rng)

  step = jax.jit(step_lib.make_train_step(loss, tx, schedule, ema_decay=0.9, compute_dtype="bfloat16"))
  state, metrics = step(toy_state(tx), toy_batch())
  assert seen["dtype"] == jnp.bfloat16
  assert state.params["w"].dtype == jnp.float32 and state.ema_params["w"].dtype == jnp.float32
  assert np.isfinite(float(metrics["loss"]))
  with pytest.raises(ValueError, match="compute_dtype='float16'"):
    step_lib.make_train_step(loss, tx, schedule, ema_decay=0.9, compute_dtype="float16")


def test_prepare_workdir_refuses_a_different_config(tmp_path):
  from vla_jax.training import train

  config = ml_collections.ConfigDict({"train": {"num_steps": 10, "batch_size": 8}})
  train.prepare_workdir(tmp_path, config, allow_config_change=False)
  assert json.loads((tmp_path / "config.json").read_text())["train"]["num_steps"] == 10
  train.prepare_workdir(tmp_path, config, allow_config_change=False)  # Same config: fine.
  changed = ml_collections.ConfigDict({"train": {"num_steps": 10, "batch_size": 16}})
  with pytest.raises(train.ConfigMismatchError, match=r"train.batch_size: 8 -> 16"):
    train.prepare_workdir(tmp_path, changed, allow_config_change=False)
  train.prepare_workdir(tmp_path, changed, allow_config_change=True)
  assert json.loads((tmp_path / "config.json").read_text())["train"]["batch_size"] == 16


def test_the_training_batch_size_is_the_one_knob_and_disagreeing_data_knobs_are_refused(tmp_path):
  from experiments.configs import tabletop
  from vla_jax.training import train

  config = tabletop.get_config("tiny")
  assert config.data.batch_size is None
  assert train.data_config_for_process(config).batch_size == config.train.batch_size
  config.data.batch_size = config.train.batch_size  # Agreeing: accepted.
  assert train.data_config_for_process(config).batch_size == config.train.batch_size
  config.data.batch_size = config.train.batch_size + 1
  with pytest.raises(ValueError, match=r"config.data.batch_size=9 disagrees with config.train.batch_size=8"):
    train.data_config_for_process(config)
  config.data.batch_size = None
  config.model.state_loss.update(weight=1.0, num_targets=6)  # A state loss with no labels to train on.
  with pytest.raises(ValueError, match=r"state_loss.weight=1.0 trains on 6 state labels but config.data.state_targets=0"):
    train.data_config_for_process(config)
  config.data.state_targets = 6
  assert train.data_config_for_process(config).state_targets == 6
  # A run saved when the derived value was written out still resumes under the new convention.
  saved = tabletop.get_config("tiny")
  saved.data.batch_size = 64
  train.prepare_workdir(tmp_path, saved, allow_config_change=False)
  train.prepare_workdir(tmp_path, tabletop.get_config("tiny"), allow_config_change=False)
