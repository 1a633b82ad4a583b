"""Shared plumbing for the thin entry points in experiments/: flag errors as one clear line."""

from __future__ import annotations

import ast
import os
import sys
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Before TensorFlow is imported anywhere.

from absl import app, flags, logging  # noqa: E402
from ml_collections.config_flags.config_flags import is_config_flag  # noqa: E402


def run(main: Callable[[list[str]], Any]) -> None:
  """absl's app.run, but a bad --config file or override exits with one line naming the problem."""
  try:
    argv = flags.FLAGS(sys.argv)
    for name in flags.FLAGS:  # Config files load and overrides apply lazily: force them now.
      if is_config_flag(flags.FLAGS[name]):
        _ = flags.FLAGS[name].value.keys()  # A missing file raises only on first access.
  except (flags.Error, OSError, KeyError, AttributeError, TypeError, ValueError) as e:
    sys.exit(f"error: {config_error_message(e)}")
  logging.set_verbosity(logging.WARNING)  # TFDS logs every file it opens at INFO.
  app.run(main, argv=argv, flags_parser=lambda a: a)


def config_error_message(e: Exception) -> str:
  """One line from the multi-line, repr-quoted errors that flag and config parsing raise."""
  message = str(e.args[0]) if e.args else str(e)
  while message[:1] in ("'", '"'):  # KeyError / AttributeError messages arrive repr-quoted.
    try:
      message = str(ast.literal_eval(message))
    except (ValueError, SyntaxError):
      break
  lines = [line.strip() for line in message.splitlines() if line.strip()]
  if isinstance(e, (KeyError, AttributeError)) and lines:  # An override names a missing key.
    key = lines[0].strip("'\"")
    hint = " ".join(lines[1:])
    return f"--config override names an unknown key {key!r}" + (f" ({hint})" if hint else "")
  return lines[-1] if lines else type(e).__name__


def format_summary(summary: dict[str, Any]) -> str:
  """A dataset summary (from tabletop_builder.load_summary) as a small text table."""
  lines = [
      f"dataset {summary['name']} {summary['version']} at {summary['path']}",
      f"image {summary['image_shape']}",
      f"{'split':<6} {'episodes':>8} {'steps':>7} {'len mean':>8} {'len max':>7} {'success':>7}  families",
  ]
  for split, s in summary["splits"].items():
    fams = ", ".join(f"{k} {v}" for k, v in sorted(s["families"].items()))
    lines.append(
        f"{split:<6} {s['episodes']:>8} {s['steps']:>7} {s['episode_length_mean']:>8.1f} "
        f"{s['episode_length_max']:>7} {s['success_rate']:>7.0%}  {fams}"
    )
  for split, s in summary["splits"].items():
    for text in s["example_instructions"]:
      lines.append(f"  e.g. ({split}) {text!r}")
  return "\n".join(lines)
