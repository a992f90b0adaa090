# Two commands set everything up on a fresh machine:
#   make demo   the built-in Fashion-MNIST study, locally, with its report
#   make test   the test suite (starts and stops a real two-node Slurm cluster on this machine)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DATA   := /usr/share/datasets/fashion-mnist
# Debian packages the tests need: the dataset, Slurm + munge for the real local cluster, and
# Chromium to render report.html as a person sees it (tests/test_report_browser.py).
APT_TEST := dataset-fashion-mnist slurmctld slurmd slurm-client munge slurmdbd mariadb-server chromium

.PHONY: demo test lint setup data slurm-packages clean

demo: setup data
	$(PY) -m orchestrator.launch --cluster local

test: setup data slurm-packages lint
	$(PY) -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder --durations=30 tests

# lint and format (ruff) and types (mypy) of the packages and their tests: configured in
# pyproject.toml; CI fails on either
LINTED := orchestrator trainables cluster analysis tests
lint: setup
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

setup: $(VENV)/.installed

# torch is pinned to the CPU build on this disk; a range would download a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $@

data:
	@if [ ! -e $(DATA)/train-images-idx3-ubyte.gz ] && [ ! -e $(DATA)/train-images-idx3-ubyte ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist', or point a study at" \
	         "your IDX files with --set trainable_config.data_dir=DIR"; exit 1; \
	  fi; \
	fi

slurm-packages:
	@missing=""; for p in $(APT_TEST); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing Debian packages:$$missing (install them with sudo apt-get install$$missing)"; exit 1; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) *.egg-info

# Benchmarks (bench/, README "Performance"): each prints a table and writes bench/results/NAME.json.
# bench: every figure at full size (35 to 40 min on 2 shared cores); the default study runs once, in
# bench_demo.py, and its kept run directory gives bench_orchestration.py its study figures and
# bench_sink.py its share of the driver. bench-quick: each benchmark at small sizes (under a
# minute each; results in bench/results/NAME_quick.json, a smoke test, not a measurement).
BENCH_RUN := runs/bench-demo
.PHONY: bench bench-quick

bench: setup data
	rm -rf $(BENCH_RUN)
	$(PY) bench/bench_demo.py --keep $(BENCH_RUN)
	$(PY) bench/bench_orchestration.py --fashion-run $(BENCH_RUN)
	$(PY) bench/bench_sink.py --sweep-run $(BENCH_RUN)
	$(PY) bench/bench_report.py
	$(PY) bench/bench_noise_scale.py

bench-quick: setup data
	rm -rf $(BENCH_RUN)-quick
	$(PY) bench/bench_demo.py --quick --keep $(BENCH_RUN)-quick
	$(PY) bench/bench_orchestration.py --quick --fashion-run $(BENCH_RUN)-quick
	$(PY) bench/bench_sink.py --quick --no-sweep --sweep-run $(BENCH_RUN)-quick
	$(PY) bench/bench_report.py --quick
	$(PY) bench/bench_noise_scale.py --quick
