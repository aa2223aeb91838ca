# The two commands of the README:
#   make run    start the whole service locally (embedded Redis, no Twilio account needed)
#   make test   run the whole test suite (real Redis server, real headless Chromium)
VENV ?= .venv
PYTHON ?= python3
BIN = $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/flask --app wsgi serve

test: $(BIN)/.installed
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .

bench: $(BIN)/.installed
	$(BIN)/python scripts/bench.py

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .hypothesis
