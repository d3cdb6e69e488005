# The two entry points of the README. Each does its whole set-up first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
# DeepSpeed's JIT-built CPU ops live in the venv's own folder (tests/conftest.py uses the same): torch's
# default folder is shared by every environment, and builds made by one are rebuilt by the next.
EXTENSIONS = $(abspath $(VENV))/torch_extensions
# DeepSpeed's CPU backend only where no NVIDIA GPU is present (it auto-detects CUDA otherwise). There, setup
# builds its ops (the shared-memory collective every run loads, CPU Adam for offload) while pip installs the
# rest: about 2 min of compiler that the first run or test using each would otherwise wait for.
ifeq ($(shell command -v nvidia-smi 2>/dev/null),)
export DS_ACCELERATOR ?= cpu
# The two build at once (each compiles its two sources in parallel; together they keep both cores busier).
BUILD_OP = TORCH_EXTENSIONS_DIR=$(EXTENSIONS) $(PY) -c "import deepspeed.ops.op_builder.cpu as b; \
	b.$(1)().load(verbose=False)"
BUILD_CPU_OPS = { $(call BUILD_OP,ShareMemCommBuilder) & s=$$!; $(call BUILD_OP,CPUAdamBuilder); a=$$?; \
	wait $$s && exit $$a; }
else
BUILD_CPU_OPS = true
endif
export DS_BUILD_OPS ?= 0

# The exact versions make setup and CI install (every package, pip and setuptools included), written by
# `make lock`. The package's own ranges (pyproject.toml) stay open for users' machines.
LOCK ?= requirements-cpu.lock
CONSTRAINTS = $(if $(LOCK),-c $(LOCK))
PIP_INSTALL = $(PY) -m pip install -q
# torch, triton and DeepSpeed go in without their bytecode, so that the CPU ops start building sooner; it is
# compiled beside that build (as pip would have, failures of stray files ignored as pip ignores them).
COMPILE_SITE = $(PY) -m compileall -q -j 0 $$($(PY) -c "import sysconfig; print(sysconfig.get_path('purelib'))") \
	> /dev/null || true

.PHONY: setup run test lint bench score aot aot-rows gpu-check gpu-wheels gpu-fixtures gpu-rehearsal lock test-latest

setup: $(VENV)/.installed

# The install steps, from the lock unless LOCK is empty (make lock and make test-latest: the newest releases).
$(VENV)/.installed: pyproject.toml setup.py requirements-cpu.txt $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip "setuptools>=69" wheel $(CONSTRAINTS)
	# torch first: DeepSpeed ships only an sdist whose build imports torch.
	$(PIP_INSTALL) --no-compile $$(grep -E '^(torch|triton)==' requirements-cpu.txt) $(CONSTRAINTS)
	$(PIP_INSTALL) --no-compile --no-build-isolation -r requirements-cpu.txt $(CONSTRAINTS)
	$(BUILD_CPU_OPS) & ops=$$!; $(COMPILE_SITE); \
	$(PIP_INSTALL) --no-build-isolation -e ".[dev]" $(CONSTRAINTS); installed=$$?; \
	wait $$ops || { echo "error: building DeepSpeed's CPU ops into $(EXTENSIONS) failed (a C++ compiler?)"; \
	exit 1; }; exit $$installed
	touch $@

# Re-resolve every dependency to its newest release in a fresh venv and freeze it into the lock.
lock:
	rm -rf .venv-lock
	$(MAKE) setup VENV=.venv-lock LOCK=
	.venv-lock/bin/python -m pip freeze --all --exclude-editable | grep -v '^-e ' | LC_ALL=C sort -f > $(LOCK)
	rm -rf .venv-lock

# The newest releases, without the lock (a fresh venv each time): imports, every model family's load, train
# step and export, the kernels, ZeRO-3 loading, and the tiny loop end to end.
LATEST_TESTS = tests/test_import_names.py tests/models tests/kernels/test_dpo_loss.py \
	tests/trainer/test_zero_init_dtype.py tests/trainer/test_exports.py tests/trainer/test_dpo_recipe.py \
	tests/stages/test_loop_end_to_end.py
test-latest:
	rm -rf .venv-latest
	$(MAKE) setup VENV=.venv-latest LOCK=
	.venv-latest/bin/python -m pip list --format=freeze | grep -iE '^(torch|triton|transformers|diffusers|peft|deepspeed|kernels|numpy|safetensors|huggingface.hub|kornia)=='
	.venv-latest/bin/python -m pytest -q $(LATEST_TESTS)

