# make run   - install into .venv (when needed) and serve on PORT (default 5001); demo mode with the
#              built-in Bitrix24 emulator when BITRIX_WEBHOOK_BASE is not set
# make test  - install the dev requirements too and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 5001

.PHONY: run test lint setup clean

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

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .

setup: $(VENV)/.installed
	$(PY) setup_bitrix24_crm.py

clean:
	rm -rf $(VENV) instance .pytest_cache
