"""Closed-loop evaluation of a policy: success per task family and per condition, and its artifacts.

Conditions (all on the same scene seeds, so they are paired comparisons):
  seen              training phrasings and colour-shape combos (new scenes);
  heldout_phrasing  phrasings never in the training data;
  heldout_combo     targets whose colour-shape pairing never appeared in training;
  heldout_paraphrase  seen scenes phrased by paraphrases that differ more from training: another
                    word order, filler and politeness words, and verbs no training phrasing uses;
  language_blind    seen scenes, but the policy is told another episode's instruction, one that
                    asks for a different task in this scene — the gap to "seen" is how much
                    success comes from reading the instruction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import ml_collections
import numpy as np
from ml_collections import config_dict

from vla_jax.envs import tasks
from vla_jax.envs.tabletop import DEFAULT_EPISODE_STEPS
from vla_jax.evaluation import metaworld, metrics, rollout
from vla_jax.evaluation.policies import ChunkPolicy
from vla_jax.inference.artifacts import policy_control_rate
from vla_jax.io import write_json_atomic

CONDITIONS: dict[str, dict[str, Any]] = {
    "seen": dict(split="train"),
    "heldout_phrasing": dict(split="heldout_phrasing"),
    "heldout_combo": dict(split="heldout_combo"),
    "heldout_paraphrase": dict(split="heldout_paraphrase"),
    "language_blind": dict(split="train", instruction_override="shuffled"),
}


def eval_config(episodes_per_family: int = 50) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.episodes_per_family = episodes_per_family
  c.families = tasks.FAMILIES
  c.conditions = tuple(CONDITIONS)
  c.num_envs = 50  # Episodes stepped together (one policy call for all).
  # The simulator's steps per default step (`TabletopEnv(control_rate=...)`): None = the rate the
  # policy's training run evaluated at (its saved config's eval.control_rate; 1 without one), so a
  # policy trained on data/tabletop_rate4 is never run at the default rate by mistake.
  c.control_rate = config_dict.placeholder(int)
  c.max_episode_steps = config_dict.placeholder(int)  # Control steps; None = 100 x control_rate.
  c.image_size = 64
  # Chunk execution (vla_jax.inference.execution): "sync" (k of H per query; at delay 0 receding
  # horizon), "naive_async", "ensemble" (temporal ensembling), "hard" (inpainting), "rtc",
  # "conditioned" (a head trained with head.prefix_conditioning).
  c.strategy = "sync"
  c.execute_steps = 2  # k: actions per query (sync), steps between queries (async, hard, rtc); H = open loop.
  c.ensemble_decay = 0.0  # m for "ensemble": weights exp(-m * age).
  # Inference delay in control steps: the chunk for the observation at step t arrives at t + d.
  c.delay = 0
  c.delay_distribution = ()  # Or ((d, probability), ...): d drawn per inference, seeded by `seed`.
  c.seed = 1_000_000  # Scene seeds: seed + family_index * 100_000 + episode.
  c.videos_per_family = 2  # GIFs of the first episodes of each family per condition in `videos_for`.
  c.videos_for = ("seen", "language_blind")
  # `experiments.evaluate` only (built-in simulator, policies trained with the referent loss): where
  # the target token looks on this many first frames per condition and family (evaluation/grounding).
  c.grounding_scenes = 100
  return c


def sim_kwargs(config: ml_collections.ConfigDict, policy: Any = None) -> dict[str, Any]:
  """`rollout.run_episodes` arguments for the simulator of an eval config, the control rate
  resolved against `policy` when the config leaves it open (`policy_control_rate`)."""
  rate = config.get("control_rate")
  rate = int(rate) if rate is not None else policy_control_rate(policy)
  steps = config.get("max_episode_steps")
  return dict(image_size=config.image_size, control_rate=rate,
              max_episode_steps=int(steps) if steps is not None else DEFAULT_EPISODE_STEPS * rate)


def execution_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`rollout.run_episodes` arguments for the chunk execution and delay of an eval config."""
  return dict(strategy=config.strategy, execute_steps=config.execute_steps, ensemble_decay=config.ensemble_decay,
              delay=config.delay, delay_distribution=tuple(tuple(e) for e in config.delay_distribution),
              delay_seed=config.seed)


