"""A few whole RLDS episodes as numpy, for people: notebooks, debugging, a first look at a new dataset.

    from vla_jax.data import browse
    episodes = browse.read_episodes("data/tabletop/1.0.0", split="train", count=3)
    steps = browse.flatten(episodes[0]["steps"])   # {"observation/image": uint8 [T, 64, 64, 3], "action": [T, 3], ...}
    episodes[0]["episode_metadata"]                # episode-level fields, strings decoded

Any RLDS / TFDS directory (the built-in `tabletop`, an Open X-Embodiment dataset, a robot-trial
recording): no spec is needed, every key comes back as stored — images decoded, text as `str`,
values in the dataset's own units (nothing normalised). Training reads datasets through the input
pipeline (`pipeline.py`), not through this.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

MAX_EPISODE_STEPS = 1_000_000  # Steps are batched whole; no RLDS episode is this long.


def _to_python(tree: Any) -> Any:
  """numpy tree → the same with bytes (scalars and arrays of them) decoded as UTF-8 `str`."""
  if isinstance(tree, Mapping):
    return {k: _to_python(v) for k, v in tree.items()}
  if isinstance(tree, bytes):
    return tree.decode("utf-8", errors="replace")
  if isinstance(tree, np.ndarray) and tree.dtype.kind in ("O", "S"):
    return np.vectorize(lambda b: b.decode("utf-8", errors="replace") if isinstance(b, bytes) else b,
                        otypes=[object])(tree)
  return tree


def read_episodes(builder_dir: str, split: str = "train", count: int = 3, start: int = 0) -> list[dict[str, Any]]:
  """Episodes `start` … `start + count - 1` of `split` (file order), each a dict of the dataset's
  own top-level keys with `steps` stacked: every step field an array [T, ...] (images decoded
  uint8 [T, H, W, C], text `str` objects [T]); `episode_metadata` and other episode-level fields
  as stored. Fewer episodes come back if the split has fewer."""
  builder = tfds.builder_from_directory(str(builder_dir))
  if split not in builder.info.splits:
    raise ValueError(f"{builder_dir} has splits {sorted(builder.info.splits)}, not {split!r}")
  if count < 1 or start < 0:
    raise ValueError(f"count={count}, start={start}: expected count >= 1 and start >= 0")
  total = builder.info.splits[split].num_examples
  end = min(start + count, total)
  if start >= end:
    return []
  ds = builder.as_dataset(split=f"{split}[{start}:{end}]", shuffle_files=False)

  def whole(episode):
    out = dict(episode)
    if isinstance(episode.get("steps"), tf.data.Dataset):
      out["steps"] = episode["steps"].batch(MAX_EPISODE_STEPS).get_single_element()
    return out

  return [_to_python(e) for e in tfds.as_numpy(ds.map(whole))]


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"observation": {"image": x}} → {"observation/image": x}: a nested episode as one level."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(flatten(value, f"{prefix}{key}/"))
    else:
      out[f"{prefix}{key}"] = value
  return out
