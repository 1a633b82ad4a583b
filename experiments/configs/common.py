"""Config blocks every training experiment shares, as small helpers (`get_config()`s compose them).

Each returns a fresh ConfigDict with every key named, so a saved config.json still lists every
knob, and any key can be overridden on the command line (`--config.optim.learning_rate=3e-4`).
"""

import ml_collections
from ml_collections import config_dict


def optim_config(learning_rate: float, warmup_steps: int) -> ml_collections.ConfigDict:
  """AdamW with linear warm-up then cosine decay to `final_lr_ratio` x the peak; global-norm clipping."""
  c = ml_collections.ConfigDict()
  c.learning_rate = learning_rate
  c.warmup_steps = warmup_steps
  c.final_lr_ratio = 0.1
  c.weight_decay = 1e-4
  c.b1 = 0.9
  c.b2 = 0.999
  c.grad_clip_norm = 1.0
  return c


def mesh_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.num_devices = -1  # -1: every device of every process; N: the first N (single process).
  c.data = -1  # -1: all mesh devices not used by fsdp.
  c.fsdp = 1
  c.strategy = "dp"  # "dp" (replicated params) or "fsdp" (params sharded over mesh.fsdp).
  c.fsdp_min_size = 2**12  # FSDP leaves arrays with fewer elements replicated.
  return c


def checkpoint_config(every: int) -> ml_collections.ConfigDict:
  """Orbax checkpoints every `every` steps; the latest `keep` plus the best by `best_metric` stay."""
  c = ml_collections.ConfigDict()
  c.every = every
  c.keep = 2
  c.keep_best = 1
  c.best_metric = "val/action_mae"
  c.best_mode = "min"
  c.async_save = True
  return c


def distributed_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.coordinator_address = config_dict.placeholder(str)  # Or env JAX_COORDINATOR_ADDRESS.
  c.num_processes = config_dict.placeholder(int)
  c.process_id = config_dict.placeholder(int)
  c.auto = False  # True on SLURM / Cloud TPU: JAX discovers the cluster itself.
  return c


def add_finetuning(config: ml_collections.ConfigDict) -> None:
  """The fine-tuning keys: where to start from and what stays frozen (defaults: from scratch, all trains)."""
  # Parameters that do not train (optimizer-masked: no update, no optimizer state): glob patterns
  # over parameter paths ("backbone/*") and/or presets "head_only" (= "backbone/*") / "full".
  config.train.frozen = ()
  # A run directory or checkpoint to start from. Every parameter whose path and shape match is
  # copied (a table of copied / new / shape-changed / dropped ones is printed and written to
  # <workdir>/init_from.json); statistics are always this run's data's own.
  config.init_from = config_dict.placeholder(str)
  config.init_params = "ema_params"  # "ema_params" (what was evaluated) or "params".
