"""Trial-runner config: the built-in simulator as "the robot", driven through the policy server.

Usage (see experiments/robot_trial.py):
  python -m experiments.robot_trial --config.url=ws://127.0.0.1:8000        # a server already running
  python -m experiments.robot_trial --config.workdir=runs/tabletop          # starts one in this process
  python -m experiments.robot_trial --config.export_dir=exports/tabletop --config.control_hz=20 \
      --config.episodes_per_family=10 --config.name=onnx_20hz
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = "trial"             # Output: <out_root>/<name>/ (summary.json + the RLDS dataset).
  config.out_root = "runs/trials"
  config.overwrite = False          # Replace an earlier trial of the same name (else: an error before running).

  # The policy: exactly one of these.
  config.url = ""                   # A running server (python -m experiments.serve), e.g. ws://127.0.0.1:8000.
  config.checkpoint = ""            # Or serve in this process: a checkpoint dir (.../checkpoints/<step>), JAX;
  config.workdir = ""               #   a run directory (its latest checkpoint), JAX;
  config.export_dir = ""            #   an export directory, ONNX Runtime;
  config.untrained = ""             #   an untrained experiments/configs/tabletop.py:<variant> ("tiny",
                                    #   "small"), to check the wiring before any training.
  config.api_key = ""               # With url: the server's key (default: env VLA_JAX_API_KEY). Never saved.
  config.statistics_dataset = ""    # checkpoint / workdir: whose statistics ("": the run's eval_dataset).
  config.onnx_threads = 1           # export_dir: ONNX Runtime intra-op threads (see experiments/serve.py).
  config.policy_seed = 0            # In-process server: the sampling-noise seed.

  # Episodes: episodes_per_family of each family, interleaved (place, push, pick, place, ...);
  # episode i of family f uses scene seed seed + 100_000 * (index of f in the simulator's families) + i.
  config.families = ("place", "push", "pick")
  config.episodes_per_family = 5
  config.split = "train"            # Simulator split: train | heldout_phrasing | heldout_combo | heldout_paraphrase.
  config.seed = 2_000_000           # Apart from evaluation's scene seeds (1_000_000 + ...).
  # Simulator steps per default step; None = the served policy's (the rate its data was recorded
  # at, from the server's metadata). Episode limit: None = 100 x the control rate.
  config.control_rate = config_dict.placeholder(int)
  config.max_episode_steps = config_dict.placeholder(int)
  config.instruction = ""           # A typed instruction for every episode ("": each scene's own).

  # The robot's control loop: one observation -> action per tick at control_hz; the loop sleeps to
  # each tick's deadline (1 / control_hz after its observation); a later action is a deadline miss.
  config.control_hz = 10.0

  # Chunk execution (vla_jax.serving.chunking.ChunkingConfig).
  config.chunking = ml_collections.ConfigDict()
  config.chunking.mode = "receding"     # receding | ensemble | async.
  config.chunking.execute_steps = 2     # receding: actions executed per chunk (clipped to H); 2 as in
                                        # experiments.evaluate, so trial and evaluation success compare.
  # async: ask for the next chunk when at most this many actions are queued (None: H // 2).
  config.chunking.refill_threshold = config_dict.placeholder(int)
  config.chunking.ensemble_decay = 0.0  # ensemble: weights exp(-m * age).
  # async: real-time chunking — each request carries the queued plan as a prefix, continued by the
  # server's "hard" | "rtc" | "conditioned" sampler (None: plain sampling, naive async).
  config.chunking.guidance = config_dict.placeholder(str)
  # The frozen actions per request (None: the largest delay, in ticks, measured over recent replies).
  config.chunking.guided_delay = config_dict.placeholder(int)

  config.record = True              # Write the episodes as an RLDS dataset (vla_jax.data.recording).
  config.dataset_name = "tabletop_trials"  # <out_root>/<name>/<dataset_name>/1.0.0.
  config.progress = True
  return config
