"""Parallel/precision validation: errors name the field and the fix, before heavy work."""

from __future__ import annotations

import pytest

from nemo_exaone.config.errors import ConfigError
from nemo_exaone.config.parallel import (
    ParallelConfig,
    PrecisionConfig,
    validate_parallel,
    validate_precision,
)
from nemo_exaone.config.presets import get_preset
from nemo_exaone.runtime.machine import check_machine

ARCH = get_preset("exaone3.5-7.8b")


@pytest.mark.parametrize("parallel, world, message", [
    (ParallelConfig(tensor_model_parallel_size=3), 3,
     "num_attention_heads=32 is not divisible by tensor_model_parallel_size=3"),
    (ParallelConfig(tensor_model_parallel_size=16), 16,
     "num_key_value_heads=8 is not divisible by tensor_model_parallel_size=16"),
    (ParallelConfig(pipeline_model_parallel_size=3), 3,
     "num_layers=32 is not divisible by pipeline_model_parallel_size=3"),
    (ParallelConfig(pipeline_model_parallel_size=4, virtual_pipeline_model_parallel_size=3), 4,
     "num_layers=32 is not divisible by pipeline_model_parallel_size x "
     "virtual_pipeline_model_parallel_size=12"),
    (ParallelConfig(virtual_pipeline_model_parallel_size=2), 1,
     "virtual_pipeline_model_parallel_size=2 needs pipeline_model_parallel_size >= 2"),
    (ParallelConfig(sequence_parallel=True), 1,
     "sequence_parallel=true needs tensor_model_parallel_size > 1"),
    (ParallelConfig(tensor_model_parallel_size=2), 3, "world_size=3 is not divisible"),
    (ParallelConfig(tensor_model_parallel_size=0), 1, "tensor_model_parallel_size=0 must be"),
])
def test_parallel_errors_name_field(parallel, world, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_parallel(ARCH, parallel, world)


def test_context_parallel_refused_on_cpu_with_reason():
    parallel = ParallelConfig(context_parallel_size=2)
    validate_parallel(ARCH, parallel, 2, seq_length=4096)  # a valid setting...
    with pytest.raises(ConfigError, match="context_parallel_size=2 needs CUDA.*local attention"):
        check_machine(parallel, cuda_available=False)  # ...that this machine cannot run
    check_machine(parallel, cuda_available=True)


def test_seq_length_checks():
    with pytest.raises(ValueError, match="seq_length=65536 exceeds max_position_embeddings=32768"):
        validate_parallel(ARCH, ParallelConfig(), 1, seq_length=65536)
    with pytest.raises(ValueError, match="seq_length=4097 is not divisible by "
                                         "tensor_model_parallel_size=2"):
        validate_parallel(ARCH, ParallelConfig(tensor_model_parallel_size=2,
                                               sequence_parallel=True), 2, seq_length=4097)


def test_valid_layouts_pass():
    for parallel, world in [
        (ParallelConfig(), 1),
        (ParallelConfig(tensor_model_parallel_size=8, sequence_parallel=True), 16),
        (ParallelConfig(tensor_model_parallel_size=4, pipeline_model_parallel_size=4,
                        virtual_pipeline_model_parallel_size=2), 64),
    ]:
        validate_parallel(ARCH, parallel, world, seq_length=8192)


def test_fp8_without_cuda_or_transformer_engine_says_so():
    fp8 = PrecisionConfig(dtype="bf16", fp8=True)
    validate_precision(fp8)
    with pytest.raises(ConfigError, match="precision.fp8=true needs a CUDA GPU"):
        check_machine(precision=fp8, cuda_available=False)
    with pytest.raises(ConfigError, match="precision.fp8=true needs Transformer Engine"):
        check_machine(precision=fp8, cuda_available=True, te_available=False)
    check_machine(precision=fp8, cuda_available=True, te_available=True)
    with pytest.raises(ConfigError, match="set precision.dtype=bf16"):
        validate_precision(PrecisionConfig(dtype="fp32", fp8=True))


def test_config_does_not_import_runtime():
    """config/ is plain data: the machine checks live in runtime/ (layering)."""
    import ast
    from pathlib import Path

    import nemo_exaone.config as config

    for path in Path(config.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            assert not any(n.startswith("nemo_exaone.runtime") for n in names), path


@pytest.mark.parametrize("precision, message", [
    (PrecisionConfig(dtype="fp64"), "precision.dtype='fp64'"),
    (PrecisionConfig(fp8_recipe="mxfp8"), "precision.fp8_recipe='mxfp8'"),
    (PrecisionConfig(fp8_format="e5m2"), "precision.fp8_format='e5m2'"),
])
def test_bad_precision_values(precision, message):
    with pytest.raises(ValueError, match=message):
        validate_precision(precision)


def test_model_builder_validates_precision_before_building():
    from nemo_exaone.model.builder import transformer_config

    with pytest.raises(ValueError, match="precision.fp8=true needs a CUDA GPU"):
        transformer_config(get_preset("tiny"), precision=PrecisionConfig(dtype="bf16", fp8=True))
