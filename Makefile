# The two entry points of the README. Each does its whole set-up first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
# DeepSpeed's CPU backend only where no NVIDIA GPU is present (it auto-detects CUDA otherwise).
ifeq ($(shell command -v nvidia-smi 2>/dev/null),)
export DS_ACCELERATOR ?= cpu
endif
export DS_BUILD_OPS ?= 0

.PHONY: setup run test lint bench score

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py requirements-cpu.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=69" wheel
	# torch first: DeepSpeed ships only an sdist whose build imports torch.
	$(PY) -m pip install -q $$(grep -E '^(torch|triton)==' requirements-cpu.txt)
	$(PY) -m pip install -q --no-build-isolation -r requirements-cpu.txt
	$(PY) -m pip install -q --no-build-isolation -e ".[dev]"
	touch $@

# Main job on the embedded default: Diffusion-DPO on the tiny built-in model and a synthetic
# preference set (recipes/configs/tiny.yaml); prints and plots held-out preference accuracy.
run: setup
	$(VENV)/bin/deepspeed recipes/dpo.py --output-dir runs/tiny --overwrite

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Kernel and model microbenchmarks (full sizes on a GPU, small ones on a CPU).
bench: setup
	$(PY) benchmarks/bench_dpo_loss.py
	$(PY) benchmarks/bench_reproject.py
	$(PY) benchmarks/bench_vggt.py
	$(PY) benchmarks/bench_step.py $$(command -v nvidia-smi >/dev/null || echo --small)

# Score a generated synthetic set with the oracle geometry.
score: setup
	$(PY) recipes/score.py
