"""Fine-tuning and multi-embodiment training: merge by path and shape, freezing by
optimizer masking, action-dim masks in the loss, the embodiment input, and what a mixture exports.

Unit tests use tiny random policies; the end-to-end ones (slow) train a few steps on the built-in
tiny dataset and on "arm7", the same episodes in a 7-D robot's frame, in-process.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vla_jax.models.config import embodiment_config, model_config
from vla_jax.models.policy import Policy, example_batch
from vla_jax.training import finetune


def _tiny(**updates) -> ml_collections.ConfigDict:
  config = model_config("tiny", head="diffusion")
  config.update(updates)
  return config


def _init(config: ml_collections.ConfigDict, seed: int = 0):
  return jax.jit(Policy(config).init)(jax.random.key(seed), example_batch(config, 1))


# ---- Merging a checkpoint's parameters into a new config. ------------------------------------------


@pytest.mark.slow  # ~8 s; the other fine-tuning tests stay in the default suite.
def test_merge_report_counts_copied_new_shape_changed_and_dropped():
  source_cfg = _tiny()
  # A new robot: 7-D actions (the head's input and output change shape), a wrist camera (a new
  # tokenizer), no proprio (the proprio tokenizer is dropped).
  target_cfg = _tiny(action_dim=7, cameras=("primary", "wrist"), use_proprio=False)
  source, target = _init(source_cfg), _init(target_cfg, seed=1)
  merged, report = finetune.merge_params(target, source)

  src, tgt = finetune.flatten(source), finetune.flatten(target)
  same = [p for p in tgt if p in src and np.shape(src[p]) == np.shape(tgt[p])]
  assert sorted(report.copied) == sorted(same)
  assert report.new == sorted(p for p in tgt if p not in src)
  assert all(p.startswith("backbone/image_tokenizer_wrist/") for p in report.new) and report.new
  assert report.dropped == sorted(p for p in src if p not in tgt)
  assert report.dropped and all(p.startswith("backbone/proprio_tokenizer/") for p in report.dropped)
  # Exactly the denoiser layers that see the [H*A] action vector change shape.
  assert set(report.mismatched) == {"head/denoiser/input/kernel", "head/denoiser/output/kernel",
                                    "head/denoiser/output/bias"}
  assert report.mismatched["head/denoiser/output/bias"] == ((4 * 3,), (4 * 7,))
  flat = finetune.flatten(merged)
  for p in report.copied:
    np.testing.assert_array_equal(flat[p], src[p])
  for p in [*report.new, *report.mismatched]:
    np.testing.assert_array_equal(flat[p], tgt[p])
  assert report.copied_size + sum(np.size(tgt[p]) for p in [*report.new, *report.mismatched]) == report.total_size
  table = finetune.format_report(report)
  assert "shape changed: head/denoiser/output/bias (12,) -> (28,)" in table
  assert "backbone/image_tokenizer_wrist" in table and "backbone/proprio_tokenizer" in table


def test_a_checkpoint_with_nothing_in_common_is_refused():
  with pytest.raises(ValueError, match="no parameter of the checkpoint matches"):
    finetune.merge_params(_init(_tiny()), {"encoder": {"layer_0": {"kernel": np.zeros((3, 3))}}})


# ---- Freezing. ------------------------------------------------------------------------------------


def test_frozen_patterns_presets_and_their_errors():
  params = jax.eval_shape(lambda: _init(_tiny()))  # Labels need only the structure.
  labels = finetune.flatten(finetune.frozen_labels(params, ("head_only",)))
  assert {p for p, v in labels.items() if v == "trainable"} == {p for p in labels if p.startswith("head/")}
  assert set(finetune.flatten(finetune.frozen_labels(params, ("full",))).values()) == {"trainable"}
  with pytest.raises(ValueError, match="'backbone/transfomer/\\*' matches no parameter"):
    finetune.frozen_labels(params, ("backbone/transfomer/*",))
  with pytest.raises(ValueError, match="neither a preset"):
    finetune.frozen_labels(params, ("headonly",))
  with pytest.raises(ValueError, match="freezes every parameter"):
    finetune.frozen_labels(params, ("backbone/*", "head/*"))
  # Freezing what was not copied from a checkpoint would freeze random weights.
  labels = finetune.frozen_labels(params, ("backbone/*",))
  with pytest.raises(ValueError, match="no config.init_from is set"):
    finetune.check_frozen_were_copied(labels, None)
  two_cameras = _init(_tiny(cameras=("primary", "wrist")))
  _, report = finetune.merge_params(two_cameras, _init(_tiny()))
  with pytest.raises(ValueError, match="image_tokenizer_wrist"):
    finetune.check_frozen_were_copied(finetune.frozen_labels(two_cameras, ("backbone/*",)), report)


def test_frozen_parameters_are_bit_identical_and_have_no_optimizer_state():
  from vla_jax.training import optimizer as optimizer_lib, step as step_lib
  from vla_jax.training.state import create_state

  config = _tiny()
  policy = Policy(config)
  batch = example_batch(config, 4, seed=0)
  init_fn = lambda rng: policy.init(rng, batch)  # noqa: E731
  labels = finetune.frozen_labels(jax.eval_shape(init_fn, jax.random.key(0)), ("backbone/*",))
  optim = ml_collections.ConfigDict(dict(learning_rate=1e-2, warmup_steps=0, final_lr_ratio=1.0,
                                         weight_decay=0.1, b1=0.9, b2=0.999, grad_clip_norm=1.0))
  tx, schedule = optimizer_lib.make_optimizer(optim, 10, labels)
  state = jax.jit(lambda rng: create_state(init_fn, tx, rng))(jax.random.key(0))
  before = finetune.flatten(jax.device_get(state.params))
  train_step = jax.jit(step_lib.make_train_step(policy.loss, tx, schedule, ema_decay=0.9, labels=labels))
  for _ in range(3):
    state, metrics = train_step(state, batch)
  after = finetune.flatten(jax.device_get(state.params))
  ema = finetune.flatten(jax.device_get(state.ema_params))
  for path, value in before.items():
    if path.startswith("backbone/"):
      np.testing.assert_array_equal(after[path], value, err_msg=path)
      np.testing.assert_array_equal(ema[path], value, err_msg=path)
    else:
      assert not np.array_equal(after[path], value), f"{path} did not train"
  # Adam's moments exist for the head only: the optimizer state holds no backbone-shaped array.
  state_sizes = sum(np.size(x) for x in jax.tree.leaves(state.opt_state))
  head_size = sum(np.size(v) for p, v in before.items() if p.startswith("head/"))
  assert state_sizes < 2 * head_size + 16, (state_sizes, head_size)
  assert float(metrics["grad_norm"]) > 0


# ---- Action-dim masks and the embodiment input. ----------------------------------------------------


@pytest.mark.parametrize("head", ["diffusion", *(pytest.param(h, marks=pytest.mark.slow) for h in ("l1", "flow", "discrete"))])
def test_padded_action_dims_get_no_loss_and_no_gradient(head):
  config = model_config("tiny", head=head)
  config.action_dim = 5
  policy = Policy(config)
  batch = example_batch(config, 4, seed=0)
  params = _init(config)
  batch["action_dim_mask"] = np.array([[True, True, True, False, False]] * 4)

  @jax.jit
  def loss_and_grads(params, actions, dim_mask):
    def loss(p, a):
      inputs = {**batch, "action": a, "action_dim_mask": dim_mask}
      return policy.loss(p, inputs, jax.random.key(1))[0]
    return jax.value_and_grad(loss, argnums=(0, 1))(params, actions)

  masked, (param_grads, action_grads) = loss_and_grads(params, batch["action"], batch["action_dim_mask"])
  # The labels' padded dims do not enter the loss (for diffusion / flow they still enter the
  # network's input as noise, as at sampling time — but are never a target).
  if head in ("l1", "discrete"):
    np.testing.assert_array_equal(np.asarray(action_grads[..., 3:]), 0.0)
  # The output layer's weights that produce the padded dims get exactly zero gradient.
  grads = finetune.flatten(param_grads)
  out_kernel = next(k for k in grads if k.startswith("head/") and k.endswith("output/kernel"))
  per_dim = np.asarray(grads[out_kernel]).reshape(grads[out_kernel].shape[0], config.action_horizon, 5, -1)
  np.testing.assert_array_equal(per_dim[:, :, 3:], 0.0)
  assert np.abs(per_dim[:, :, :3]).sum() > 0
  unmasked, _ = loss_and_grads(params, batch["action"], np.ones_like(batch["action_dim_mask"]))
  assert float(unmasked) != float(masked)


def test_embodiment_token_conditions_the_policy_and_is_required():
  config = _tiny()
  config.embodiment = embodiment_config(("tabletop", "arm7"))
  policy = Policy(config)
  batch = example_batch(config, 2, seed=0)
  params = _init(config)
  assert params["backbone"]["embodiment_embedding"].shape == (2, config.transformer.width)
  embed = jax.jit(policy.embed)
  readouts = {e: embed(params, batch["observation"], {**batch["task"], "embodiment": np.full(2, e, np.int32)})
              for e in (0, 1)}
  assert not np.allclose(readouts[0], readouts[1])
  task = {k: v for k, v in batch["task"].items() if k != "embodiment"}
  with pytest.raises(ValueError, match="task/embodiment is required"):
    policy.embed(params, batch["observation"], task)


@pytest.mark.slow  # Three compilations (~9 s); the mixture end-to-end test trains both variants.
def test_separate_heads_train_only_on_their_own_embodiment():
  config = _tiny()
  config.embodiment = embodiment_config(("tabletop", "arm7"), token=False, separate_heads=True)
  policy = Policy(config)
  batch = example_batch(config, 4, seed=0)
  batch["task"]["embodiment"] = np.zeros(4, np.int32)  # Only the first robot in this batch.
  params = _init(config)
  assert {"head_tabletop", "head_arm7"} <= set(params) and "head" not in params
  grads = jax.jit(jax.grad(lambda p, b: policy.loss(p, b, jax.random.key(0))[0]))(params, batch)
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads["head_arm7"]))
  assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads["head_tabletop"]))
  # Sampling: each example gets its own embodiment's head.
  noise = policy.make_noise(jax.random.key(3), 4)
  mixed = {**batch["task"], "embodiment": np.array([0, 1, 0, 1], np.int32)}
  sample = jax.jit(policy.sample_actions_from_noise)
  out = sample(params, batch["observation"], mixed, noise)
  for e in (0, 1):
    alone = sample(params, batch["observation"], {**batch["task"], "embodiment": np.full(4, e, np.int32)}, noise)
    np.testing.assert_allclose(np.asarray(out)[e::2], np.asarray(alone)[e::2], atol=1e-6)


# ---- End to end: fine-tune a run; train and serve a two-robot mixture. ----------------------------


def _train_config(dataset_dir: Path, steps: int = 6) -> ml_collections.ConfigDict:
  from experiments.configs import tabletop

  config = tabletop.get_config("tiny")
  config.data.datasets.tabletop.builder_dir = str(dataset_dir)
  config.train.update(num_steps=steps, eval_every=0, log_every=steps, closed_loop_every=0)
  config.checkpoint.update(every=steps, async_save=False)
  return config


@pytest.mark.slow  # Two in-process training runs (~20 s).
def test_finetune_from_a_run_into_a_new_horizon_with_a_frozen_backbone(tiny_tabletop_dir, tmp_path):
  from tests.conftest import write_untrained_checkpoint
  from vla_jax.training.checkpoint import restore_for_inference
  from vla_jax.training.train import train_and_evaluate

  base = _train_config(tiny_tabletop_dir)
  stats = {"tabletop": {"action": {"mean": [0.0] * 3}}}
  source_dir = write_untrained_checkpoint(tmp_path / "pretrained", base, stats)
  source = finetune.flatten(restore_for_inference(source_dir)["state"]["ema_params"])

  config = _train_config(tiny_tabletop_dir)
  config.data.action_horizon = 6  # A new chunk length: the head's action layers change shape.
  config.init_from = str(tmp_path / "pretrained")
  config.train.frozen = ("head_only",)
  with pytest.raises(ValueError, match="freshly initialised"):
    # head_only freezes the backbone — all copied — so this must work; freezing the head must not.
    bad = ml_collections.ConfigDict(config.to_dict())
    bad.train.frozen = ("head/*",)
    train_and_evaluate(bad, tmp_path / "bad")
  result = train_and_evaluate(config, tmp_path / "finetuned")

  report = json.loads((tmp_path / "finetuned" / "init_from.json").read_text())
  assert report["checkpoint"] == str(source_dir.resolve())
  assert set(report["mismatched"]) == {"head/denoiser/input/kernel", "head/denoiser/output/kernel",
                                       "head/denoiser/output/bias"}
  assert not report["new"] and not report["dropped"]
  assert report["source_datasets"] == ["tabletop"]
  final = finetune.flatten(jax.device_get(result.state.params))
  for path, value in source.items():
    if path.startswith("backbone/"):  # Copied, then frozen: bit-identical after training.
      np.testing.assert_array_equal(final[path], value, err_msg=path)
  assert final["head/denoiser/output/bias"].shape == (6 * 3,)
  # The statistics are this run's data's, not the checkpoint's placeholder.
  saved = restore_for_inference(tmp_path / "finetuned" / "checkpoints" / "6")
  assert saved["dataset_statistics"]["tabletop"]["action"]["mean"] != [0.0] * 3


@pytest.mark.slow  # Two in-process training runs (~30 s).
def test_finetune_a_tabletop_run_to_a_robot_with_another_action_and_state_size(tiny_tabletop_dir, tmp_path):
  from tests.conftest import write_untrained_checkpoint
  from vla_jax.data import synthetic_robots
  from vla_jax.training.train import train_and_evaluate

  base = _train_config(tiny_tabletop_dir)
  write_untrained_checkpoint(tmp_path / "pretrained", base, {"tabletop": {"action": {"mean": [0.0] * 3}}})
  config = _train_config(tiny_tabletop_dir, steps=4)
  config.data.datasets = ml_collections.ConfigDict({"arm7": synthetic_robots.arm7_spec(str(tiny_tabletop_dir))})
  config.model.action_dim, config.model.proprio_dim = 7, 6
  config.eval_dataset = "arm7"
  config.init_from = str(tmp_path / "pretrained")
  config.train.frozen = ("head_only",)  # The proprio tokenizer changed shape: freezing it is refused.
  with pytest.raises(ValueError, match="proprio_tokenizer"):
    train_and_evaluate(config, tmp_path / "frozen")
  config.train.frozen = ()
  result = train_and_evaluate(config, tmp_path / "arm7")
  report = json.loads((tmp_path / "arm7" / "init_from.json").read_text())
  assert {p.split("/")[1] for p in report["mismatched"]} == {"denoiser", "proprio_tokenizer"}
  assert np.isfinite(result.metrics["train/loss"])
  assert result.state.params["head"]["denoiser"]["output"]["bias"].shape == (4 * 7,)


def test_the_arm7_robot_reads_the_tabletop_episodes_in_its_own_frame(tiny_tabletop_dir):
  from vla_jax.data import pipeline, spec, statistics, synthetic_robots

  def first_batch(dataset_spec):
    config = pipeline.pipeline_config([dataset_spec], batch_size=6, window=1, action_horizon=2, language="tokens",
                                      normalization="bounds")
    config.augmentation.enabled = False
    it = pipeline.make_train_iterator(config)
    batch = next(it)
    stats = it.statistics[dataset_spec.name]
    return (statistics.unnormalize(batch["action"], stats["action"], "bounds"),
            statistics.unnormalize(batch["observation"]["proprio"], stats["proprio"], "bounds"), batch)

  table_action, table_state, _ = first_batch(spec.tabletop_spec(str(tiny_tabletop_dir)))
  arm_action, arm_state, batch = first_batch(synthetic_robots.arm7_spec(str(tiny_tabletop_dir)))
  assert arm_action.shape[-1] == 7 and arm_state.shape[-1] == 6
  np.testing.assert_allclose(arm_action[..., 0], table_action[..., 1], atol=1e-5)
  np.testing.assert_allclose(arm_action[..., 1], -table_action[..., 0], atol=1e-5)
  np.testing.assert_array_equal(arm_action[..., 2:6], 0.0)
  np.testing.assert_allclose(arm_action[..., 6], table_action[..., 2], atol=1e-5)
  np.testing.assert_allclose(arm_state[..., :2], np.stack([table_state[..., 1], -table_state[..., 0]], -1), atol=1e-5)
  np.testing.assert_allclose(arm_state[..., 3:], table_state[..., 2:], atol=1e-5)
  assert batch["action_dim_mask"].shape == (6, 7) and batch["action_dim_mask"].all()


def _mixture_config(tiny_tabletop_dir: Path, **embodiment) -> ml_collections.ConfigDict:
  from vla_jax.data import synthetic_robots

  config = _train_config(tiny_tabletop_dir, steps=4)
  config.data.datasets.arm7 = synthetic_robots.arm7_spec(str(tiny_tabletop_dir))
  config.data.action_dim = 7
  config.data.proprio_dim = 6
  config.model.action_dim = 7
  config.model.proprio_dim = 6
  config.model.embodiment = embodiment_config(("tabletop", "arm7"), **embodiment)
  return config


def test_a_mixture_batch_masks_each_robots_padded_action_dims(tiny_tabletop_dir):
  from vla_jax.data import pipeline

  from vla_jax.training.train import data_config_for_process

  config = _mixture_config(tiny_tabletop_dir)
  it = pipeline.make_train_iterator(data_config_for_process(config))
  batch = next(it)
  names = pipeline.dataset_names(config.data)
  for row, index in enumerate(batch["dataset_index"]):
    dim = 3 if names[index] == "tabletop" else 7
    assert batch["action_dim_mask"][row].tolist() == [True] * dim + [False] * (7 - dim)
    if dim == 3:
      np.testing.assert_array_equal(batch["action"][row, :, 3:], 0.0)
  assert set(names[i] for i in batch["dataset_index"]) == {"tabletop", "arm7"}


@pytest.mark.slow  # A mixture training run per variant (~25 s each).
@pytest.mark.parametrize("separate_heads", [False, True])
def test_a_two_robot_mixture_trains_and_acts_in_each_robots_units(tiny_tabletop_dir, tmp_path, separate_heads):
  from vla_jax.inference import bundle as bundle_lib
  from vla_jax.inference.jax_policy import JaxPolicy
  from vla_jax.training.train import train_and_evaluate

  config = _mixture_config(tiny_tabletop_dir, separate_heads=separate_heads)
  config.eval_dataset = "tabletop"
  train_and_evaluate(config, tmp_path / "mix")
  checkpoint = tmp_path / "mix" / "checkpoints" / "4"
  for dataset, dim, state in (("tabletop", 3, 5), ("arm7", 7, 6)):
    bundle = bundle_lib.load_checkpoint(checkpoint, dataset=dataset)
    policy = JaxPolicy(bundle, seed=0)
    policy.reset(["pick up the red block"])
    obs = {"image": np.zeros((1, 64, 64, 3), np.uint8), "state": np.zeros((1, state), np.float32)}
    actions = policy(obs)
    assert actions.shape == (1, config.model.action_horizon, dim), (dataset, actions.shape)
    assert np.all(np.isfinite(actions))


def test_a_mixture_dataset_that_is_no_embodiment_of_the_model_is_refused(tiny_tabletop_dir, tmp_path):
  from vla_jax.training.train import train_and_evaluate

  config = _mixture_config(tiny_tabletop_dir)
  config.model.embodiment.names = ("tabletop",)
  with pytest.raises(ValueError, match=r"datasets \['arm7'\] are not embodiments of the model"):
    train_and_evaluate(config, tmp_path / "mix")


@pytest.mark.slow  # jax2tf + tf2onnx of a policy (~1 min).
def test_a_policy_exported_from_a_mixture_emits_the_chosen_robots_action_size(tiny_tabletop_dir, tmp_path):
  from vla_jax.export import exporter
  from vla_jax.export.config import export_config
  from vla_jax.inference import bundle as bundle_lib
  from vla_jax.inference.onnx_runtime import OnnxPolicy
  from vla_jax.training.train import train_and_evaluate

  config = _mixture_config(tiny_tabletop_dir)
  train_and_evaluate(config, tmp_path / "mix")
  bundle = bundle_lib.load_checkpoint(tmp_path / "mix" / "checkpoints" / "4", dataset="tabletop")
  export = export_config()
  export.variants = ()
  manifest = exporter.export_policy(bundle, tmp_path / "export", export)
  assert manifest["outputs"][0]["shape"][-1] == 3
  assert all(r["passed"] for r in manifest["parity"].values() if isinstance(r, dict) and "passed" in r)
  onnx = OnnxPolicy(tmp_path / "export")
  onnx.reset(["pick up the red block"])
  actions = onnx({"image": np.zeros((1, 64, 64, 3), np.uint8), "state": np.zeros((1, 5), np.float32)})
  assert actions.shape == (1, config.model.action_horizon, 3)
