# Every target is self-sufficient on a fresh clone: it creates .venv from the
# pinned requirements.txt (and installs vla_jax in editable mode) if needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-slow test-all quickstart quickstart-export bench bench-quickstart clean-data

$(STAMP): requirements.txt requirements-nodeps.txt requirements-test-nodeps.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-test-nodeps.txt
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

## The main job on the built-in default: data (if missing) -> train `small` -> closed-loop
## evaluation (results table + GIFs under runs/tabletop/eval/). Re-running resumes training from
## runs/tabletop (or finds it finished). `make quickstart-export` then exports the trained policy.
## TRAIN_FLAGS adds config overrides to the training command (e.g. TRAIN_FLAGS=--config.seed=1);
## `python benchmarks/quickstart.py` times the whole job and writes benchmarks/results/quickstart.json.
QUICKSTART_RUN ?= runs/tabletop
TRAIN_FLAGS ?=
quickstart: $(STAMP)
	$(PY) -m experiments.generate_data --config experiments/configs/tabletop_data.py
	$(PY) -m experiments.train --config experiments/configs/tabletop.py --workdir $(QUICKSTART_RUN) $(TRAIN_FLAGS)
	$(PY) -m experiments.evaluate --workdir $(QUICKSTART_RUN)

## The quickstart policy -> TF SavedModel + ONNX (parity-checked, exports/tabletop/) -> the edge
## latency table (benchmarks/results/edge_quickstart.md). Runs `make quickstart` first if needed.
quickstart-export: quickstart
	$(PY) -m experiments.export --workdir $(QUICKSTART_RUN) --out exports/tabletop --overwrite
	$(PY) benchmarks/edge.py --export_dir exports/tabletop --name edge_quickstart

## Every benchmark that needs nothing but this checkout (an untrained quickstart-shaped policy
## where a policy is needed); tables printed, JSON in benchmarks/results/. Policies you trained:
## see each script's --help (e.g. benchmarks/serve.py --checkpoint ..., benchmarks/edge.py --export_dir ...).
## The whole quickstart job is timed by `make bench-quickstart` (deletes data/tabletop and runs/tabletop).
bench: $(STAMP)
	$(PY) benchmarks/env_speed.py
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/model_latency.py
	$(PY) benchmarks/train_step.py --variant small
	$(PY) benchmarks/edge.py --size small
	$(PY) benchmarks/serve.py

bench-quickstart: $(STAMP)
	$(PY) benchmarks/quickstart.py --fresh
