# The front door: every target creates what it needs (the virtualenv) on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test pytest lint typecheck format docs clean bench bench-quick soak

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m taskengine demo

test: lint typecheck pytest

# The benchmark suite against the peers (installed here: the bench extra); writes
# benchmarks/results/.  bench-quick is a small smoke run that writes nothing.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.run_all $(BENCH_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.run_all --quick

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check taskengine tests benchmarks examples
	$(BIN)/ruff format --check taskengine tests benchmarks examples

format: $(STAMP)
	$(BIN)/ruff format taskengine tests benchmarks examples
	$(BIN)/ruff check --fix taskengine tests benchmarks examples

# The long reliability runs (not in CI): the crash soak with 200 SIGKILLs, then the property
# and fuzz suites with the long hypothesis profile.  SOAK_KILLS and SOAK_SEED tune the soak.
SOAK_KILLS ?= 200
soak: $(STAMP)
	$(BIN)/python -m tests.soak.crash_soak --kills $(SOAK_KILLS) $(if $(SOAK_SEED),--seed $(SOAK_SEED))
	HYPOTHESIS_PROFILE=soak $(BIN)/python -m pytest -q tests/properties tests/fuzz

# tests/typecheck holds static assertions (each engine satisfies its connector protocol, sync
# or async): mypy checks them with the package, in the same run.
typecheck: $(STAMP)
	$(BIN)/mypy --strict taskengine tests/typecheck

# The docs site (MkDocs + mkdocstrings, see docs/README.md); warnings are errors.
DOCS_STAMP := $(VENV)/.docs-installed

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build dist site *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis taskengine.db*
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
