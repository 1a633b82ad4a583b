"""End-to-end specifications of `experiments.train` on the tiny config and the built-in dataset.

The fast ones share one tiny training run (a session fixture); kill-and-resume, the 8-device
DP/FSDP comparison and the two-process `jax.distributed` run are marked slow.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, build_once

CONFIG = "experiments/configs/tabletop.py:tiny"


def overrides(dataset_dir: Path, **kw) -> list[str]:
  args = {"data.datasets.tabletop.builder_dir": str(dataset_dir), **kw}
  return [f"--config.{k}={v}" for k, v in args.items()]


def run_train(workdir: Path, dataset_dir: Path, *extra: str, env=None, **kw) -> subprocess.CompletedProcess:
  cmd = [sys.executable, "-m", "experiments.train", "--config", CONFIG, "--workdir", str(workdir),
         *overrides(dataset_dir, **kw), *extra]
  return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=900)


def read_jsonl(path: Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def final_params(workdir: Path) -> dict:
  """The latest checkpoint's state (a dict: step, params, opt_state, ema_params, rng) as numpy."""
  from vla_jax.training.checkpoint import restore_for_inference

  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  return restore_for_inference(workdir / "checkpoints" / str(steps[-1]))["state"]


@pytest.fixture(scope="session")
def tiny_run(tiny_tabletop_dir, tmp_path_factory) -> Path:
  """One 150-step training run, shared by the tests of this module whichever worker runs them."""

  def train(workdir: Path) -> None:
    result = run_train(workdir, tiny_tabletop_dir, **{"train.num_steps": 150, "train.eval_every": 75,
                                                       "checkpoint.every": 50, "train.log_every": 5})
    assert result.returncode == 0, result.stderr[-3000:]

  return build_once(tmp_path_factory, "tiny_train_run", train)


def test_tiny_config_trains_to_a_low_loss(tiny_run):
  losses = [r["train/loss"] for r in read_jsonl(tiny_run / "metrics.jsonl") if "train/loss" in r]
  first, last = np.mean(losses[:2]), np.mean(losses[-3:])
  assert last < 0.6 * first, f"loss went from {first:.3f} to {last:.3f}"
  val = [r for r in read_jsonl(tiny_run / "metrics.jsonl") if "val/loss" in r]
  assert len(val) == 2 and val[-1]["val/loss"] < val[0]["val/loss"] * 1.05


def test_run_writes_config_checkpoints_statistics_tensorboard_and_metrics(tiny_run):
  from vla_jax.training.checkpoint import Checkpointer, restore_for_inference

  config = json.loads((tiny_run / "config.json").read_text())
  assert config["train"]["num_steps"] == 150
  steps = sorted(int(p.name) for p in (tiny_run / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] == 150 and len(steps) <= 3  # keep=2 latest plus the best.
  restored = restore_for_inference(tiny_run / "checkpoints" / "150")
  assert restored["config"] == config
  assert "tabletop" in restored["dataset_statistics"]
  assert int(restored["state"]["step"]) == 150
  position = Checkpointer(tiny_run / "checkpoints").restore_json(150)["data_iterator"]
  assert position["batches"] == 150
  assert list((tiny_run / "tensorboard").glob("events.out.tfevents.*"))
  records = read_jsonl(tiny_run / "metrics.jsonl")
  assert {"train/loss", "train/lr", "train/grad_norm", "train/samples_per_s"} <= set(records[0])
  assert any("val/action_mae" in r for r in records)


@pytest.mark.slow  # Two more entry-point runs (~9 s).
def test_finished_run_resumes_as_a_no_op_and_a_changed_config_is_refused(tiny_run, tiny_tabletop_dir):
  same = {"train.num_steps": 150, "train.eval_every": 75, "checkpoint.every": 50, "train.log_every": 5}
  before = sorted(p.name for p in (tiny_run / "checkpoints").iterdir())
  again = run_train(tiny_run, tiny_tabletop_dir, **same)
  assert again.returncode == 0, again.stderr[-2000:]
  assert "at step 150" in again.stdout.strip().splitlines()[-1]
  assert sorted(p.name for p in (tiny_run / "checkpoints").iterdir()) == before
  changed = run_train(tiny_run, tiny_tabletop_dir, **{"train.num_steps": 150, "train.eval_every": 75,
                                                      "checkpoint.every": 50, "train.log_every": 5,
                                                      "optim.learning_rate": 0.5})
  assert changed.returncode != 0
  last = changed.stderr.strip().splitlines()[-1]
  assert last.startswith("error:") and "optim.learning_rate" in last and "--allow_config_change" in last


@pytest.mark.slow  # Several entry-point runs (~9 s).
def test_cli_config_errors_are_one_clear_line(tiny_tabletop_dir, tmp_path):
  typo = run_train(tmp_path / "a", tiny_tabletop_dir, **{"train.batch_sise": 4})
  assert typo.returncode != 0
  assert typo.stderr.strip().splitlines()[-1] == (
      "error: --config override names an unknown key 'batch_sise' "
      "(Did you mean \"batch_size\" instead of \"batch_sise\"?)")
  shape = run_train(tmp_path / "b", tiny_tabletop_dir, **{"model.image_size_px": 32})
  assert shape.returncode != 0
  last = shape.stderr.strip().splitlines()[-1]
  assert last.startswith("error:") and "image_primary" in last and "64" in last and "32" in last


@pytest.mark.slow  # Two training runs of their own (~35 s).
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_tabletop_dir, tmp_path):
  # A learning rate this large overflows the parameters within a few steps; warm-up from 0 keeps
  # step 1 finite, and a checkpoint every step shows which state was the last good one.
  result = run_train(tmp_path / "nan", tiny_tabletop_dir, **{
      "train.num_steps": 60, "train.eval_every": 0, "checkpoint.every": 1, "optim.learning_rate": 1e30,
      "optim.warmup_steps": 40, "checkpoint.async_save": False})
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: loss became nan") or last.startswith("error: loss became inf"), last
  assert "last good checkpoint is step" in last
  good = int(last.split("last good checkpoint is step ")[1].split()[0])
  bad = int(last.split(" at step ")[1].split(";")[0])
  assert good == bad - 1
  state = final_params(tmp_path / "nan")
  assert int(state["step"]) == good
  assert all(np.all(np.isfinite(x)) for x in __import__("jax").tree.leaves(state["params"]))

  # Steps that neither log nor save read their loss one step late (the next step is dispatched
  # first): the same run still stops at the same step, naming it, and saves nothing after it.
  quiet = run_train(tmp_path / "quiet", tiny_tabletop_dir, **{
      "train.num_steps": 60, "train.eval_every": 0, "checkpoint.every": 1000, "train.log_every": 1000,
      "optim.learning_rate": 1e30, "optim.warmup_steps": 40, "checkpoint.async_save": False})
  assert quiet.returncode != 0
  last = quiet.stderr.strip().splitlines()[-1]
  assert f" at step {bad};" in last and "The last good checkpoint is none" in last, last
  assert not list((tmp_path / "quiet" / "checkpoints").glob("[0-9]*"))


