# The two commands of the README: `make run` and `make test`. Both work from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# checkov (the manifests' policy scan) pins packages the project's own set cannot share
# (packaging<24 against pytest's >=24): it gets a venv of its own inside .venv.
CHECKOV := $(VENV)/tools/checkov/bin/checkov
SUM := $(shell cksum pyproject.toml | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(SUM)
DEV_STAMP := $(VENV)/.installed-dev-$(SUM)
export DO_NOT_TRACK := 1
export BENTOML_DO_NOT_TRACK := true
export LANG := C.UTF-8

.PHONY: install install-dev run test lint types unit clean

install: $(STAMP)
install-dev: $(DEV_STAMP)

# After the packages, their optimized bytecode: `skewguard serve` runs under python -O (see
# skewguard/cli.py). compileall exits 1 for one file written for Python 3.12 (whenever's
# _typing_312.py), which Python 3.11 never imports.

$(STAMP): pyproject.toml
	@echo "installing skewguard and its dependencies into $(VENV) (a few minutes the first time) ..."
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	@echo "compiling optimized bytecode (skewguard serve runs under python -O) ..."
	$(BIN)/python -O -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	rm -f $(VENV)/.installed-* && touch $@

# The tools of `make test`: linters, types, pytest and its plugins, checkov in a venv of its own.
$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	test -x $(CHECKOV) || $(PYTHON) -m venv $(VENV)/tools/checkov
	$(VENV)/tools/checkov/bin/python -m pip install --quiet 'checkov==3.3.30'
	touch $@

DEMO := examples/returns/cascade.yaml

run: install
	$(BIN)/skewguard demo-data --if-missing
	$(BIN)/skewguard train -f $(DEMO) --if-missing
	$(BIN)/skewguard features apply -f $(DEMO)
	$(BIN)/skewguard features materialize -f $(DEMO)
	$(BIN)/skewguard serve

lint: install-dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

types: install-dev
	$(BIN)/mypy

unit: install-dev
	$(BIN)/pytest

test: lint types unit

clean:
	rm -rf $(VENV) .skewguard .pytest_cache .mypy_cache .ruff_cache
