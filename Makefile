# The two commands of the README: `make run` and `make test`. Both work from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export DO_NOT_TRACK := 1
export BENTOML_DO_NOT_TRACK := true
export LANG := C.UTF-8

.PHONY: install run test lint types unit clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

run: install
	$(BIN)/skewguard demo-data --if-missing
	$(BIN)/skewguard train --if-missing
	$(BIN)/skewguard features apply
	$(BIN)/skewguard features materialize
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