def evaluate(policy: ChunkPolicy, config: ml_collections.ConfigDict, progress: bool = False) -> dict[str, Any]:
  """Runs every (condition, family) and returns {"conditions": ..., "episodes": [...]} (JSON-able).

  `config.env` picks the simulator: absent or "tabletop" (this module's `eval_config`), or
  "metaworld" (`evaluation.metaworld.eval_config`; families are then Meta-World tasks).
  """
  env = config.get("env", "tabletop")
  if env == "metaworld":
    return metaworld.evaluate(policy, config, execution_kwargs(config), progress=progress)
  if env != "tabletop":
    raise ValueError(f"eval config env={env!r} is not valid; expected 'tabletop' or 'metaworld'")
  for name in config.conditions:
    if name not in CONDITIONS:
      raise ValueError(f"eval condition {name!r} is unknown; expected some of {list(CONDITIONS)}")
  sim = sim_kwargs(config, policy)
  summary = metrics.new_summary(control_rate=sim["control_rate"])  # What the episodes ran at.
  jobs = [(c, f) for c in config.conditions for f in config.families]
  bar = None
  if progress:
    import tqdm

    bar = tqdm.tqdm(total=len(jobs) * config.episodes_per_family, desc="closed-loop eval", unit="ep")
  for condition, family in jobs:
    index = tasks.FAMILIES.index(family)
    seeds = [config.seed + index * 100_000 + i for i in range(config.episodes_per_family)]
    kwargs = dict(CONDITIONS[condition])
    split = kwargs.pop("split")
    record = config.videos_per_family if condition in config.videos_for else 0
    results = rollout.run_episodes(
        policy, seeds, family=family, split=split, num_envs=config.num_envs, record_frames=record,
        **sim, **execution_kwargs(config), **kwargs,
    )
    metrics.add_results(summary, condition, family, results)
    if bar is not None:
      bar.update(len(results))
  if bar is not None:
    bar.close()
  metrics.close_conditions(summary)
  return summary


def scalars(summary: dict[str, Any]) -> dict[str, float]:
  """Flat {"<condition>/<family|overall>/success_rate": ...} for TensorBoard and JSON lines."""
  out = {}
  for condition, cond in summary["conditions"].items():
    out[f"{condition}/overall/success_rate"] = cond["overall"]["success_rate"]
    out[f"{condition}/overall/mean_length"] = cond["overall"]["mean_length"]
    for family, s in cond["families"].items():
      out[f"{condition}/{family}/success_rate"] = s["success_rate"]
    for group, s in cond.get("groups", {}).items():  # Meta-World's difficulty groups.
      out[f"{condition}/group_{group}/success_rate"] = s["success_rate"]
  return out


def markdown_table(summary: dict[str, Any]) -> str:
  """Success % [95 % CI] per family (columns) and condition (rows), plus mean episode length.
  Meta-World summaries get `evaluation.metaworld.markdown_table` (tasks as rows)."""
  if summary.get("suite") == "metaworld":
    return metaworld.markdown_table(summary)
  families = list(next(iter(summary["conditions"].values()))["families"])
  header = "| condition | " + " | ".join(families) + " | overall | mean length |"
  lines = [header, "|" + "---|" * (len(families) + 3)]
  cell = lambda s: f"{100 * s['success_rate']:.0f} % [{100 * s['ci95_low']:.0f}, {100 * s['ci95_high']:.0f}]"  # noqa: E731
  for condition, cond in summary["conditions"].items():
    row = [cell(cond["families"][f]) for f in families] + [cell(cond["overall"]), f"{cond['overall']['mean_length']:.1f}"]
    lines.append(f"| {condition} | " + " | ".join(row) + " |")
  n = next(iter(summary["conditions"].values()))["overall"]["episodes"]
  lines.append(f"\n{n} episodes per condition; success % with a 95 % Wilson interval.")
  return "\n".join(lines)


PHRASING_CONDITIONS = ("heldout_phrasing", "heldout_paraphrase")


def template_table(summary: dict[str, Any]) -> str:
  """Success per phrasing template of the held-out phrasing conditions ("" when none ran).

  Why: a condition's rate hides which wordings fail — one template can carry most of a gap
  (a push phrased with a pick verb, "... without lifting it"), which the per-family table cannot show.
  """
  counts: dict[tuple[str, str, str], list[int]] = {}
  for episode in summary["episodes"]:
    if episode.get("condition") not in PHRASING_CONDITIONS:
      continue
    family, _, template, _ = tasks.parse_instruction(episode["instruction"])  # These scenes say a template.
    row = counts.setdefault((episode["condition"], family, template), [0, 0])
    row[0] += bool(episode["success"])
    row[1] += 1
  if not counts:
    return ""
  lines = ["| condition | family | template | success |", "|---|---|---|---|"]
  for (condition, family, template), (ok, n) in sorted(counts.items()):
    low, high = metrics.wilson_interval(ok, n)
    lines.append(f"| {condition} | {family} | {template} | {ok}/{n} ({100 * ok / n:.0f} % "
                 f"[{100 * low:.0f}, {100 * high:.0f}]) |")
  return "\n".join(lines)


def grounding_splits(conditions: Sequence[str]) -> dict[str, str]:
  """{condition: scene split} of the conditions a grounding check can score (`evaluation/grounding`):
  all but those that tell another scene's instruction ("language_blind")."""
  for name in conditions:
    if name not in CONDITIONS:
      raise ValueError(f"eval condition {name!r} is unknown; expected some of {list(CONDITIONS)}")
  return {name: CONDITIONS[name]["split"] for name in conditions if "instruction_override" not in CONDITIONS[name]}


