# The README's commands. `make demo` sets up and runs the main job on the embedded default;
# `make test` runs the tests (what CI runs).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint

$(BIN)/annotator:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'

setup: $(BIN)/annotator

# Annotate the bundled GoEmotions sample into demo.db with the bundled fine-tuned adapter (it
# carries its rubric and runs on the embedded Gemma 3 270M), then open the terminal app on it.
demo: setup
	$(BIN)/annotator annotate annotator/samples/goemotions/items.csv \
		--model annotator/samples/goemotions/goemotions-lora.gguf --project demo.db
	$(BIN)/annotator tui demo.db

test: setup
	$(BIN)/python -m pytest

lint:
	$(BIN)/python -m ruff check annotator tui train export tests bench
