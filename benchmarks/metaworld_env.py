"""Meta-World through our adapter: render ms/frame, env steps/s with rendering, expert success per task,
and dataset generation time.

  python benchmarks/metaworld_env.py [--tasks MT10] [--episodes 20] [--image_px 96] [--gen_episodes 2]
  python benchmarks/metaworld_env.py --extra_cameras corner --name metaworld_env_corner   # two views

Rows per task (one process, one core): physics-only and rendered steps/s under the scripted expert,
render ms per frame (fast settings: no MSAA, shadows or reflections, and Meta-World's default
settings for comparison on the first task), and the expert's success rate over `--episodes` seeded
episodes with the dataset's action noise (`experiments/configs/metaworld_data.py`) and without.
Then the generation time of a small dataset with the data config's worker count, per episode.
Needs the optional extra (`make metaworld-deps`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # experiments.configs
import common  # noqa: E402

from vla_jax.envs import metaworld as adapter  # noqa: E402  (before mujoco: sets MUJOCO_GL)
from vla_jax.envs import metaworld_tasks  # noqa: E402


def expert_episodes(env: adapter.MetaWorldEnv, episodes: int, noise_std: float, seed0: int) -> tuple[float, float, int]:
  """(success rate, rendered steps/s, steps) of the expert over seeded episodes."""
  rng = np.random.default_rng(seed0)
  wins, steps = 0, 0
  start = time.perf_counter()
  for e in range(episodes):
    env.reset(seed0 + e)
    while True:
      action = np.clip(env.expert_action(), -1, 1)
      action[:3] += rng.normal(0, noise_std, 3)
      _, _, terminated, truncated, _ = env.step(action)
      steps += 1
      if terminated or truncated:
        wins += terminated
        break
  return wins / episodes, steps / (time.perf_counter() - start), steps


def physics_steps_per_s(env: adapter.MetaWorldEnv, steps: int = 300) -> float:
  """Meta-World's own step (physics, reward, success) without our rendering."""
  env.reset(0)
  start = time.perf_counter()
  for i in range(steps):
    if env.env.curr_path_length >= adapter.MAX_PATH_LENGTH - 1:
      env.reset(i)
    env.env.step(np.clip(env.expert_action(), -1, 1))
  return steps / (time.perf_counter() - start)


def render_ms(env: adapter.MetaWorldEnv, frames: int = 100) -> float:
  env.render()
  start = time.perf_counter()
  for _ in range(frames):
    env.render()
  return 1000 * (time.perf_counter() - start) / frames


def default_render_ms(task: str, image_px: int, camera: str) -> float:
  """Meta-World's default visual settings (MSAA, shadows, reflections) at the same size, for scale."""
  import mujoco

  env = adapter.MetaWorldEnv(task, image_size=image_px, camera=camera)
  model = env.env.model
  fresh = type(env.env)()  # The untouched model's settings.
  model.vis.quality.offsamples = fresh.model.vis.quality.offsamples
  model.light_castshadow[:] = fresh.model.light_castshadow
  model.mat_reflectance[:] = fresh.model.mat_reflectance
  fresh.close()
  env.renderer.close()
  env.renderer = mujoco.Renderer(model, image_px, image_px)
  env.reset(0)
  ms = render_ms(env, 30)
  env.close()
  return ms


