"""How well can a policy see Meta-World's small things from one camera? Pixels per object, and the
depth a single view cannot tell for goals that float in the air.

  python benchmarks/metaworld_views.py [--views corner4 corner4@45 corner topview] [--image_px 96]

For each view (a camera, `@fovy` to narrow its field of view as `env.camera_fovy` does):
  * pixels of the object (`objGeom`) and of the goal marker (site "goal") in rendered frames of
    reach, push and pick-place, mean over `--scenes` seeded scenes (segmentation rendering);
  * single-view depth ambiguity: a goal drawn from the task's own goal box is seen as a ray; the
    fraction of goals whose ray's mid-point inside the box lies within the task's success radius
    (reach 5 cm, push 5 cm, pick-place 7 cm: Meta-World v3's success tests). It bounds what a policy
    that localises the marker perfectly in one image, but must guess its depth, can reach. Push's goal
    lies on the table (a 1 cm box), so one view suffices there.

Needs the optional extra (`make metaworld-deps`). Writes benchmarks/results/metaworld_views.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from vla_jax.envs import metaworld as adapter  # noqa: E402  (before mujoco: sets MUJOCO_GL)

TASKS = {"reach-v3": 0.05, "push-v3": 0.05, "pick-place-v3": 0.07}  # Success radius (m) of each task.


def parse_view(view: str) -> tuple[str, float | None]:
  camera, _, fovy = view.partition("@")
  if camera not in adapter.CAMERAS:
    raise SystemExit(f"error: view {view!r}: camera {camera!r} is not one of {adapter.CAMERAS}")
  return camera, float(fovy) if fovy else None


def pixels(env: adapter.MetaWorldEnv, seeds: range) -> tuple[float, float]:
  """Mean pixels of the object geom and of the goal site over seeded scenes."""
  import mujoco

  model = env.env.model
  geom, site = model.geom("objGeom").id, model.site("goal").id
  counts = []
  for seed in seeds:
    env.reset(seed)
    seg = env.render(segmentation=True)
    obj = (seg[..., 1] == mujoco.mjtObj.mjOBJ_GEOM) & (seg[..., 0] == geom)
    goal = (seg[..., 1] == mujoco.mjtObj.mjOBJ_SITE) & (seg[..., 0] == site)
    counts.append((obj.sum(), goal.sum()))
  return tuple(float(c) for c in np.mean(counts, axis=0))


def depth_guess_success(camera_pos: np.ndarray, low: np.ndarray, high: np.ndarray, radius: float,
                        samples: int = 20000) -> float:
  """Fraction of uniform goals in [low, high] within `radius` of their ray's mid-point in the box."""
  goals = np.random.default_rng(0).uniform(low, high, (samples, 3))
  rays = goals - camera_pos
  rays /= np.linalg.norm(rays, axis=1, keepdims=True)
  with np.errstate(divide="ignore", invalid="ignore"):
    t_low, t_high = (low - camera_pos) / rays, (high - camera_pos) / rays
  enter = np.nanmax(np.minimum(t_low, t_high), axis=1)
  leave = np.nanmin(np.maximum(t_low, t_high), axis=1)
  guess = camera_pos + rays * ((enter + leave) / 2)[:, None]
  return float(np.mean(np.linalg.norm(guess - goals, axis=1) <= radius))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--views", nargs="+", default=["corner4", "corner4@45", "corner", "corner3", "topview"])
  parser.add_argument("--image_px", type=int, default=96)
  parser.add_argument("--scenes", type=int, default=10)
  args = parser.parse_args()
  rows = []
  for view in args.views:
    camera, fovy = parse_view(view)
    row = {"view": view}
    for task, radius in TASKS.items():
      env = adapter.MetaWorldEnv(task, image_size=args.image_px, camera=camera, camera_fovy=fovy)
      obj, goal = pixels(env, range(args.scenes))
      space = env.env._random_reset_space  # [object xyz, goal xyz] for these three tasks.
      camera_pos = env.env.data.cam_xpos[env.env.model.camera(camera).id].copy()
      short = task.removesuffix("-v3")
      guess = depth_guess_success(camera_pos, space.low[3:], space.high[3:], radius)
      row.update({f"{short}_obj_px": obj, f"{short}_goal_px": goal, f"{short}_depth_guess_success": guess})
      env.close()
    rows.append(row)
    print(row, flush=True)
  print()
  common.print_table(rows, list(rows[0]))
  path = common.write_results("metaworld_views", {
      "machine": common.machine_info(("numpy", "mujoco", "metaworld")), "image_px": args.image_px,
      "scenes": args.scenes, "success_radius_m": TASKS, "rows": rows, "command": "python " + " ".join(sys.argv)})
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
