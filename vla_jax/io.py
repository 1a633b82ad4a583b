"""Writing files so that a reader never sees half of one: a temp file beside it, then a rename.

A crash, a full disk or Ctrl-C mid-write leaves the previous file (or none), never a truncated
JSON that a later resume, evaluation or benchmark table would read. Imports nothing of vla_jax, so
every layer can use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> Path:
  """Writes `text` to `path` (parents created) via `<path>.tmp<pid>` and a rename; returns the path."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")  # Per process: hosts may write one shared file.
  try:
    tmp.write_text(text)
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)
  return path


def write_json_atomic(path: str | Path, obj: Any, *, indent: int = 1, sort_keys: bool = False) -> Path:
  """`obj` as JSON (newline-terminated) at `path`, atomically (see `write_text_atomic`)."""
  return write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")
