"""Parallelism and precision settings, validated against an architecture before heavy work.

Every error names the offending field and says how to fix it, so a bad launch fails in
seconds on rank 0 instead of minutes later inside Megatron-Core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nemo_exaone.config.errors import ConfigError
from nemo_exaone.config.presets import ExaoneArch

Dtype = Literal["fp32", "bf16", "fp16"]
Fp8Recipe = Literal["delayed", "tensorwise"]


@dataclass
class ParallelConfig:
    """How the model is split across processes. Data parallel size is what is left over."""

    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    virtual_pipeline_model_parallel_size: int | None = None
    sequence_parallel: bool = False
    context_parallel_size: int = 1
    use_distributed_optimizer: bool = False

    @property
    def model_parallel_size(self) -> int:
        return (self.tensor_model_parallel_size * self.pipeline_model_parallel_size
                * self.context_parallel_size)

    def data_parallel_size(self, world_size: int) -> int:
        return world_size // self.model_parallel_size


@dataclass
class PrecisionConfig:
    """Numeric format of parameters/activations. fp32 is the CPU default (no native bf16)."""

    dtype: Dtype = "fp32"
    fp8: bool = False
    fp8_format: Literal["hybrid", "e4m3"] = "hybrid"
    # 'delayed': amax history scaling; 'tensorwise': per-tensor current scaling (TE >= 2.2).
    fp8_recipe: Fp8Recipe = "delayed"
    fp8_amax_history_len: int = 1024
    fp8_amax_compute_algo: Literal["max", "most_recent"] = "max"
    fp8_param_gather: bool = False

    @property
    def torch_dtype(self):  # -> torch.dtype (torch imported lazily: config stays light)
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.dtype]


def _divisible(what: str, value: int, by_name: str, by: int, fix: str) -> None:
    if value % by:
        raise ConfigError(f"{what}={value} is not divisible by {by_name}={by}; {fix}")


def validate_parallel(
    arch: ExaoneArch,
    parallel: ParallelConfig,
    world_size: int,
    seq_length: int | None = None,
) -> None:
    """Check that ``parallel`` can build ``arch`` on ``world_size`` processes (the settings
    only; :func:`nemo_exaone.runtime.machine.check_machine` checks them against the machine)."""
    tp, pp, cp = (parallel.tensor_model_parallel_size, parallel.pipeline_model_parallel_size,
                  parallel.context_parallel_size)
    for name, value in (("tensor_model_parallel_size", tp), ("pipeline_model_parallel_size", pp),
                        ("context_parallel_size", cp), ("world_size", world_size)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r} must be an integer >= 1")
    _divisible("num_attention_heads", arch.num_attention_heads, "tensor_model_parallel_size", tp,
               "choose a tensor parallel size that divides the number of heads")
    _divisible("num_key_value_heads", arch.num_key_value_heads, "tensor_model_parallel_size",
               tp, "Megatron-Core splits whole KV groups across tensor-parallel ranks; use a "
               "tensor parallel size that divides the number of KV heads")
    _divisible("intermediate_size", arch.intermediate_size, "tensor_model_parallel_size", tp,
               "choose a tensor parallel size that divides the MLP width")
    _divisible("vocab_size", arch.vocab_size, "tensor_model_parallel_size", tp,
               "pad the vocabulary or choose another tensor parallel size")
    vpp = parallel.virtual_pipeline_model_parallel_size
    if vpp is not None:
        if pp < 2:
            raise ConfigError(
                f"virtual_pipeline_model_parallel_size={vpp} needs pipeline_model_parallel_size "
                f">= 2 (got {pp}); set it to null or raise pipeline_model_parallel_size")
        _divisible("num_layers", arch.num_layers, "pipeline_model_parallel_size x "
                   "virtual_pipeline_model_parallel_size", pp * vpp,
                   "change the pipeline or virtual pipeline size")
    else:
        _divisible("num_layers", arch.num_layers, "pipeline_model_parallel_size", pp,
                   "choose a pipeline size that divides the number of layers")
    if parallel.sequence_parallel and tp == 1:
        raise ConfigError("sequence_parallel=true needs tensor_model_parallel_size > 1 "
                         "(it splits activations across the tensor-parallel group)")
    if seq_length is not None:
        if seq_length > arch.max_position_embeddings:
            raise ConfigError(
                f"seq_length={seq_length} exceeds max_position_embeddings="
                f"{arch.max_position_embeddings}; raise max_position_embeddings (context "
                "extension stage) or shorten seq_length")
        if parallel.sequence_parallel:
            _divisible("seq_length", seq_length, "tensor_model_parallel_size", tp,
                       "sequence parallel splits the sequence across tensor-parallel ranks")
        if cp > 1:
            _divisible("seq_length", seq_length, "2 x context_parallel_size", 2 * cp,
                       "context parallel splits the sequence into 2*cp chunks")
    if world_size % parallel.model_parallel_size:
        raise ConfigError(
            f"world_size={world_size} is not divisible by tensor x pipeline x context parallel "
            f"size = {tp} x {pp} x {cp} = {parallel.model_parallel_size}; launch a multiple of "
            f"{parallel.model_parallel_size} processes")


def validate_precision(precision: PrecisionConfig) -> None:
    """Check the precision settings (against the machine:
    :func:`nemo_exaone.runtime.machine.check_machine`)."""
    if precision.dtype not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"precision.dtype={precision.dtype!r}; choose fp32, bf16 or fp16")
    if precision.fp8_recipe not in ("delayed", "tensorwise"):
        raise ConfigError(f"precision.fp8_recipe={precision.fp8_recipe!r}; choose 'delayed' or "
                          "'tensorwise' (per-tensor current scaling)")
    if precision.fp8_format not in ("hybrid", "e4m3"):
        raise ConfigError(f"precision.fp8_format={precision.fp8_format!r}; choose 'hybrid' or "
                          "'e4m3'")
    if precision.fp8 and precision.dtype == "fp32":
        raise ConfigError("precision.fp8=true is a mixed-precision mode on top of bf16; "
                          "set precision.dtype=bf16")
