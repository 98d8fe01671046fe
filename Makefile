# The two commands a newcomer needs: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
EXAMPLE := She go to school yesterday and buyed a books.

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (set PYTHON=python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

demo: $(STAMP)
	@echo "== grammar, streamed from the custom slot (mock unless MODAL_LLAMA_URL is set) =="
	$(BIN)/python -m suggestions suggest --type grammar "$(EXAMPLE)"
	@echo
	@echo "== clarity =="
	$(BIN)/python -m suggestions suggest --type clarity \
		"Due to the fact that it was raining, we stayed in order to finish the chapter."
	@echo
	@echo "== usage so far =="
	$(BIN)/python -m suggestions usage

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/client_core.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
