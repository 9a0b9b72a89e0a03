# Two entry points for a fresh machine: `make repro` (install + run the pipeline) and `make test`.
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup repro test verify seeds bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev,bench,sweep]'
	touch $@

setup: $(VENV)/.installed

repro: setup
	dvc repro

test: setup
	ruff check src stages tests bench
	ruff format --check src stages tests bench
	mypy
	pytest

# Compare this run's metrics with the committed ones: bit for bit, else within 2 seed sd.
verify: setup
	python -m advdenoise.sweeps.verify --metrics metrics --seeds bench/results/seeds/summary.csv

# The default config for seeds 0, 1, 2 as DVC experiments, then mean ± sd (about 35 min on 2 cores).
seeds: setup
	dvc exp run --queue -S 'seed=0,1,2'
	dvc exp run --run-all
	mkdir -p bench/results/seeds
	python -m advdenoise.sweeps.seeds --baseline-only --out bench/results/seeds/summary.md --csv bench/results/seeds/summary.csv

bench: setup
	python bench/run.py

clean:
	rm -rf $(VENV)
