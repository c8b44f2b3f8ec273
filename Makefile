# Every command a user needs. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
SWEEP ?= grid
DIR ?=

.DEFAULT_GOAL := help
.PHONY: help install install-conda run eval predict sample export export-mnist new-project bench bench-sharding sweep summary tensorboard test lint docs format clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install:  ## create .venv and install the project with its dev tools (safe to repeat)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@echo "installed into $(VENV); next: make run"

install-conda:  ## the same dependencies through conda (environment.yml)
	@command -v conda >/dev/null || { echo "conda not found: use 'make install'"; exit 1; }
	conda env update --file environment.yml --prune

run:  ## train the default model on MNIST (overrides: make run ARGS="model=mlp seed=1")
	$(PY) -m src.main $(ARGS)

bench:  ## time the Runner against a hand-written loop (and Lightning if installed); --quick via ARGS
	$(PY) -m src.tools.bench $(ARGS)

bench-sharding:  ## DDP vs FSDP on 2 CPU ranks: memory per rank and time per step (ARGS="--nproc 4")
	$(PY) -m src.tools.bench.sharding $(ARGS)

sweep:  ## run a sweep from src/config/sweep/ (make sweep SWEEP=optuna ARGS="seed=0,1,2")
	$(PY) -m src.main --multirun sweep=$(SWEEP) $(ARGS)

summary:  ## summarise a sweep folder again (make summary DIR=multirun/<date>/<time>)
	@test -n "$(DIR)" || { echo "usage: make summary DIR=multirun/<date>/<time>"; exit 2; }
	$(PY) -m src.sweep.summary $(DIR)

tensorboard:  ## serve TensorBoard for a folder of runs (make tensorboard DIR=multirun/...)
	$(PY) -m tensorboard.main --logdir $(or $(DIR),outputs)

test:  ## run the test suite (one worker per core; each test file stays on one worker)
	$(PY) -m pytest -q -n auto --dist loadfile $(ARGS)

lint:  ## check formatting (black), lint (ruff), types (mypy) and the import rules (import-linter)
	$(PY) -m black --check src test hydra_plugins
	$(PY) -m ruff check src test hydra_plugins
	$(PY) -m mypy src hydra_plugins
	$(VENV)/bin/lint-imports --no-cache

docs:  ## refresh the generated config reference in docs/configs.md
	$(PY) -m src.config.reference --write

format:  ## format the code in place
	$(PY) -m ruff check --fix --quiet src test hydra_plugins || true
	$(PY) -m black --quiet src test hydra_plugins

clean:  ## remove run outputs and caches (keeps data/ and .venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

eval:  ## evaluate a checkpoint on the test set: make eval CKPT=<file.pt> or RUN=<run dir>
	@test -n "$(CKPT)$(RUN)" || { echo "usage: make eval CKPT=<file.pt> | RUN=<run dir> [ARGS=...]"; exit 2; }
	$(PY) -m src.eval $(if $(CKPT),ckpt=$(CKPT),run=$(RUN)) $(ARGS)

predict:  ## classify images: make predict CKPT=<file.pt> INPUT=<image or folder> [ARGS="out=x.csv"]
	@test -n "$(CKPT)" -a -n "$(INPUT)" || { echo "usage: make predict CKPT=<file.pt> INPUT=<image or folder> [ARGS=...]"; exit 2; }
	$(PY) -m src.predict ckpt=$(CKPT) input=$(INPUT) $(ARGS)

sample:  ## continue a prompt with a language model: make sample CKPT=<file.pt> PROMPT="def " [ARGS="length=1000"]
	@test -n "$(CKPT)$(RUN)" || { echo "usage: make sample CKPT=<file.pt> | RUN=<run dir> [PROMPT=...] [ARGS=...]"; exit 2; }
	$(PY) -m src.sample $(if $(CKPT),ckpt=$(CKPT),run=$(RUN)) $(if $(PROMPT),prompt="$$PROMPT") $(ARGS)

export:  ## export a checkpoint for inference (safetensors + JSON, ONNX): make export RUN=<run dir> | CKPT=<file.pt>
	@test -n "$(CKPT)$(RUN)" || { echo "usage: make export CKPT=<file.pt> | RUN=<run dir> [ARGS=...]"; exit 2; }
	$(PY) -m src.export $(if $(CKPT),ckpt=$(CKPT),run=$(RUN)) $(ARGS)

export-mnist:  ## MNIST as PNG class folders, to try data=image_folder (make export-mnist DEST=data/mnist_png)
	$(PY) -m src.data.export_mnist $(or $(DEST),data/mnist_png)

new-project:  ## start a new project from this template: make new-project NAME=<name> DEST=<path>
	@test -n "$(NAME)" -a -n "$(DEST)" || { echo "usage: make new-project NAME=<name> DEST=<path>"; exit 2; }
	@$(PYTHON) -m src.tools.new_project "$(NAME)" "$(DEST)"
