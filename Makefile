# The front door: every target creates what it needs (the virtualenv) on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test pytest lint typecheck format docs clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m taskengine demo

test: lint typecheck pytest

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check taskengine tests benchmarks examples
	$(BIN)/ruff format --check taskengine tests benchmarks examples

format: $(STAMP)
	$(BIN)/ruff format taskengine tests benchmarks examples
	$(BIN)/ruff check --fix taskengine tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict taskengine

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
