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

# The suite runs in TEST_WORKERS processes (pytest-xdist): most of its time is spent waiting on servers,
# subprocesses and sockets, so 3 keep a 2-core machine busy (24 minutes in one process on a slow day, 9 in
# three on another). TEST_WORKERS=0 runs it in this process; tests/conftest.py gives each worker its own
# PostgreSQL and Redis databases.
TEST_WORKERS ?= 3
XDIST = -n $(TEST_WORKERS) --dist loadgroup

test: $(VENV)/.installed-dev
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

# The suite once more on the lowest versions pyproject.toml allows (constraints-lowest.txt), in its own
# virtualenv: every unit, emulator and fault test, and the end-to-end tests that reach each library's own
# surface (HTTP round trips, Redis and RQ, gunicorn, metrics, the OpenAPI document). The other end-to-end
# files drive our own code through the same libraries; they, and the tests marked slow (the adoption tests
# build with the newest versions), run once, in `make test`.
LOWEST ?= .venv-lowest
LOWEST_TESTS ?= tests/test_*.py tests/emulator tests/faults tests/integration/test_e2e.py \
	tests/integration/test_limits_e2e.py tests/integration/test_ops.py tests/integration/test_gunicorn.py \
	tests/integration/test_third_party_client.py tests/integration/test_openapi.py
test-lowest: pyproject.toml constraints-lowest.txt
	rm -rf $(LOWEST) && $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet --upgrade pip setuptools
	$(LOWEST)/bin/python -m pip install --quiet --only-binary :all: -c constraints-lowest.txt -e ".[all]" \
		pytest pytest-xdist responses fast_bitrix24 schemathesis selenium hypothesis
	$(LOWEST)/bin/python -m pip list --format=freeze | grep -iE '^(flask|werkzeug|sqlalchemy|marshmallow|rq|redis)=='
	$(LOWEST)/bin/python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS) $(LOWEST_TESTS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .

setup: $(VENV)/.installed
	$(PY) setup_bitrix24_crm.py

clean:
	rm -rf $(VENV) $(LOWEST) instance .pytest_cache dist build
