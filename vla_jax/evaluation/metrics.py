"""Success rates with confidence intervals, grouped by task family and split."""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from vla_jax.evaluation.rollout import EpisodeResult


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
  """95 % Wilson score interval: honest at 0 % and 100 % and for small n, unlike p ± 1.96·se."""
  if n == 0:
    return (0.0, 1.0)
  p = successes / n
  denom = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  return (max(0.0, centre - half), min(1.0, centre + half))


def summarise(results: Iterable[EpisodeResult]) -> dict[str, float]:
  results = list(results)
  n = len(results)
  wins = sum(r.success for r in results)
  lo, hi = wilson_interval(wins, n)
  return {
      "episodes": n,
      "success_rate": wins / n if n else 0.0,
      "ci95_low": lo,
      "ci95_high": hi,
      "mean_length": sum(r.length for r in results) / n if n else 0.0,
  }


def new_summary(**fields: Any) -> dict[str, Any]:
  """An empty evaluation summary: per-condition tables, every episode's record, the recorded videos."""
  return {**fields, "conditions": {}, "episodes": [], "videos": []}


def add_results(summary: dict[str, Any], condition: str, family: str, results: Sequence[EpisodeResult]) -> None:
  """Adds one (condition, family) batch of episodes: its table row, the episode records, the videos."""
  cond = summary["conditions"].setdefault(condition, {"families": {}, "_results": []})
  cond["families"][family] = summarise(results)
  cond["_results"].extend(results)
  for r in results:
    summary["episodes"].append({k: v for k, v in vars(r).items() if k != "frames"} | {"condition": condition})
    if r.frames is not None:
      summary["videos"].append({"condition": condition, "family": family, "seed": r.seed,
                                "instruction": r.instruction, "success": r.success, "frames": r.frames})


def close_conditions(summary: dict[str, Any]) -> dict[str, list[EpisodeResult]]:
  """Adds each condition's overall row; returns {condition: its episodes} (for further grouping)."""
  out = {}
  for name, cond in summary["conditions"].items():
    out[name] = cond.pop("_results")
    cond["overall"] = summarise(out[name])
  return out