def grounding_table(report: dict[str, Any]) -> str:
  """One row per (condition, family) of a grounding report: on-target rate [95 % CI], the misses
  by kind of object, median error."""
  first = next(iter(next(iter(report.values())).values()))
  misses = [c for c in first["counts"] if c != "target"]
  lines = ["| condition | family | on target | " + " | ".join(misses) + " | median error |",
           "|---|---|---|" + "---|" * len(misses) + "---|"]
  for condition, families in report.items():
    for family, r in families.items():
      lines.append(f"| {condition} | {family} | {100 * r['target_rate']:.0f} % [{100 * r['ci95_low']:.0f}, "
                   f"{100 * r['ci95_high']:.0f}] | " + " | ".join(str(r["counts"][c]) for c in misses)
                   + f" | {r['median_error']:.3f} |")
  lines.append(f"\n{first['scenes']} scenes per family (first frames); a miss counts the object nearest the "
               "target token's attention; error in image widths.")
  return "\n".join(lines)


def save_gif(frames: list[np.ndarray], path: Path, instruction: str, success: bool, scale: int = 4) -> None:
  """An episode as an animated GIF, upscaled, with the instruction written above the frames."""
  import textwrap

  from PIL import Image, ImageDraw

  width_chars = max(10, (frames[0].shape[1] * scale - 24) // 6)  # PIL's default font: ~6 px a char.
  lines = textwrap.wrap(instruction, width_chars)[:3]
  banner = 6 + 13 * len(lines)
  out = []
  for i, frame in enumerate(frames):
    h, w = frame.shape[:2]
    canvas = Image.new("RGB", (w * scale, h * scale + banner), (255, 255, 255))
    canvas.paste(Image.fromarray(frame).resize((w * scale, h * scale), Image.NEAREST), (0, banner))
    draw = ImageDraw.Draw(canvas)
    for row, line in enumerate(lines):
      draw.text((4, 2 + 13 * row), line, fill=(0, 0, 0))
    if i == len(frames) - 1:
      draw.rectangle([w * scale - 14, 2, w * scale - 4, 12], fill=(30, 170, 60) if success else (210, 40, 40))
    out.append(canvas)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp.gif")
  out[0].save(tmp, save_all=True, append_images=out[1:] + [out[-1]] * 5, duration=100, loop=0)
  tmp.replace(path)


def write_artifacts(summary: dict[str, Any], outdir: str | Path, step: int | None = None) -> dict[str, Path]:
  """summary.json, results.md and videos/*.gif under outdir; returns their paths."""
  outdir = Path(outdir)
  outdir.mkdir(parents=True, exist_ok=True)
  paths = {"json": outdir / "summary.json", "markdown": outdir / "results.md", "videos": outdir / "videos"}
  payload = {"step": step, "conditions": summary["conditions"], "episodes": summary["episodes"]}
  if "suite" in summary:  # Meta-World; the built-in suite's summary.json keeps its layout.
    payload = {"suite": summary["suite"], **payload}
  if summary.get("grounding"):
    payload["grounding"] = summary["grounding"]
  write_json_atomic(paths["json"], payload)
  per_template = template_table(summary) if summary.get("suite") != "metaworld" else ""
  text = markdown_table(summary) + "\n"
  if per_template:
    text += f"\n## Per phrasing template\n\n{per_template}\n"
  if summary.get("grounding"):
    text += f"\n## Where the target token looks\n\n{grounding_table(summary['grounding'])}\n"
  paths["markdown"].write_text(text)
  for video in summary["videos"]:
    name = f"{video['condition']}_{video['family']}_{video['seed']}_{'ok' if video['success'] else 'fail'}.gif"
    save_gif(video["frames"], paths["videos"] / name, video["instruction"], video["success"])
  return paths


def plot_success_curve(history: list[dict[str, Any]], path: str | Path) -> Path:
  """Success rate vs training step for each condition, from a list of {"step", <scalars>} records."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  history = sorted(history, key=lambda r: r["step"])
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for condition in CONDITIONS:
    key = f"{condition}/overall/success_rate"
    points = [(r["step"], r[key]) for r in history if key in r]
    if points:
      ax.plot(*zip(*points), marker="o", label=condition)
  ax.set_xlabel("training step")
  ax.set_ylabel("success rate")
  ax.set_ylim(-0.02, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  path = Path(path)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def run_typed_instruction(policy: ChunkPolicy, instruction: str, *, seed: int, family: str = "place",
                          config: ml_collections.ConfigDict | None = None,
                          gif: str | Path | None = None) -> rollout.EpisodeResult:
  """One episode on the scene `seed` draws for `family`, with an instruction a person typed.

  The env grounds the text in the scene (`tasks.ground_instruction`): if it names a task there,
  success is judged on that task; if not, the episode still runs (the policy does what it does)
  and the result says `judgeable=False` with the env's note. Optionally writes the episode's GIF.
  """
  config = config or eval_config()
  tasks.check_choice("family", family, tasks.FAMILIES)
  result = rollout.run_episodes(
      policy, [int(seed)], family=family, split="train", num_envs=1, instruction_override=[instruction],
      record_frames=1 if gif else 0, **sim_kwargs(config, policy), **execution_kwargs(config))[0]
  if gif:
    save_gif(result.frames, Path(gif), instruction, result.success)
  return result
