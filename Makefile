# The two commands of the README: `make run` and `make test`. Both work from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# checkov (the manifests' policy scan) pins packages the project's own set cannot share
# (packaging<24 against pytest's >=24): it gets a venv of its own inside .venv.
CHECKOV := $(VENV)/tools/checkov/bin/checkov
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export DO_NOT_TRACK := 1
export BENTOML_DO_NOT_TRACK := true
export LANG := C.UTF-8

.PHONY: install run test lint types unit clean

install: $(STAMP)

# After the packages, their optimized bytecode: `skewguard serve` runs under python -O (see
# skewguard/cli.py). compileall exits 1 for one file written for Python 3.12 (whenever's
# _typing_312.py), which Python 3.11 never imports.

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	test -x $(CHECKOV) || $(PYTHON) -m venv $(VENV)/tools/checkov
	$(VENV)/tools/checkov/bin/python -m pip install --quiet 'checkov==3.3.30'
	$(BIN)/python -O -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	rm -f $(VENV)/.installed-* && touch $@

DEMO := examples/returns/cascade.yaml

run: install
	$(BIN)/skewguard demo-data --if-missing
	$(BIN)/skewguard train -f $(DEMO) --if-missing
	$(BIN)/skewguard features apply -f $(DEMO)
	$(BIN)/skewguard features materialize -f $(DEMO)
	$(BIN)/skewguard serve

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

types: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest

test: lint types unit

clean:
	rm -rf $(VENV) .skewguard .pytest_cache .mypy_cache .ruff_cache
