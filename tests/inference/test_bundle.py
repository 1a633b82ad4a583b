"""One rule for a checkpoint's statistics, whoever loads it (evaluation, export, the server)."""

from __future__ import annotations

import pytest

from tests.conftest import write_untrained_checkpoint
from vla_jax.inference.bundle import choose_statistics, load_checkpoint

STATS = {"tabletop": {"action": {}}, "bridge": {"action": {}}}


def test_the_requested_dataset_wins_then_eval_dataset_then_the_only_one():
  assert choose_statistics(STATS, dataset="bridge", eval_dataset="tabletop") == "bridge"
  assert choose_statistics(STATS, eval_dataset="tabletop") == "tabletop"
  assert choose_statistics({"only": {}}) == "only"


@pytest.mark.parametrize("kwargs, message", [
    ({}, r"statistics for \['bridge', 'tabletop'\] and its config names no eval_dataset"),
    ({"dataset": "droid"}, r"'droid' \(requested\) has no statistics in run X; it has \['bridge', 'tabletop'\]"),
    ({"eval_dataset": "droid"}, r"'droid' \(the run's eval_dataset\) has no statistics"),
])
def test_ambiguous_or_missing_choices_are_errors_that_name_them(kwargs, message):
  with pytest.raises(ValueError, match=message):
    choose_statistics(STATS, where="run X", **kwargs)
  with pytest.raises(ValueError, match="holds no dataset statistics"):
    choose_statistics({})


@pytest.fixture(scope="module")
def mixture_checkpoints(tmp_path_factory):
  """Two checkpoints of a two-dataset run: one whose config names eval_dataset, one without."""
  from experiments.configs import tabletop
  from vla_jax.inference.testing import synthetic_statistics

  config = tabletop.get_config("tiny")
  stats = {"tabletop": synthetic_statistics(config.model, seed=1), "other": synthetic_statistics(config.model, seed=2)}
  named = write_untrained_checkpoint(tmp_path_factory.mktemp("runs") / "named", config, stats)
  config.eval_dataset = None
  unnamed = write_untrained_checkpoint(tmp_path_factory.mktemp("runs") / "unnamed", config, stats)
  return named, unnamed, stats


def test_checkpoint_loading_follows_the_rule(mixture_checkpoints):
  named, unnamed, stats = mixture_checkpoints
  bundle = load_checkpoint(named)
  assert bundle.source["dataset"] == "tabletop" and bundle.action_stats == stats["tabletop"]["action"]
  assert bundle.source["step"] == 20 and bundle.source["params"] == "ema_params"
  other = load_checkpoint(named, dataset="other", use_ema=False)
  assert other.action_stats == stats["other"]["action"] and other.source["params"] == "params"
  with pytest.raises(ValueError, match=r"holds statistics for \['other', 'tabletop'\]"):
    load_checkpoint(unnamed)
  assert load_checkpoint(unnamed, dataset="other").proprio_stats == stats["other"]["proprio"]


def test_server_and_export_hash_the_same_statistics(mixture_checkpoints):
  """`--checkpoint X` (server) and the export of X choose alike, so they report the same hash."""
  from vla_jax.serving import backends

  named, _, _ = mixture_checkpoints
  served = backends.from_checkpoint(named)
  bundle = load_checkpoint(named)
  expected = backends.normalization_info(bundle.normalization, bundle.action_stats, bundle.proprio_stats)
  assert served.normalization == expected and served.source["dataset"] == "tabletop"
