# make run   - install into .venv (when needed) and serve on PORT (default 5001); demo mode with the
#              built-in Bitrix24 emulator when BITRIX_WEBHOOK_BASE is not set
# make test  - install the dev requirements too and run the test suite
# make test-lowest - the suite on the lowest dependency versions pyproject.toml allows (CI runs both)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 5001

.PHONY: run test test-lowest lint setup clean

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed
	PORT=$(PORT) $(PY) scripts/run_dev.py

test: $(VENV)/.installed-dev
	$(PY) -m pytest $(PYTEST_ARGS)

# The suite once more on the lowest versions pyproject.toml allows (constraints-lowest.txt), in its own
# virtualenv: every unit and fault test on SQLite, and the end-to-end tests that reach each library's own
# surface (HTTP round trips, Redis and RQ, gunicorn, metrics, the OpenAPI document) on SQLite and PostgreSQL,
# which is where the lowest psycopg and SQLAlchemy's PostgreSQL dialect are tried. The emulator's own tests,
# the other end-to-end files (our own code through the same libraries), the unit tests' PostgreSQL runs and
# the tests marked slow (the adoption tests build with the newest versions) run once, in `make test`, so CI
# stays within its 30 minutes on a slow day of this 2-core machine (make test alone took 23.5 minutes on one).
LOWEST ?= .venv-lowest
LOWEST_UNIT_TESTS ?= tests/test_*.py tests/faults
LOWEST_E2E_TESTS ?= tests/integration/test_e2e.py tests/integration/test_limits_e2e.py tests/integration/test_ops.py \
	tests/integration/test_gunicorn.py tests/integration/test_third_party_client.py tests/integration/test_openapi.py
test-lowest: pyproject.toml constraints-lowest.txt
	rm -rf $(LOWEST) && $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet --upgrade pip setuptools
	$(LOWEST)/bin/python -m pip install --quiet --only-binary :all: -c constraints-lowest.txt -e ".[all]" \
		pytest responses fast_bitrix24 schemathesis selenium hypothesis
	$(LOWEST)/bin/python -m pip list --format=freeze | grep -iE '^(flask|werkzeug|sqlalchemy|marshmallow|rq|redis)=='
	$(LOWEST)/bin/python -m pytest -m "not slow" -k "not postgresql" $(PYTEST_ARGS) $(LOWEST_UNIT_TESTS)
	$(LOWEST)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS) $(LOWEST_E2E_TESTS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .

setup: $(VENV)/.installed
	$(PY) setup_bitrix24_crm.py

clean:
	rm -rf $(VENV) $(LOWEST) instance .pytest_cache dist build
