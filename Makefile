# The two commands of the README:
#   make run    start the whole service locally (embedded Redis, no Twilio account needed)
#   make test   run the whole test suite (real Redis server, real headless Chromium)
# and: make run PORT=5001, make vignettes (the clinical vignette suite on the current flows),
# make check-wheel (build the wheel, install it outside the source tree, serve from it).
VENV ?= .venv
PYTHON ?= python3
PORT ?= 5000
BIN = $(VENV)/bin

.PHONY: run test lint bench vignettes check-wheel clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/flask --app wsgi serve --port $(PORT)

test: $(BIN)/.installed
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .

bench: $(BIN)/.installed
	$(BIN)/python scripts/bench.py

vignettes: $(BIN)/.installed
	$(BIN)/flask --app wsgi vignettes

check-wheel:
	PYTHON=$(PYTHON) scripts/check_wheel.sh

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
