# Two entry points for a fresh machine: `make repro` (install + run the pipeline) and `make test`.
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup repro test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $@

setup: $(VENV)/.installed

repro: setup
	dvc repro

test: setup
	ruff check src stages tests bench
	ruff format --check src stages tests bench
	pytest

bench: setup
	python bench/run.py

clean:
	rm -rf $(VENV)
