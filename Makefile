# Every target sets itself up on a fresh machine: uv is installed with pip when missing.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PACKAGES := sandbox tap-lytics-audience tap-braze-csv target-braze-audience target-lytics-users

.PHONY: help uv sync system-deps lint typecheck test demo bench clean

help:
	@echo "make demo   run both directions against the local Braze and Lytics sandbox"
	@echo "make test   install everything, lint, type-check and run the whole test suite"
	@echo "make bench  run the benchmarks and rewrite benchmarks/README.md's results table"
	@echo "make lint   ruff + mypy"

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

sync: uv
	$(UV) sync --locked

system-deps:
	@bash scripts/ensure-system-deps.sh

lint: sync
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .
	$(MAKE) --no-print-directory typecheck

typecheck: sync
	@set -e; for p in $(PACKAGES); do \
	  pkg=$$(echo $$p | tr - _); [ "$$p" = sandbox ] && pkg=sandbox; \
	  echo "mypy $$p/$$pkg"; (cd $$p && $(UV) run --locked mypy $$pkg); \
	done

test: sync system-deps lint
	$(UV) run --locked pytest -q -ra

demo: sync
	$(UV) run --locked python scripts/demo.py

bench: sync
	$(UV) run --locked python benchmarks/run.py

clean:
	rm -rf .venv .meltano benchmarks/.work .mypy_cache .ruff_cache
