# Everyday tasks. `make test` and `make run` work on a fresh machine with Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install run test test-fast lint format protos check-protos bench image-arm64 clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,torch]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install edgecode with its test tools and the torch extra

run: $(STAMP)  ## the main job: a local cluster training with stragglers, every scheme side by side
	$(BIN)/edgecode run --json out/run.json --plot out/run.png

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest

test-fast: $(STAMP)  ## unit tests only
	$(BIN)/python -m pytest tests/unit -q

lint: $(STAMP)  ## ruff lint + format check, mypy
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests
	$(BIN)/mypy

format: $(STAMP)  ## apply ruff formatting and safe fixes
	$(BIN)/ruff format services tests
	$(BIN)/ruff check --fix services tests

protos: $(STAMP)  ## regenerate services/edgecode/v1 from proto/ (never edit it by hand)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python scripts/gen_protos.py

check-protos: protos  ## fail if the committed generated code differs from a fresh generation
	git diff --exit-code --stat -- services/edgecode/v1

bench: $(STAMP)  ## all benchmarks (writes out/bench-*)
	$(BIN)/edgecode bench codes --out out/bench-codes
	$(BIN)/edgecode bench train --out out/bench-train

image-arm64: $(STAMP)  ## the arm64 (Raspberry Pi) image edgecode-arm64:local, no registry (root; scripts/arm64_image.py --help)
	$(BIN)/python scripts/arm64_image.py $(ARM64_FLAGS)

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis out
