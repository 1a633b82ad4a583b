# Every target is self-sufficient on a fresh clone: it creates .venv from the
# pinned requirements.txt (and installs vla_jax in editable mode) if needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-slow test-all quickstart bench clean-data

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

## The default test suite (fast; slow end-to-end tests are deselected).
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

## Slow end-to-end tests only (CI runs these after `make test`).
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests

test-all: $(STAMP)
	$(PY) -m pytest -q tests

## The main job on the built-in default: generate the tabletop dataset (if missing) and summarise it.
quickstart: $(STAMP)
	$(PY) -m experiments.generate_data --config experiments/configs/tabletop_data.py

bench: $(STAMP)
	$(PY) benchmarks/env_speed.py