def generation_time(tasks: tuple[str, ...], episodes: int, image_px: int,
                    extra_cameras: tuple[str, ...] = ()) -> dict[str, float]:
  """Times `experiments.generate_data` on the data config with fewer episodes, in a subprocess (this
  process has rendered: TensorFlow, which writing needs, must not load beside Mesa here)."""
  import re
  import subprocess

  repo = Path(__file__).resolve().parent.parent
  with tempfile.TemporaryDirectory() as tmp:
    command = [sys.executable, "-m", "experiments.generate_data", "--config", "experiments/configs/metaworld_data.py",
               f"--config.tasks={','.join(tasks)}", f"--config.train_episodes_per_task={episodes}",
               "--config.val_episodes_per_task=1",  # TFDS refuses an empty split.
               f"--config.env.image_size={image_px}", f"--config.env.extra_cameras={tuple(extra_cameras)!r}",
               f"--config.data_dir={tmp}", "--config.name=metaworld_bench"]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
      raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    size_mb = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 2**20
  written = float(re.search(r"wrote \S+ in ([0-9.]+) s", result.stdout).group(1))
  n = (episodes + 1) * len(tasks)
  return {"episodes": n, "workers": 2, "command_seconds": seconds, "write_seconds": written,
          "seconds_per_episode": written / n, "mb_per_episode": size_mb / n}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tasks", default="MT10", help="Suite (MT10, MT50) or comma-separated task names.")
  parser.add_argument("--episodes", type=int, default=20, help="Expert episodes per task and noise level.")
  parser.add_argument("--image_px", type=int, default=96)
  parser.add_argument("--camera", default="corner4")
  parser.add_argument("--camera_fovy", type=float, default=None,
                      help="Field of view (degrees; default the camera's own), as the data config's env.camera_fovy.")
  parser.add_argument("--extra_cameras", default="",
                      help="Comma-separated more views rendered every step (as the data config's env.extra_cameras).")
  parser.add_argument("--name", default="metaworld_env", help="Results file: benchmarks/results/<name>.json.")
  parser.add_argument("--gen_episodes", type=int, default=2,
                      help="Train episodes per task in the generation timing (plus 1 val episode per task).")
  args = parser.parse_args()
  tasks = metaworld_tasks.resolve_tasks(args.tasks)
  extra = tuple(c for c in args.extra_cameras.split(",") if c)
  noise = 0.1  # experiments/configs/metaworld_data.py's expert.noise_std.
  rows = []
  for task in tasks:
    env = adapter.MetaWorldEnv(task, image_size=args.image_px, camera=args.camera, camera_fovy=args.camera_fovy,
                               extra_cameras=extra, max_episode_steps=200)
    clean, steps_per_s, _ = expert_episodes(env, args.episodes, 0.0, 10_000)
    noisy, _, _ = expert_episodes(env, args.episodes, noise, 20_000)
    rows.append({"task": task, "group": metaworld_tasks.difficulty(task), "render_ms": render_ms(env),
                 "physics_steps_per_s": physics_steps_per_s(env), "rendered_steps_per_s": steps_per_s,
                 "expert_success": clean, f"expert_success_noise_{noise}": noisy})
    env.close()
    print(f"{task}: {rows[-1]}", flush=True)
  default_ms = default_render_ms(tasks[0], args.image_px, args.camera)
  gen = generation_time(tasks, args.gen_episodes, args.image_px, extra)
  print()
  common.print_table(rows, list(rows[0]))
  mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("task", "group")}
  print(f"\nmean over {len(tasks)} tasks: " + ", ".join(f"{k} {v:.3g}" for k, v in mean.items()))
  print(f"render with Meta-World's default settings ({tasks[0]}): {default_ms:.1f} ms/frame "
        f"(fast settings: {rows[0]['render_ms']:.1f})")
  print(f"generation: {gen['episodes']} episodes written in {gen['write_seconds']:.1f} s with {gen['workers']} "
        f"workers ({gen['seconds_per_episode']:.2f} s/episode including worker start-up, "
        f"{gen['mb_per_episode']:.2f} MB/episode); the command took {gen['command_seconds']:.1f} s")
  path = common.write_results(args.name, {
      "machine": common.machine_info(("numpy", "mujoco", "metaworld", "gymnasium", "tensorflow-cpu")),
      "image_px": args.image_px, "camera": args.camera, "camera_fovy": args.camera_fovy,
      "extra_cameras": list(extra),
      "episodes_per_task": args.episodes,
      "expert_noise_std": noise, "mujoco_gl": os.environ.get("MUJOCO_GL"), "rows": rows, "mean": mean,
      "default_settings_render_ms": default_ms, "generation": gen,
      "command": "python " + " ".join(sys.argv)})
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
