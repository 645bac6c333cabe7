# Quick start: `make demo` (set up, run the tiny end-to-end job on CPU) and
# `make test` (set up, run the test suite; the model tests also against megatron-core 0.19.2).
.PHONY: setup demo test test-main test-mcore019 test-nemo test-serve test-evidence lint gpu-check mutation

PYTEST_ARGS ?=
# Model-layer tests that must pass under both Megatron-Core lines.
MCORE_TESTS ?= tests/test_parallel_parity.py tests/test_param_counts.py tests/test_presets.py \
	tests/test_parallel_config.py tests/test_runtime.py tests/test_checkpoint_parity.py \
	tests/test_checkpoint_errors.py tests/test_checkpoint_io.py tests/test_training_loop.py \
	tests/test_training_distill_losses.py tests/test_training_safety.py tests/test_golden_loss.py \
	tests/test_objective_mask.py tests/test_training_resume.py tests/test_rope_parity.py \
	tests/test_training_clip.py tests/test_versions.py tests/test_exaone4_model.py tests/test_exaone4_parity.py \
	tests/test_generate.py tests/test_model_device.py tests/test_checkpoint_averaging.py \
	tests/test_trtllm_export.py

setup:
	@scripts/setup_env.sh >/dev/null

demo:
	@PY=$$(scripts/setup_env.sh) && $$PY -m nemo_exaone.demo

test: test-main test-mcore019 test-nemo test-serve test-evidence

test-main:
	@PY=$$(scripts/setup_env.sh) && $$PY -m ruff check . && $$PY -m pytest -p no:cacheprovider $(PYTEST_ARGS)

test-mcore019:
	@PY=$$(scripts/setup_mcore019.sh) && $$PY -m pytest -p no:cacheprovider $(PYTEST_ARGS) $(MCORE_TESTS)

# Issue 9's post-training evidence at full size (tests/evidence, ~10 min): DPO and SimPO
# chains M0 -> M1 -> M2 on the rule-checkable task; collected only with NEMO_EXAONE_EVIDENCE=1.
test-evidence:
	@PY=$$(scripts/setup_env.sh) && NEMO_EXAONE_EVIDENCE=1 $$PY -m pytest -p no:cacheprovider $(PYTEST_ARGS) tests/evidence

# Serving through the real Triton server of the nvidia-pytriton wheel, in .venv-serve (that
# wheel pins numpy<2; scripts/setup_serve.sh). tests/serving is collected only there.
test-serve:
	@PY=$$(scripts/setup_serve.sh) && NEMO_EXAONE_REQUIRE_SERVE=1 $$PY -m pytest -p no:cacheprovider $(PYTEST_ARGS) tests/serving

# The NeMo 2 model class (nemo_exaone.nemo) in its own .venv-nemo (nemo-toolkit 2.7.3 with
# megatron-core 0.15.3; scripts/setup_nemo.sh). tests/nemo is collected only there.
test-nemo:
	@PY=$$(scripts/setup_nemo.sh) && $$PY -m pytest -p no:cacheprovider $(PYTEST_ARGS) tests/nemo

# Mutation testing (not CI; see TESTING.md): run before landing changes to the modules it
# covers. Installs mutmut into the venv; works on copies under build/mutation/.
# MUTATION_GROUPS=chat_format make mutation runs some groups only.
MUTATION_GROUPS ?=
mutation:
	@PY=$$(scripts/setup_env.sh) && $$PY -m pip install -q 'mutmut==3.8.1' \
		&& $$PY scripts/mutation.py $(MUTATION_GROUPS)

lint:
	@PY=$$(scripts/setup_env.sh) && $$PY -m ruff check .

gpu-check:
	@bash scripts/gpu_check.sh
