# Two commands for a newcomer: `make local` runs the whole pipeline on this machine,
# `make test` runs the tests. Each one creates the virtualenv it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAM_STAMP := .venv-sam/.installed

.PHONY: local test bench clean

$(STAMP): requirements-dev.txt layers/common/requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

# The SAM CLI the build test runs (tests/test_sam_build.py), in its own virtualenv: see requirements-sam.txt.
$(SAM_STAMP): requirements-sam.txt
	$(PYTHON) -m venv .venv-sam
	.venv-sam/bin/python -m pip install --quiet --upgrade pip
	.venv-sam/bin/python -m pip install --quiet -r requirements-sam.txt
	@touch $(SAM_STAMP)

local: $(STAMP)
	$(BIN)/python scripts/local_run.py

test: $(STAMP) $(SAM_STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP) $(SAM_STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .venv-sam .pytest_cache local-data
