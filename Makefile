# fusion-hpo — everything runs in .venv, created on first use.
#   make demo         create .venv, install, run the quickstart study, print the best config
#   make test         create/update .venv with the dev extras, run the test suite
#   make bench        the full benchmark suite (long; see BENCHMARKS.md)
#   make bench-quick  every benchmark at a tiny budget (minutes; CI runs it)
#   make compat-newest / compat-floors  storage, runner, spec and Ray tests on the newest / the declared-floor libraries

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
TORCH  ?= torch==2.13.0
# the tested set of every dependency (pip freeze of the venv the suite passed in): reproducible installs.
# CONSTRAINTS= (empty) installs the newest versions the floors in pyproject.toml allow instead.
CONSTRAINTS ?= constraints.txt
PIP_C  := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
PYTEST_ARGS ?= --durations=30

.PHONY: demo test layers install dev bench bench-quick compat-newest compat-floors clean

# torch first: a plain `torch` requirement would pull a multi-GB CUDA build; 2.13.0 satisfies ours.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(PIP_C) "$(TORCH)"

$(VENV)/.installed: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(PIP) install --quiet $(PIP_C) -e .
	@touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(PIP) install --quiet $(PIP_C) -e ".[dev]"
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/hpo run studies/quickstart.yaml

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the import layers of hpo/ (errors/registry <- data <- train <- tasks <- spec <- search <- store <- run <- analysis <- cli)
layers: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q tests/test_layers.py

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/run_all.py

bench-quick: $(VENV)/.installed-dev
	$(BIN)/python bench/run_all.py --quick

# the storage, runner, spec and Ray tests on the newest releases / the declared floors, each in its own venv
compat-newest:
	.ci/compat newest

compat-floors:
	.ci/compat floors

clean:
	rm -rf $(VENV) .venv-newest .venv-floors runs .pytest_cache
