"""Run a trained policy on one scene with an instruction you type, and watch it.

  python -m experiments.rollout --checkpoint runs/tabletop/checkpoints/6000 \
      --instruction "put the red square in the top left corner" --seed 3 --gif out.gif
  python -m experiments.rollout --workdir runs/tabletop --instruction "could you lift the blue circle" \
      --seed 7 --family pick
  python -m experiments.rollout --export_dir exports/tabletop --instruction "..." --seed 3  # ONNX Runtime

The scene is the one `--seed` draws for `--family` (which objects are on the table); the text is
then read against that scene. If it names a task there (objects that exist, a corner or a second
object), success is judged on what it asks; otherwise the episode still runs and says why it
cannot be judged. From Python: `vla_jax.evaluation.evaluate.run_typed_instruction`.
"""

from absl import flags

from experiments import cli

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A checkpoint directory (.../checkpoints/<step>).")
_WORKDIR = flags.DEFINE_string("workdir", None, "A run directory: uses its latest checkpoint.")
_EXPORT = flags.DEFINE_string("export_dir", None, "An export directory: runs its ONNX policy (ONNX Runtime).")
_INSTRUCTION = flags.DEFINE_string("instruction", None, "What to tell the robot.", required=True)
_SEED = flags.DEFINE_integer("seed", 0, "Scene seed.")
_FAMILY = flags.DEFINE_enum("family", "place", ["place", "push", "pick"], "Which family's scene layout to draw.")
_GIF = flags.DEFINE_string("gif", None, "Write the episode as an animated GIF here.")
_STEPS = flags.DEFINE_integer("max_steps", None, "Episode length limit (default 100 x the control rate).")
_RATE = flags.DEFINE_integer("control_rate", None, "Simulator steps per default step (default: the rate the "
                             "policy's training run evaluated at, e.g. 4 for tabletop.py:small_h16_rate4).")


def main(argv):
  del argv
  import sys

  from vla_jax.evaluation import evaluate
  from vla_jax.training.checkpoint import latest_checkpoint

  sources = [v for v in (_CHECKPOINT.value, _WORKDIR.value, _EXPORT.value) if v]
  if len(sources) != 1:
    sys.exit("error: pass exactly one of --checkpoint, --workdir or --export_dir")
  try:
    if _EXPORT.value:
      from vla_jax.inference.onnx_runtime import OnnxPolicy

      policy = OnnxPolicy(_EXPORT.value, noise="numpy", seed=_SEED.value)
    else:
      from vla_jax.inference import jax_policy

      checkpoint = _CHECKPOINT.value or latest_checkpoint(_WORKDIR.value)
      policy = jax_policy.load(checkpoint, seed=_SEED.value)
    config = evaluate.eval_config()
    config.control_rate, config.max_episode_steps = _RATE.value, _STEPS.value
    result = evaluate.run_typed_instruction(policy, _INSTRUCTION.value, seed=_SEED.value, family=_FAMILY.value,
                                            config=config, gif=_GIF.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  print(f"instruction: {_INSTRUCTION.value!r}  (scene: seed {_SEED.value}, {_FAMILY.value} layout)")
  print(f"read as:     {result.grounding_note}")
  if result.judgeable:
    print(f"result:      {'SUCCESS' if result.success else 'not achieved'} after {result.length} steps")
  else:
    print(f"result:      ran {result.length} steps; success cannot be judged for this instruction in this scene")
  if _GIF.value:
    print(f"gif:         {_GIF.value}")


if __name__ == "__main__":
  cli.run(main)
