# classify-job: every target installs what it needs first, so a fresh clone needs only `make X`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

DIR    ?=
MODEL  ?= models/sample
OUT    ?= out/$(notdir $(abspath $(DIR)))
ARGS   ?=
DATA   ?=
NAME   ?= $(notdir $(abspath $(DATA)))
TRAIN_ARGS ?= --arch efficientnet_lite0

# Training processes start with glibc's malloc on transparent huge pages: XLA allocates its buffers
# afresh every step, and a CNN step took 0.87x the time (AMD EPYC, 3 alternated rounds; 0.92x on
# an Intel Xeon). glibc reads it only at process start; a GLIBC_TUNABLES of your own wins.
TRAIN_ENV := GLIBC_TUNABLES=$${GLIBC_TUNABLES:-glibc.malloc.hugetlb=1}

AIRFLOW_VENV := .venv-airflow
# Installs come from lock files (uv.lock, jobs/airflow/requirements.lock), so every machine and CI
# get the same versions; pyproject.toml keeps the ranges for people who pip-install the package.
# uv itself is pinned and lives in its own small env; `make lock` refreshes both locks.
UV_VERSION := 0.13.9
TOOLS      := .venv-tools
UV         := $(TOOLS)/bin/uv
export UV_PYTHON_DOWNLOADS := never

.PHONY: install install-airflow lock classify demo train tune check-data evaluate bench-backbone bench-engines bench-scale bench-peers \
	bench-finetune bench-fashion-mnist bench-train-step bench-calibration bench-coverage bench-loop report test test-slow test-all lint format clean

install: $(STAMP)

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

# --inexact keeps pip in the env (bench-peers installs its PyTorch file with it); --locked fails
# when pyproject.toml changed without `make lock`.
$(STAMP): pyproject.toml uv.lock | $(UV)
	$(PYTHON) -m venv $(VENV)
	$(UV) sync --quiet --locked --inexact --extra test --extra ray --python $(BIN)/python
	touch $@

install-airflow: $(AIRFLOW_VENV)/.installed  ## Airflow 3 in its own env, for the DAG tests

$(AIRFLOW_VENV)/.installed: jobs/airflow/requirements.lock | $(UV)
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(UV) pip sync --quiet --python $(AIRFLOW_VENV)/bin/python jobs/airflow/requirements.lock
	touch $@

lock: $(UV)  ## re-resolve uv.lock and jobs/airflow/requirements.lock after changing a requirement
	$(UV) lock
	$(UV) pip compile --quiet --python-version 3.11 jobs/airflow/requirements.txt -o jobs/airflow/requirements.lock

classify: install  ## no DIR: the built-in sample end to end; else: make classify DIR=photos/ MODEL=models/NAME OUT=out/NAME
ifeq ($(strip $(DIR)),)
	$(BIN)/classify-job demo $(ARGS)
else
	$(BIN)/classify-job classify $(DIR) --model $(MODEL) --out $(OUT) $(ARGS)
endif

demo: install  ## the zero-argument path from scratch: regenerate, retrain, reclassify
	$(BIN)/classify-job demo --fresh $(ARGS)

train: install  ## make train DATA=photos/ NAME=jeans [ARGS="--arch cnn --epochs 20"]
	$(TRAIN_ENV) $(BIN)/classify-job train $(DATA) --out models/$(NAME) $(TRAIN_ARGS) $(ARGS)

tune: install  ## make tune DATA=photos/ NAME=jeans [ARGS="--trials 20 --budget-minutes 30"]
	$(TRAIN_ENV) $(BIN)/classify-job tune $(DATA) --out models/$(NAME) $(ARGS)

check-data: install  ## make check-data DATA=photos/ [ARGS="--out checks/"]
	$(BIN)/classify-job check-data $(DATA) $(ARGS)

evaluate: install  ## make evaluate MODEL=models/NAME DATA=photos/
	$(BIN)/classify-job evaluate $(MODEL) $(DATA)

bench-backbone: install  ## fast vs stock EfficientNet-Lite0 forward images/s (JSON)
	$(BIN)/python benchmarks/bench_backbone.py

bench-scale: install  ## decode/model/end-to-end rates, memory and no-op reruns at 10k/100k files, start-up (JSON)
	$(BIN)/python benchmarks/bench_scale.py $(ARGS)

bench-peers: install  ## classify-job vs an ONNX Runtime script and PyTorch eager, end to end (JSON)
	$(BIN)/pip install --quiet -e '.[peers]'
	$(BIN)/python benchmarks/bench_peers.py $(ARGS)

bench-engines: install  ## local vs Ray engine on the same tree (JSON)
	$(BIN)/python benchmarks/bench_engines.py

bench-finetune: install  ## fine-tune wall time and accuracy: sample data and a Fashion-MNIST subset (JSON)
	$(BIN)/python benchmarks/bench_finetune.py

bench-calibration: install  ## accepted-label precision, share accepted, unfamiliar images accepted, ECE, AUROC (JSON)
	$(BIN)/python benchmarks/bench_calibration.py $(ARGS)

bench-coverage: install  ## share accepted at the target precision, its 95% intervals, unfamiliar accepted, train time, targets (JSON)
	$(BIN)/python benchmarks/bench_coverage.py $(ARGS)

bench-loop: install  ## held-out accuracy bought by 100 reviewed images: review queue vs random (JSON)
	$(BIN)/python benchmarks/bench_loop.py $(ARGS)

bench-fashion-mnist: install  ## CNN from scratch on Fashion-MNIST, official test split (JSON)
	$(TRAIN_ENV) $(BIN)/python benchmarks/bench_fashion_mnist.py $(ARGS)

bench-train-step: install  ## XLA CPU kernel settings side by side: ms per CNN and Lite0 fine-tune step, Lite0 forward, GFLOP/s (JSON)
	$(TRAIN_ENV) $(BIN)/python benchmarks/bench_train_step.py $(ARGS)

report: install  ## make report OUT=out/NAME
	$(BIN)/classify-job report $(OUT)

test: install install-airflow  ## lint, then the default test suite (slow tests excluded)
	$(BIN)/ruff check classify_job tests benchmarks
	$(BIN)/ruff format --check classify_job tests benchmarks
	$(BIN)/pytest -m "not slow" -q --durations=15

test-slow: install install-airflow  ## only the slow tests (over ~20 s each: Airflow runs, tune)
	$(BIN)/pytest -m slow -q --durations=15

test-all: install install-airflow  ## every test, slow ones included (no lint)
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check classify_job tests benchmarks

format: install
	$(BIN)/ruff format classify_job tests benchmarks
	$(BIN)/ruff check --fix classify_job tests benchmarks

clean:
	rm -rf $(VENV) $(AIRFLOW_VENV) $(TOOLS) .pytest_cache .ruff_cache *.egg-info