# Main job on the embedded default: Diffusion-DPO on the tiny built-in model and a synthetic
# preference set (recipes/configs/tiny.yaml); prints and plots held-out preference accuracy.
# The launcher's own INFO lines are left out (--log_level warning), so the run's last line names its report.
run: setup
	TORCH_EXTENSIONS_DIR=$(EXTENSIONS) $(VENV)/bin/deepspeed --log_level warning recipes/dpo.py \
		--output-dir runs/tiny --overwrite

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
	$(PY) benchmarks/bench_generate.py $$(command -v nvidia-smi >/dev/null || echo --small)

# Score a generated synthetic set with the oracle geometry.
score: setup
	$(PY) recipes/score.py

# Ahead-of-time compile of every kernel variant for sm_80 and sm_90 (no GPU needed): registers, spills, SASS.
aot: setup
	env -u TRITON_INTERPRET $(PY) -m videogpa.kernels.aot --arch 80,90

# The AOT rows under both Tritons, committed: 3.6.0 (the GPU image's, in a venv of its own) and 3.7.1 (.venv's).
# Every variant's register ceiling must hold under both (kernels/dpo_loss/launch.py, kernels/reproject/launch.py).
TRITON36_VENV ?= .venv-triton36
$(TRITON36_VENV)/.installed: pyproject.toml setup.py
	test -x $(TRITON36_VENV)/bin/python || python3 -m venv $(TRITON36_VENV)
	$(TRITON36_VENV)/bin/python -m pip install -q triton==3.6.0 torch==$$(grep -E '^torch==' requirements-cpu.txt | cut -d= -f3) numpy
	$(TRITON36_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@
aot-rows: setup $(TRITON36_VENV)/.installed
	env -u TRITON_INTERPRET $(TRITON36_VENV)/bin/python -m videogpa.kernels.aot --arch 80,90 > benchmarks/results/aot_triton36.jsonl
	env -u TRITON_INTERPRET $(PY) -m videogpa.kernels.aot --arch 80,90 > benchmarks/results/aot_triton37.jsonl

# ---- The GPU call (docs/gpu.md): one command on a lent GPU machine, rehearsed here first ----------------------

# On the GPU machine, with this checkout, .whl/ and .gpu-fixtures/ carried: install the wheels, run the GPU tests
# and every benchmark at full size, rows and log under $OUT (else benchmarks/results/), 6 minutes at most.
# Uses the machine's python3 (with its CUDA torch), not .venv. `--dry-run` runs the same steps on a CPU.
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) scripts/gpu_check.py

# Wheels for gpu-check, into .whl/ (ignored by git; carried): what the image lacks (gpu_check.WHEELS), at the
# versions in .venv, for CPython 3.12 manylinux, plus deepspeed built here without its ops. Their listing goes to
# scripts/gpu_wheels.json (commit it: CI checks it against the image). The image's own transformers and
# huggingface_hub go to .gpu-image/ (ignored, not carried): the rehearsal's mirror of the image uses them.
WHEEL_PLATFORMS := --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
PIP_DOWNLOAD_312 = $(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	$(WHEEL_PLATFORMS)
gpu-wheels: setup
	rm -rf .whl .gpu-image && mkdir -p .whl .gpu-image
	$(PIP_DOWNLOAD_312) -d .whl $$($(PY) scripts/gpu_check.py --wheel-pins)
	DS_BUILD_OPS=0 $(PY) -m pip wheel -q --no-deps --no-build-isolation \
		deepspeed==$$($(PY) -c "import importlib.metadata as m; print(m.version('deepspeed'))") -w .whl
	$(PIP_DOWNLOAD_312) -d .gpu-image $$($(PY) scripts/gpu_check.py --image-wheel-pins)
	$(PY) scripts/gpu_check.py --record-wheels --wheels .whl
	ls -l .whl .gpu-image

# The reference fixtures the GPU tests read, into .gpu-fixtures/ (ignored by git; carried): ../shared does not
# travel with the checkout, nor does .git (the commit is stamped beside them for the rows).
gpu-fixtures:
	test -d ../shared/fixtures || { echo "gpu-fixtures: no ../shared/fixtures beside this checkout"; exit 1; }
	rm -rf .gpu-fixtures && cp -r ../shared/fixtures .gpu-fixtures
	git describe --always --dirty --abbrev=40 > .gpu-fixtures/COMMIT  # the device's copy has no .git

# Before a GPU call: the rehearsal against a mirror of the image, with the wheels and fixtures that will travel
# (strict: it fails if .whl/, .gpu-image/ or .gpu-fixtures/ is missing or stale).
gpu-rehearsal: setup gpu-fixtures
	VIDEOGPA_GPU_REHEARSAL=strict $(PY) -m pytest -q -p no:cacheprovider tests/benchmarks/test_gpu_rehearsal.py \
		tests/benchmarks/test_gpu_check.py