@pytest.mark.slow
def test_kill_9_and_resume_reproduces_the_uninterrupted_run_bit_for_bit(tiny_tabletop_dir, tmp_path):
  settings = {"train.num_steps": 40, "train.eval_every": 0, "checkpoint.every": 10, "train.log_every": 10}
  straight = run_train(tmp_path / "straight", tiny_tabletop_dir, **settings)
  assert straight.returncode == 0, straight.stderr[-2000:]

  workdir = tmp_path / "killed"
  cmd = [sys.executable, "-m", "experiments.train", "--config", CONFIG, "--workdir", str(workdir),
         *overrides(tiny_tabletop_dir, **settings)]
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while not (workdir / "checkpoints" / "20").is_dir() and time.time() < deadline and proc.poll() is None:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)  # Mid-run: somewhere after the step-20 checkpoint appeared.
  proc.wait()
  resumed = run_train(workdir, tiny_tabletop_dir, **settings)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resuming at step" in resumed.stderr + resumed.stdout

  import jax

  a, b = final_params(tmp_path / "straight"), final_params(workdir)
  assert int(a["step"]) == int(b["step"]) == 40
  assert len(jax.tree.leaves(a)) == len(jax.tree.leaves(b)) > 10
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):  # params, optimizer state, EMA, rng.
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


