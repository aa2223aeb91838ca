# The two commands of the README:
#   make run    start the whole service locally (embedded Redis, no Twilio account needed)
#   make test   run the whole test suite (real Redis server, real headless Chromium)
# and: make run PORT=5001, make vignettes (the clinical vignette suite on the current flows),
# make check-wheel (build the wheel, install it outside the source tree, serve from it).
# Dependencies come from requirements-dev.lock: every package pinned with its hashes, so a
# fresh machine installs exactly what CI tested. `make lock` regenerates it from pyproject.toml.
VENV ?= .venv
PYTHON ?= python3
PORT ?= 5000
BIN = $(VENV)/bin
LOCK = requirements-dev.lock

.PHONY: run test lint bandit lock bench vignettes check-wheel clean

$(BIN)/.installed: $(LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m compileall -q bot wsgi.py  # bytecode, as an installed wheel has it (start-up)
	touch $@

run: $(BIN)/.installed
	$(BIN)/flask --app wsgi serve --port $(PORT)

test: $(BIN)/.installed
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .

# Static security checks on the code that ships (bot/, wsgi.py, gunicorn.conf.py); settings
# in pyproject.toml [tool.bandit]; each accepted finding carries `# nosec BXXX: why`.
bandit: $(BIN)/.installed
	$(BIN)/bandit -q -c pyproject.toml -r bot wsgi.py gunicorn.conf.py

# Re-pin everything (runtime + dev) with hashes after a change to pyproject.toml's
# dependencies. Keeps existing pins; `make lock LOCK_ARGS=--upgrade` moves them all forward.
lock: $(BIN)/.installed
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --extra dev --strip-extras \
	  --no-emit-index-url --no-emit-find-links $(LOCK_ARGS) -o $(LOCK) pyproject.toml

bench: $(BIN)/.installed
	$(BIN)/python scripts/bench.py

vignettes: $(BIN)/.installed
	$(BIN)/flask --app wsgi vignettes

check-wheel:
	PYTHON=$(PYTHON) scripts/check_wheel.sh

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
