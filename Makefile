# Two commands for a newcomer: `make local` runs the whole pipeline on this machine,
# `make test` runs the tests. Each one creates the virtualenv it needs first, with the project
# installed into it (editable): .venv/bin/kandji-snapshots runs the code of this folder.
# `make help` lists the targets: each target's line is its `## ` comment.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAM_STAMP := .venv-sam/.installed

.PHONY: help local test bench sam-cli mutate clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# uv installs the pinned requirements (pip only brings uv itself): both virtualenvs in about 10 s on a
# fresh clone, where pip took about 75 s.
UV_VERSION := 0.13.8
UV := $(BIN)/uv

$(STAMP): requirements-dev.txt layers/common/requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(UV) pip install --quiet --python $(BIN)/python -r requirements-dev.txt
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --editable .
	@rm -rf layers/common/kandji_snapshots.egg-info  # a by-product of the install: never ship it in the layer
	@touch $(STAMP)

# The SAM CLI the build test runs (tests/test_sam_build.py), in its own virtualenv: see requirements-sam.txt.
sam-cli: $(SAM_STAMP) ## install the pinned SAM CLI into .venv-sam/ (.venv-sam/bin/sam build, deploy)

# A command, not a library: its virtualenv needs no pip (uv from .venv installs into it).
$(SAM_STAMP): requirements-sam.txt | $(STAMP)  # order-only: uv must be there, a newer .venv is no reason to rebuild
	$(PYTHON) -m venv --without-pip .venv-sam
	$(UV) pip install --quiet --python .venv-sam/bin/python -r requirements-sam.txt
	@touch $(SAM_STAMP)

local: $(STAMP) ## run the whole pipeline on this machine (simulator + moto), no AWS account needed; DEVICES=N
	$(BIN)/python scripts/local_run.py

# Tests run on TEST_WORKERS processes (pytest-xdist) in a random order (pytest-randomly prints the seed).
# They write bytecode even where PYTHONDONTWRITEBYTECODE is set: otherwise each worker and each
# subprocess (checkov, cfn-lint, sam, the built handlers' runs) compiles every module it imports again.
# Twice the 2 cores of the project's machines: the end-to-end tests also wait on loopback HTTP and on
# subprocesses (checkov, sam build). Measured on a fresh clone: 1,187 tests, 203 s of pytest on 3 workers
# against 178 s on 4 (docs/development.md has the latest figure). `make test TEST_WORKERS=0` runs them in
# this one process.
TEST_WORKERS ?= 4

test: $(STAMP) $(SAM_STAMP) ## ruff, then the test suite in parallel, random order (also sam validate and sam build)
	$(BIN)/ruff check .
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -n $(TEST_WORKERS)

bench: $(STAMP) $(SAM_STAMP) ## run every benchmark (docs/performance.md), a few minutes
	$(BIN)/python bench/run_all.py

# Mutation testing, a development aid (configuration: [mutmut] in setup.cfg). mutmut only finds a
# package under ./ or src/, so it runs in a fresh copy, .mutmut/, with the package under src/.
# Low priority: it keeps the machine's cores busy for a few minutes.
mutate: $(STAMP) ## mutation testing of a few domain modules (slow, low priority)
	rm -rf .mutmut && mkdir -p .mutmut/src
	cp -r layers/common/kandji_snapshots .mutmut/src/
	cp -r tests simulator events functions setup.cfg pytest.ini .mutmut/
	cd .mutmut && nice -n 19 ../$(BIN)/mutmut run && ../$(BIN)/mutmut results

clean: ## remove the virtualenvs, local-data/ and caches
	rm -rf $(VENV) .venv-sam .pytest_cache local-data .mutmut mutants
