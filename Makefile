# The two commands the README promises: `make run` and `make test`.
# Everything else here is a step those two take, or a tool for developers.

PYTHON ?= python3.12
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# PostgreSQL and Redis for the test suite; CI and this machine kind run both on loopback.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/advice
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: run test test-embedded test-postgres install install-test lint bench worker migrate clean messages

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The lock files pin every package with its hash, so an install is reproducible.
$(VENV)/.installed-base: requirements/base.txt | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements/base.txt
	touch $@

$(VENV)/.installed-test: requirements/test.txt | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements/test.txt
	touch $@ $(VENV)/.installed-base

install: $(VENV)/.installed-base
install-test: $(VENV)/.installed-test

# `make run` is for trying the service on one machine: DEBUG on (development keys) unless the
# environment says otherwise. Production runs `manage.py serve` and `manage.py worker` (deploy/).
RUN_ENV := DEBUG=$${DEBUG:-true}

migrate: install
	$(RUN_ENV) $(BIN)/python manage.py migrate --noinput

run: migrate
	$(RUN_ENV) $(BIN)/python manage.py ensure_demo_advisor
	$(RUN_ENV) $(BIN)/python manage.py serve --port $(PORT) --with-worker

worker: migrate
	$(RUN_ENV) $(BIN)/python manage.py worker

# The whole suite on PostgreSQL and Redis, then the fast part again on the embedded default
# (SQLite and the in-memory layer) so both configurations stay working.
test: install-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	DJANGO_SETTINGS_MODULE=tests.settings $(BIN)/python manage.py makemigrations --check --dry-run
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest
	env -u DATABASE_URL -u REDIS_URL $(BIN)/pytest -m "not browser and not server" -q

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install-test
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/python -m bench

messages: install
	DJANGO_SETTINGS_MODULE=tests.settings $(BIN)/python manage.py compilemessages --ignore=.venv

clean:
	rm -rf $(VENV) db.sqlite3