MESH_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    from experiments.configs import tabletop
    from vla_jax.training import train
    dataset, workroot = sys.argv[1], sys.argv[2]
    out = {}
    for name, mesh in [("one", dict(num_devices=1)), ("dp", dict(num_devices=8)),
                       ("fsdp", dict(num_devices=8, data=2, fsdp=4, strategy="fsdp", fsdp_min_size=256))]:
      config = tabletop.get_config("tiny")
      config.data.datasets.tabletop.builder_dir = dataset
      config.train.num_steps, config.train.log_every, config.train.eval_every = 12, 1, 0
      config.checkpoint.every = 100
      config.mesh.update(mesh)
      result = train.train_and_evaluate(config, f"{workroot}/{name}")
      specs = [str(leaf.sharding.spec) for leaf in jax.tree.leaves(result.state.params)]
      losses = [json.loads(l)["train/loss"] for l in open(f"{workroot}/{name}/metrics.jsonl")]
      out[name] = {"losses": losses, "specs": specs, "devices": len(jax.tree.leaves(result.state.params)[0].sharding.device_set)}
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow
def test_dp_and_fsdp_on_8_simulated_devices_match_one_device(tiny_tabletop_dir, tmp_path):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "PYTHONPATH": str(REPO)}
  result = subprocess.run([sys.executable, "-c", MESH_SCRIPT, str(tiny_tabletop_dir), str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=1200)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.split("RESULT ", 1)[1])
  assert len(out["one"]["losses"]) == 12
  np.testing.assert_allclose(out["dp"]["losses"], out["one"]["losses"], rtol=2e-4)
  np.testing.assert_allclose(out["fsdp"]["losses"], out["one"]["losses"], rtol=2e-4)
  assert out["one"]["devices"] == 1 and out["dp"]["devices"] == 8
  assert all(spec == "PartitionSpec()" for spec in out["dp"]["specs"])
  sharded = [s for s in out["fsdp"]["specs"] if "fsdp" in s]
  assert len(sharded) >= 3, out["fsdp"]["specs"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_jax_distributed_run_trains_and_agrees(tiny_tabletop_dir, tmp_path):
  port = _free_port()
  procs = []
  for pid in range(2):
    env = {**os.environ, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
           "JAX_PROCESS_ID": str(pid)}
    cmd = [sys.executable, "-m", "experiments.train", "--config", CONFIG, "--workdir", str(tmp_path / "dist"),
           *overrides(tiny_tabletop_dir, **{"train.num_steps": 20, "train.eval_every": 0, "checkpoint.every": 10})]
    procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  # Both processes report the same final (replicated) loss, computed over the global batch.
  finals = [out.strip().splitlines()[-1] for out, _ in outs]
  assert all("at step 20" in f for f in finals)
  losses = [float(f.split("train/loss ")[1].split(",")[0]) for f in finals]
  assert losses[0] == losses[1] and np.isfinite(losses[0])
  assert "mesh {'data': 2, 'fsdp': 1}" in outs[0][1] + outs[0][0]
  state = final_params(tmp_path / "dist")
  assert int(state["step"]) == 20


@pytest.mark.slow  # Three short training runs of its own (~40 s).
def test_a_corrupt_tfrecord_is_reported_by_file_and_the_checkpoints_survive(tiny_tabletop_dir, tmp_path):
  import shutil

  data = tmp_path / "data"
  shutil.copytree(tiny_tabletop_dir, data)
  settings = {"train.eval_every": 0, "checkpoint.every": 2, "checkpoint.async_save": False, "train.log_every": 1}
  first = run_train(tmp_path / "run", data, **settings, **{"train.num_steps": 2})  # Statistics cached in `data`.
  assert first.returncode == 0, first.stderr[-2000:]
  shard = sorted(data.glob("*train.tfrecord*"))[0]
  raw = bytearray(shard.read_bytes())
  middle = len(raw) // 2
  raw[middle:middle + 64] = bytes(b ^ 0xFF for b in raw[middle:middle + 64])  # Same size: same fingerprint.
  shard.write_bytes(bytes(raw))

  # Mid-training: a fresh run reads the bad record while filling its batches.
  fresh = run_train(tmp_path / "fresh", data, **settings, **{"train.num_steps": 40})
  last = fresh.stderr.strip().splitlines()[-1]
  assert fresh.returncode != 0 and "Traceback" not in fresh.stderr, fresh.stderr[-1500:]
  assert last.startswith("error: reading training data failed at batch") and shard.name in last, last
  assert "corrupted record" in last and "the last good checkpoint is none" in last, last

  # Resuming: the sample count on the way in reads it; the run's checkpoint is untouched.
  resumed = run_train(tmp_path / "run", data, "--allow_config_change", **settings, **{"train.num_steps": 40})
  last = resumed.stderr.strip().splitlines()[-1]
  assert resumed.returncode != 0 and "Traceback" not in resumed.stderr, resumed.stderr[-1500:]
  assert last.startswith("error: reading training data failed while opening") and shard.name in last, last
  assert int(final_params(tmp_path / "run")["step"]) == 2


@pytest.mark.slow  # ~30 s: one more compile of the tiny model, with learned tokens.
def test_training_with_referent_and_attribute_labels_reads_them_from_the_dataset(tiny_tabletop_dir, tmp_path):
  """The quickstart's auxiliary losses end to end: labels from the RLDS file through the input
  pipeline into the loss (a broken link would fail on a missing key or log no metric)."""
  from experiments.configs import tabletop
  from vla_jax.training import train

  config = tabletop.get_config("tiny")
  config.data.datasets.tabletop.builder_dir = str(tiny_tabletop_dir)
  config.data.update(num_referents=2, attribute_objects=6)
  config.model.image.update(num_learned_tokens=2, attribute_maps=True)
  config.model.referent_loss.update(weight=1.0, attribute_weight=1.0)
  config.train.num_steps, config.train.log_every, config.train.eval_every = 4, 1, 0
  config.checkpoint.every = 100
  train.train_and_evaluate(config, str(tmp_path / "run"))
  rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
  assert len(rows) == 4
  for r in rows:
    assert np.isfinite([r["train/referent_ce"], r["train/attribute_ce"], r["train/attribute_miss"]]).all()
    np.testing.assert_allclose(r["train/loss"], r["train/head_loss"] + r["train/referent_ce"] + r["train/attribute_ce"],
                               rtol=1e-4)
