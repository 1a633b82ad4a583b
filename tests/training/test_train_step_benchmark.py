"""benchmarks/train_step.py's --set KEY=VALUE overrides (what the stem-width probes ran with)."""

import pytest

from experiments.configs import tabletop
from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def train_step_script():
  return load_benchmark("train_step")


def test_set_parses_python_literals_and_bare_strings(train_step_script):
  assert train_step_script.override("model.image.stem_features=(16, 32, 64)") == ("model.image.stem_features", (16, 32, 64))
  assert train_step_script.override("train.batch_size=64") == ("train.batch_size", 64)
  assert train_step_script.override("model.head.kind=flow") == ("model.head.kind", "flow")
  with pytest.raises(SystemExit, match="expected KEY=VALUE"):
    train_step_script.override("model.head.kind")


def test_set_changes_an_existing_key_and_refuses_a_typo(train_step_script):
  config = tabletop.get_config("small")
  train_step_script.set_key(config, "model.image.stem_features", (16, 32, 64))
  assert tuple(config.model.image.stem_features) == (16, 32, 64)
  with pytest.raises(SystemExit, match="no key 'stem_feature'"):
    train_step_script.set_key(config, "model.image.stem_feature", (16,))
  with pytest.raises(SystemExit, match="no 'imag' under"):
    train_step_script.set_key(config, "model.imag.stem_features", (16,))
