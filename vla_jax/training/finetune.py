"""Fine-tuning: start from a trained checkpoint in a (possibly different) config, freeze by path.

    source = load_init_params("runs/pretrain")              # EMA params of its latest checkpoint
    params, report = merge_params(fresh_params, source)     # copy every path whose shape matches
    print(format_report(report))
    labels = frozen_labels(params, ("backbone/*",))          # for optimizer.make_optimizer

Why merge by path and shape: a new robot changes a few tensors (the head's input/output for a new
action dim or horizon, a tokenizer for a new camera) and keeps the rest; copying what matches and
initialising the rest fresh is what makes "fine-tune a generalist to your robot" one config edit.
The report says which tensors were copied, which are new, which changed shape and which the
checkpoint had but the new model does not, so a silently fresh backbone cannot go unnoticed.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import traverse_util

Params = Any
# `train.frozen` presets: "full" trains everything; "head_only" trains the action head(s) only.
FROZEN_PRESETS: dict[str, tuple[str, ...]] = {"full": (), "head_only": ("backbone/*",)}
TRAINABLE, FROZEN = "trainable", "frozen"


@dataclasses.dataclass
class MergeReport:
  """Parameter paths ("backbone/transformer/block_0/...") by what happened to them."""

  copied: list[str]
  new: list[str]  # In the new model only: freshly initialised.
  mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]  # path -> (checkpoint, new) shape.
  dropped: list[str]  # In the checkpoint only.
  copied_size: int = 0  # Number of scalars copied / in the new model.
  total_size: int = 0

  def to_json(self) -> dict[str, Any]:
    return {"copied": self.copied, "new": self.new, "dropped": self.dropped,
            "mismatched": {k: [list(a), list(b)] for k, (a, b) in self.mismatched.items()},
            "copied_size": self.copied_size, "total_size": self.total_size}


def flatten(params: Params) -> dict[str, Any]:
  """{"a/b/kernel": leaf} of a nested params dict."""
  return {"/".join(k): v for k, v in traverse_util.flatten_dict(dict(params)).items()}


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def merge_params(target: Params, source: Params, *, where: str = "the checkpoint") -> tuple[Params, MergeReport]:
  """`target` with every leaf whose path and shape also exist in `source` replaced by source's.

  Leaves keep target's dtype. Raises ValueError when nothing matches (a checkpoint of another
  model family, or a path that is not a checkpoint of this project), naming a few paths of each.
  """
  tgt, src = flatten(target), flatten(source)
  copied, new, dropped, mismatched = [], [], [], {}
  out = dict(tgt)
  for path, leaf in tgt.items():
    if path not in src:
      new.append(path)
    elif tuple(np.shape(src[path])) != tuple(np.shape(leaf)):
      mismatched[path] = (tuple(np.shape(src[path])), tuple(np.shape(leaf)))
    else:
      out[path] = np.asarray(src[path], dtype=getattr(leaf, "dtype", None))
      copied.append(path)
  dropped = sorted(set(src) - set(tgt))
  if not copied:
    raise ValueError(
        f"no parameter of {where} matches the new model by path and shape: nothing to fine-tune from. "
        f"New model has e.g. {sorted(tgt)[:3]}; {where} has e.g. {sorted(src)[:3]}")
  size = lambda paths: int(sum(np.prod(np.shape(tgt[p])) for p in paths))  # noqa: E731
  report = MergeReport(copied=sorted(copied), new=sorted(new), mismatched=dict(sorted(mismatched.items())),
                       dropped=dropped, copied_size=size(copied), total_size=size(tgt))
  return unflatten(out), report


def _group(path: str, depth: int = 2) -> str:
  return "/".join(path.split("/")[:depth])


def format_report(report: MergeReport, source: str = "checkpoint") -> str:
  """A table of modules (first two path levels) by copied / new / shape-mismatched / dropped."""
  rows: dict[str, list[int]] = {}
  for col, paths in enumerate((report.copied, report.new, list(report.mismatched), report.dropped)):
    for p in paths:
      rows.setdefault(_group(p), [0, 0, 0, 0])[col] += 1
  lines = [f"init from {source}: copied {len(report.copied)} tensors "
           f"({report.copied_size:,} of {report.total_size:,} parameters), new {len(report.new)}, "
           f"shape-mismatched {len(report.mismatched)}, dropped {len(report.dropped)}",
           f"  {'module':<44} {'copied':>6} {'new':>5} {'shape':>5} {'dropped':>7}"]
  for name in sorted(rows):
    c, n, m, d = rows[name]
    lines.append(f"  {name:<44} {c:>6} {n:>5} {m:>5} {d:>7}")
  for path, (old, new) in report.mismatched.items():
    lines.append(f"  shape changed: {path} {old} -> {new} (freshly initialised)")
  return "\n".join(lines)


def resolve_checkpoint(path: str | Path) -> Path:
  """A run directory, its `checkpoints/` directory, or one `checkpoints/<step>` → a step directory."""
  from vla_jax.training.checkpoint import latest_checkpoint

  p = Path(path)
  if (p / "state").is_dir():
    return p
  if p.name == "checkpoints" and p.is_dir():
    p = p.parent
  if not p.exists():
    raise FileNotFoundError(f"config.init_from={str(path)!r} does not exist")
  return latest_checkpoint(p)


def load_init_params(path: str | Path, which: str = "ema_params") -> tuple[Params, Path, dict[str, Any]]:
  """Host params (`ema_params` or `params`) of a checkpoint, its directory and its saved config."""
  from vla_jax.training.checkpoint import restore_for_inference

  if which not in ("ema_params", "params"):
    raise ValueError(f"config.init_params={which!r} is not valid; expected 'ema_params' or 'params'")
  directory = resolve_checkpoint(path)
  restored = restore_for_inference(directory)
  state = restored["state"]
  if which not in state:
    raise ValueError(f"checkpoint {directory} has no {which!r} (it has {sorted(state)})")
  return jax.tree.map(np.asarray, state[which]), directory, restored["config"]


def frozen_patterns(frozen: str | Sequence[str]) -> tuple[str, ...]:
  """`train.frozen` as glob patterns over parameter paths. Entries are patterns
  (`"backbone/*"`, `"backbone/image_tokenizer_*"`) or preset names ("full", "head_only")."""
  entries = (frozen,) if isinstance(frozen, str) else tuple(frozen)
  out: list[str] = []
  for entry in entries:
    if entry in FROZEN_PRESETS:
      out += FROZEN_PRESETS[entry]
    elif "/" not in entry and "*" not in entry:
      raise ValueError(f"config.train.frozen entry {entry!r} is neither a preset {sorted(FROZEN_PRESETS)} nor "
                       "a parameter-path pattern like 'backbone/*'")
    else:
      out.append(entry)
  return tuple(out)


def frozen_labels(params: Params, frozen: str | Sequence[str]) -> Params:
  """A pytree like params with "frozen" / "trainable" per leaf (optax.multi_transform labels).

  Raises ValueError for a pattern that matches no parameter (a typo would otherwise silently train
  everything) and when every parameter would be frozen.
  """
  patterns = frozen_patterns(frozen)
  flat = flatten(params)
  labels = {p: FROZEN if any(fnmatch.fnmatchcase(p, pat) for pat in patterns) else TRAINABLE for p in flat}
  for pat in patterns:
    if not any(fnmatch.fnmatchcase(p, pat) for p in flat):
      modules = sorted({_group(p, 1) for p in flat})
      raise ValueError(f"config.train.frozen pattern {pat!r} matches no parameter; top-level modules are "
                       f"{modules} (paths look like {sorted(flat)[0]!r})")
  if flat and all(v == FROZEN for v in labels.values()):
    raise ValueError(f"config.train.frozen={patterns} freezes every parameter: nothing would train")
  return unflatten(labels)


def check_frozen_were_copied(labels: Params, report: MergeReport | None) -> None:
  """Freezing a parameter that was not copied from a checkpoint freezes random weights: refuse."""
  frozen = [p for p, v in flatten(labels).items() if v == FROZEN]
  if not frozen:
    return
  fresh = frozen if report is None else [p for p in frozen if p in set(report.new) | set(report.mismatched)]
  if fresh:
    why = "no config.init_from is set" if report is None else "they were not in the checkpoint with this shape"
    raise ValueError(f"config.train.frozen freezes {len(fresh)} freshly initialised parameters ({why}), e.g. "
                     f"{fresh[:3]}; freeze only what init_from copies, or train them")
