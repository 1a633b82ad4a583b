# Every target is self-sufficient on a fresh clone: it creates .venv from the
# pinned requirements.txt (and installs vla_jax in editable mode) if needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-slow test-all quickstart quickstart-export bench bench-quickstart clean-data \
	metaworld-deps gl-libs metaworld test-metaworld bench-metaworld

$(STAMP): requirements.txt requirements-nodeps.txt requirements-test-nodeps.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-test-nodeps.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

## The default test suite (fast; slow end-to-end tests are deselected).
# TEST_WORKERS: pytest-xdist processes (2 = this project's 2-core CI machine; 0 = one process).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist load tests

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

## ---- Meta-World MT10 from pixels with language (issue 19; optional extra) ----------------------
## `make metaworld-deps` installs requirements-metaworld.txt into .venv (changing no pin of
## requirements.txt) and, when missing, the Debian EGL libraries MuJoCo renders headless with.
MW_STAMP := $(VENV)/.installed-metaworld
METAWORLD_RUN ?= runs/metaworld
METAWORLD_TESTS := tests/envs/test_metaworld.py tests/envs/test_metaworld_data.py tests/evaluation/test_metaworld.py

## EGL through Mesa (libEGL.so.1 + the Mesa vendor library); apt-get only when one is missing.
gl-libs:
	@if ldconfig -p | grep -q 'libEGL.so.1 ' && ldconfig -p | grep -q 'libEGL_mesa.so.0 '; then \
	  echo "EGL libraries present (libEGL.so.1, libEGL_mesa.so.0)"; \
	else \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends libegl1 libegl-mesa0 libgl1; \
	fi

$(MW_STAMP): $(STAMP) requirements-metaworld.txt
	@$(MAKE) --no-print-directory gl-libs
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-metaworld.txt
	@touch $(MW_STAMP)

metaworld-deps: $(MW_STAMP)

## The benchmark's one command: data (if missing) -> train the MT10 policy -> per-task evaluation
## (runs/metaworld/eval/step_<n>/{results.md,summary.json,videos/}). TRAIN_FLAGS as for quickstart.
metaworld: $(MW_STAMP)
	$(PY) -m experiments.generate_data --config experiments/configs/metaworld_data.py
	$(PY) -m experiments.train --config experiments/configs/metaworld.py --workdir $(METAWORLD_RUN) $(TRAIN_FLAGS)
	$(PY) -m experiments.evaluate --workdir $(METAWORLD_RUN) --config experiments/configs/metaworld.py

## Meta-World's tests, fast and slow (CI runs them; without the extra they skip in `make test`).
test-metaworld: $(MW_STAMP)
	$(PY) -m pytest -q $(METAWORLD_TESTS)

## Env steps/s with rendering, render ms/frame, expert success per task, generation time; pixels
## per object and single-view depth ambiguity per camera view.
bench-metaworld: $(MW_STAMP)
	$(PY) benchmarks/metaworld_env.py
	$(PY) benchmarks/metaworld_views.py
