# classify-job: every target installs what it needs first, so a fresh clone needs only `make X`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

DIR    ?=
MODEL  ?= models/sample
OUT    ?= out/$(notdir $(abspath $(or $(DIR),data/sample)))
ARGS   ?=

AIRFLOW_VENV := .venv-airflow

.PHONY: install install-airflow classify report test test-slow test-all lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,ray]'
	touch $@

install-airflow: $(AIRFLOW_VENV)/.installed  ## Airflow 3 in its own env, for the DAG tests

$(AIRFLOW_VENV)/.installed: jobs/airflow/requirements.txt
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet -r jobs/airflow/requirements.txt
	touch $@

classify: install  ## make classify DIR=photos/ MODEL=models/NAME OUT=out/NAME
	$(BIN)/classify-job classify $(DIR) --model $(MODEL) --out $(OUT) $(ARGS)

report: install  ## make report OUT=out/NAME
	$(BIN)/classify-job report $(OUT)

test: install install-airflow  ## lint, then the default test suite (slow tests excluded)
	$(BIN)/ruff check classify_job tests benchmarks
	$(BIN)/ruff format --check classify_job tests benchmarks
	$(BIN)/pytest -m "not slow" -q

test-slow: install
	$(BIN)/pytest -m slow -q

test-all: install install-airflow
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check classify_job tests benchmarks

format: install
	$(BIN)/ruff format classify_job tests benchmarks
	$(BIN)/ruff check --fix classify_job tests benchmarks

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) .pytest_cache .ruff_cache *.egg-info
