# The two commands of the README: `make run` and `make test`.
# Everything installs into .venv from pyproject.toml, pinned by constraints.txt.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
# Two test processes (pytest-xdist): most tests wait on servers and subprocesses, so the
# suite takes about half the time on 2 cores. PYTEST_WORKERS= runs it in one process.
PYTEST_WORKERS ?= -n 2

.PHONY: run test lint bench clean translations

CATALOGS := $(patsubst %.po,%.mo,$(wildcard webapp/translations/*/LC_MESSAGES/messages.po))

run: $(VENV)/.installed $(CATALOGS)
	$(BIN)/newsletter db upgrade
	$(BIN)/newsletter seed
	$(BIN)/newsletter serve

test: $(VENV)/.installed-test $(CATALOGS)
	@command -v chromium >/dev/null || echo "NOTE: Chromium not found: the browser tests will be skipped (apt-get install chromium)"
	@command -v redis-server >/dev/null || echo "NOTE: redis-server not found: the shared rate-limit test will be skipped (apt-get install redis-server)"
	@test -x /usr/sbin/dovecot || echo "NOTE: dovecot not found: the IMAP tests will be skipped (apt-get install dovecot-imapd)"
	@test -x /usr/sbin/postfix || echo "NOTE: Postfix not found: the real-MTA bounce test will be skipped (apt-get install postfix; it runs as root)"
	$(BIN)/python -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)
	@if command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
		echo "The suite again, on a throw-away PostgreSQL cluster (TEST_DATABASE=postgresql), less the tests marked no_database:"; \
		TEST_DATABASE=postgresql $(BIN)/python -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS); \
	else \
		echo "NOTE: PostgreSQL not found: the suite ran on SQLite only, its PostgreSQL tests skipped (apt-get install postgresql)"; \
	fi

bench: $(VENV)/.installed-test
	$(BIN)/python bench/import_bench.py
	$(BIN)/python bench/send_bench.py
	$(BIN)/python bench/inbound_bench.py
	$(BIN)/python bench/bounce_bench.py
	@command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk (for the load benchmark)"; exit 1; }
	$(BIN)/python bench/subscribe_bench.py
	$(BIN)/python bench/tracking_bench.py

# After changing a text (texts.toml, a template, a .po file): extract the messages into
# the template and every language's .po (translators fill in what is new), and compile.
translations: $(VENV)/.installed
	$(BIN)/pybabel -q extract -F babel.cfg -k _l -o webapp/translations/messages.pot --no-location --omit-header --sort-output .
	$(BIN)/pybabel -q update -i webapp/translations/messages.pot -d webapp/translations --width 100
	$(BIN)/pybabel compile -d webapp/translations

# A compiled catalog, from its .po file: built by `make run` and `make test` themselves.
%.mo: %.po $(VENV)/.installed
	$(BIN)/pybabel compile -i $< -o $@

lint: $(VENV)/.installed-test
	$(BIN)/ruff check webapp emails tests bench
	$(BIN)/ruff format --check webapp emails tests bench
	$(BIN)/mypy

$(VENV)/bin/python:
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is needed" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) -e '.[charts]'
	touch $@

$(VENV)/.installed-test: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) -e '.[test]'
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) build *.egg-info
