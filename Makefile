# Every target sets itself up on a fresh machine: uv is installed with pip when missing.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PACKAGES := sandbox tap-lytics-audience tap-braze-csv target-braze-audience target-lytics-users
# Supported Python versions (each pyproject's requires-python; tests/test_packaging.py checks these
# are its lowest and highest). The whole suite runs on the default interpreter; the packages' unit
# tests also run on PY_LOWEST and PY_HIGHEST, and `make dist` installs the wheels on DIST_PYTHON.
PY_LOWEST := 3.10
PY_HIGHEST := 3.13
DIST_PYTHON := 3.12
UNIT_TESTS := $(addsuffix /tests,$(PACKAGES))

.PHONY: help uv sync system-deps lint typecheck structure test test-pythons dist demo bench bench-scale bench-latency interop-lock clean

help:
	@echo "make demo   run both directions against the local Braze and Lytics sandbox"
	@echo "make test   install everything, lint, type-check and run the whole test suite"
	@echo "make dist   build and check every wheel and sdist, install each in a clean virtualenv, smoke-test"
	@echo "make bench  run the benchmarks and rewrite benchmarks/README.md's results table"
	@echo "make bench-scale / bench-latency   the long scale and Lytics-latency benchmarks (benchmarks/README.md)"
	@echo "make lint   ruff + mypy"
	@echo "make structure   no long or complex function (radon), no import cycle (scripts/check_structure.py)"

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

# No function over 60 lines or of radon grade C or worse, no import cycle between a package's
# modules; known debts are listed in scripts/structure_allowlist.txt (it only shrinks).
structure: sync
	$(UV) run --locked python scripts/check_structure.py

test: sync system-deps lint structure
	$(UV) run --locked pytest -q -ra
	$(MAKE) --no-print-directory test-pythons dist

# The packages' unit tests on the lowest and highest supported Python, each in its own .venv-pyX.Y
# (interpreters: uv's, pyenv's, or downloaded by uv; see scripts/find_python.sh).
test-pythons: uv system-deps
	@set -e; for v in $(PY_LOWEST) $(PY_HIGHEST); do \
	  py=$$(UV="$(UV)" bash scripts/find_python.sh $$v); \
	  echo "unit tests on Python $$v ($$py)"; \
	  UV_PROJECT_ENVIRONMENT=.venv-py$$v $(UV) sync --locked --quiet --python "$$py"; \
	  .venv-py$$v/bin/python -m pytest -q $(UNIT_TESTS); \
	done

dist: sync
	$(UV) run --locked python scripts/dist.py --python "$$(UV="$(UV)" bash scripts/find_python.sh $(DIST_PYTHON))"

demo: sync
	$(UV) run --locked python scripts/demo.py

bench: sync
	$(UV) run --locked python benchmarks/run.py

# Long (hours at 10,000,000 on 2 cores): the scale table of benchmarks/README.md.
SCALE_SIZES ?= 300000 3000000 10000000
bench-scale: sync
	$(UV) run --locked python benchmarks/bench_scale.py --series dry sandbox --memberships $(SCALE_SIZES)
	$(UV) run --locked python benchmarks/bench_scale.py --series concurrent writemode --stores postgresql --memberships 300000

# Lytics scans at 50 and 100 ms per page (about 20 minutes).
bench-latency: sync
	$(UV) run --locked python benchmarks/bench_tap_lytics_audience.py --latency

# Re-pin the PyPI plugins of the interoperability matrix (tests/interop/requirements/*.in ->
# exact versions with hashes, for every supported Python). `make test` installs them once into
# .interop/.meltano (git-ignored) and reuses them offline afterwards.
interop-lock: uv
	@set -e; for f in tests/interop/requirements/*.in; do \
	  $(UV) pip compile --quiet --universal --generate-hashes --python-version $(PY_LOWEST) \
	    --custom-compile-command "make interop-lock" "$$f" -o "$${f%.in}.txt"; \
	done

clean:
	rm -rf .venv .venv-py* .meltano .interop benchmarks/.work .mypy_cache .ruff_cache dist
