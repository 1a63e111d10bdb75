# Two commands: `make run` (the demo) and `make test`. Everything installs into .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip --disable-pip-version-check -q
# Everything here (demo, tests, benchmarks, migrate) runs on this machine, never in production.
# With DEBUG off the settings refuse the public demo SECRET_KEY, so these targets get a local
# one (an explicit SECRET_KEY in the environment wins). deploy/dev/run.sh also sets DEBUG=true.
export SECRET_KEY ?= make-targets-local-only-not-a-secret-4f1d9c2b7a6e5d3c8b0a9f7e6d5c4b3a


.PHONY: install install-mysql run lint test test-mysql bench bench-mysql bench-news bench-news-mysql bench-scale bench-scale-mysql migrate clean

install: $(STAMP)

$(STAMP): requirements/base.txt requirements/dev.txt requirements/mysql.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing Python packages into $(VENV) ..."
	@$(PIP) install -r requirements/dev.txt 2>&1 | grep -v "is ignored: it is neither" || true
	@$(BIN)/python -c "import django, django_q, rest_framework" 
	@if command -v mariadb_config >/dev/null 2>&1 || command -v mysql_config >/dev/null 2>&1; then \
	  $(PIP) install -r requirements/mysql.txt 2>&1 | grep -v "is ignored: it is neither" || true; \
	else \
	  echo "MySQL/MariaDB driver not installed: for MySQL run 'apt-get install -y libmariadb-dev' then 'make install' (SQLite needs nothing)."; \
	fi
	@touch $@

migrate: install
	@$(BIN)/python manage.py migrate --noinput -v 0

run: migrate
	@$(BIN)/python manage.py collectstatic --noinput -v 0
	@deploy/dev/run.sh

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/python -m pytest -q

install-mysql: install
	@$(BIN)/python -c "import MySQLdb" 2>/dev/null || $(PIP) install -r requirements/mysql.txt

test-mysql: install-mysql
	DATABASE_URL=$${DATABASE_URL:-mysql://root@127.0.0.1:3306/collectors} $(BIN)/python -m pytest -q

# $(call on-bench-mysql,ARGS): `python ARGS` against MariaDB's collectors_bench database,
# created and migrated first.
on-bench-mysql = mariadb -uroot -h127.0.0.1 -e "CREATE DATABASE IF NOT EXISTS collectors_bench CHARACTER SET utf8mb4" && \
	DATABASE_URL=mysql://root@127.0.0.1:3306/collectors_bench LOG_LEVEL=warning sh -c \
	  '$(BIN)/python manage.py migrate --noinput -v 0 && $(BIN)/python $(1)'

bench: migrate
	LOG_LEVEL=warning $(BIN)/python manage.py bench_collect

bench-mysql: install-mysql
	$(call on-bench-mysql,manage.py bench_collect)

clean:
	rm -rf $(VENV) staticfiles .demo db.sqlite3* .test-db.sqlite3*

# Gap analysis over 10 million candles with known holes; --keep leaves the data so a re-run
# only times the analysis (make bench-gaps BENCH_GAPS_ARGS="--refill --keep" to write it again).
BENCH_GAPS_ARGS ?= --keep
.PHONY: bench-gaps bench-gaps-mysql

bench-gaps: migrate
	LOG_LEVEL=warning $(BIN)/python manage.py bench_gaps $(BENCH_GAPS_ARGS)

bench-gaps-mysql: install-mysql
	$(call on-bench-mysql,manage.py bench_gaps $(BENCH_GAPS_ARGS))

# The admin coverage map of 100 symbols x 330 days (792k hourly candles, holes, late listings,
# quarantined rows): grid query, SVG and the whole admin page (make bench-coverage BENCH_COVERAGE_ARGS=).
BENCH_COVERAGE_ARGS ?= --keep
.PHONY: bench-coverage bench-coverage-mysql

bench-coverage: migrate
	LOG_LEVEL=warning $(BIN)/python -W ignore::UserWarning manage.py bench_coverage $(BENCH_COVERAGE_ARGS)

bench-coverage-mysql: install-mysql
	$(call on-bench-mysql,-W ignore::UserWarning manage.py bench_coverage $(BENCH_COVERAGE_ARGS))

# News: 20 emulator feeds x 500 entries read, read again unchanged (304s), read whole
# (make bench-news BENCH_NEWS_ARGS="--feeds 50 --items 100").
bench-news: migrate
	LOG_LEVEL=warning $(BIN)/python manage.py bench_news $(BENCH_NEWS_ARGS)

bench-news-mysql: install-mysql
	$(call on-bench-mysql,manage.py bench_news $(BENCH_NEWS_ARGS))

# Scale-out: one backfill of 20 symbols x 2 years of 1h candles (40 ms exchange latency, no rate
# limit) by one qcluster, then by two sharing Redis at 127.0.0.1:6379/14 (the command sets
# REDIS_URL itself; make bench-scale BENCH_SCALE_ARGS="--workers 4 --latency-ms 100").
bench-scale: migrate
	LOG_LEVEL=warning $(BIN)/python manage.py bench_scale $(BENCH_SCALE_ARGS)

bench-scale-mysql: install-mysql
	$(call on-bench-mysql,manage.py bench_scale $(BENCH_SCALE_ARGS))

# Work per request at its bounds: a backfill plan far over BACKFILL_MAX_CHUNKS refused, a large
# accepted plan estimated and recorded, a CSV export of 300,000 candles (BENCH_BOUNDS_ARGS=--csv-rows N).
.PHONY: bench-bounds bench-bounds-mysql
bench-bounds: migrate
	LOG_LEVEL=warning $(BIN)/python manage.py bench_bounds $(BENCH_BOUNDS_ARGS)

bench-bounds-mysql: install-mysql
	$(call on-bench-mysql,manage.py bench_bounds $(BENCH_BOUNDS_ARGS))
