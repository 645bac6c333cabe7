"""Build an EXAONE model as a Megatron-Core ``GPTModel``.

EXAONE 3.x is Llama-shaped: pre-norm RMSNorm, SwiGLU, GQA, rotate-half RoPE (llama3-scaled in
3.5), no biases, optionally tied embeddings. Everything below maps those facts onto
Megatron-Core's ``TransformerConfig``; parallelism comes from Megatron's parallel state.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from nemo_exaone.config.errors import ConfigError
from nemo_exaone.config.parallel import (
    ParallelConfig,
    PrecisionConfig,
    validate_parallel,
    validate_precision,
)
from nemo_exaone.config.presets import ExaoneArch
from nemo_exaone.model.families import layer_family
from nemo_exaone.model.spec import SpecName, default_spec_name


@dataclass
class ModelOptions:
    """Knobs that change how (not what) the model computes."""

    spec: SpecName | None = None  # None: chosen from the machine (TE on CUDA, local otherwise)
    recompute_granularity: str | None = None  # None | "selective" | "full"
    recompute_method: str | None = None  # with "full": "uniform" | "block"
    recompute_num_layers: int | None = None
    init_method_std: float | None = None  # None: arch.initializer_range
    # torch.compile each decoder layer: fuses the elementwise work between the GEMMs
    # (RMSNorm, RoPE, SwiGLU, residual adds; forward and backward). Local spec, TP=1; the
    # first step pays the compilation (tens of seconds on a CPU).
    compile: bool = False
    extra_config: dict = field(default_factory=dict)  # raw TransformerConfig overrides


def transformer_config(
    arch: ExaoneArch,
    parallel: ParallelConfig | None = None,
    precision: PrecisionConfig | None = None,
    options: ModelOptions | None = None,
    perform_initialization: bool = True,
):
    """Megatron-Core ``TransformerConfig`` for ``arch`` under the given layout and precision."""
    from megatron.core.transformer.transformer_config import TransformerConfig

    parallel = parallel or ParallelConfig()
    precision = precision or PrecisionConfig()
    options = options or ModelOptions()
    validate_precision(precision)
    from nemo_exaone.runtime.machine import check_machine

    check_machine(parallel, precision)
    on_cpu = not torch.cuda.is_available()
    dtype = precision.torch_dtype
    kwargs = dict(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_key_value_heads,
        kv_channels=arch.kv_channels,
        ffn_hidden_size=arch.intermediate_size,
        normalization="RMSNorm",
        layernorm_epsilon=arch.layer_norm_epsilon,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=arch.embed_dropout,
        attention_dropout=arch.attention_dropout,
        init_method_std=options.init_method_std or arch.initializer_range,
        tensor_model_parallel_size=parallel.tensor_model_parallel_size,
        pipeline_model_parallel_size=parallel.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=parallel.virtual_pipeline_model_parallel_size,
        sequence_parallel=parallel.sequence_parallel,
        context_parallel_size=parallel.context_parallel_size,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=precision.dtype == "bf16",
        fp16=precision.dtype == "fp16",
        perform_initialization=perform_initialization,
        use_cpu_initialization=on_cpu,
        # Fused kernels need CUDA (and the biases EXAONE does not have).
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=not on_cpu,
        persist_layer_norm=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        # Gloo matches point-to-point messages between two ranks in posting order; Megatron's
        # batched p2p ordering assumes NCCL's grouping. With PP=2 + virtual stages the two
        # directions share a peer and gloo pairs the wrong tensors. The unbatched path orders
        # sends/receives by rank parity, which is correct on gloo.
        batch_p2p_comm=not on_cpu,
        recompute_granularity=options.recompute_granularity,
        recompute_method=options.recompute_method,
        recompute_num_layers=options.recompute_num_layers,
    )
    if precision.fp8:
        kwargs.update(
            fp8=precision.fp8_format,
            fp8_recipe=precision.fp8_recipe,
            fp8_amax_history_len=precision.fp8_amax_history_len,
            fp8_amax_compute_algo=precision.fp8_amax_compute_algo,
            fp8_param=precision.fp8_param_gather,
        )
    kwargs.update(layer_family(arch).config_kwargs(arch))  # EXAONE 4.0: QK-norm, windows
    kwargs.update(options.extra_config)
    return TransformerConfig(**kwargs)


def check_compile(options: ModelOptions, parallel: ParallelConfig) -> None:
    """Refuse ``compile`` where it has not been verified against the eager model."""
    if not options.compile:
        return
    spec_name = options.spec or default_spec_name()
    if spec_name != "local":
        raise ConfigError("model.compile=true applies to the local layer spec; the Transformer "
                          "Engine spec already runs fused kernels (set model.compile=false)")
    if parallel.tensor_model_parallel_size != 1:
        raise ConfigError(
            "model.compile=true is verified at tensor_model_parallel_size=1 only (got "
            f"{parallel.tensor_model_parallel_size}); set model.compile=false with tensor "
            "parallelism")


def compile_layers(model) -> None:
    """``torch.compile`` every decoder layer of ``model`` in place.

    Compiling per layer (not the whole model) keeps one graph that every layer reuses and
    leaves the embedding, output layer and loss eager; state-dict keys do not change.
    Megatron-Core's row-parallel linear issues a deprecation warning (``tp_group`` is None)
    on every forward; a warning inside a traced region splits each layer into many small
    graphs, so compiled code skips ``warnings.warn``.
    """
    import warnings

    import torch._dynamo.config as dynamo_config

    dynamo_config.ignore_logging_functions.add(warnings.warn)
    for layer in model.decoder.layers:
        layer.compile(dynamic=False)


def build_model(
    arch: ExaoneArch,
    parallel: ParallelConfig | None = None,
    precision: PrecisionConfig | None = None,
    options: ModelOptions | None = None,
    vp_stage: int | None = None,
    perform_initialization: bool = True,
    meta_device: bool = False,
):
    """Build this rank's ``GPTModel`` chunk (Megatron parallel state must be initialised).

    ``meta_device=True`` allocates no memory: used to count parameters of 32B models on a
    laptop.
    """
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    parallel = parallel or ParallelConfig()
    options = options or ModelOptions()
    validate_parallel(arch, parallel, torch.distributed.get_world_size())
    check_compile(options, parallel)
    config = transformer_config(arch, parallel, precision, options,
                                perform_initialization=perform_initialization and not meta_device)
    if meta_device:
        # On CUDA Megatron allocates with an explicit device=cuda, which escapes the meta
        # device context; CPU initialisation lets the context place everything on meta.
        config.use_cpu_initialization = True
    spec_name = options.spec or default_spec_name()
    pre = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage)
    post = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage)
    rope_theta = arch.rope_theta
    device_ctx = torch.device("meta") if meta_device else contextlib.nullcontext()
    with device_ctx:
        model = GPTModel(
            config=config,
            transformer_layer_spec=layer_family(arch).block_spec(config, spec_name,
                                                                 vp_stage=vp_stage),
            vocab_size=arch.vocab_size,
            max_sequence_length=arch.max_position_embeddings,
            pre_process=pre,
            post_process=post,
            parallel_output=True,
            share_embeddings_and_output_weights=arch.tie_word_embeddings,
            position_embedding_type="rope",
            rotary_percent=1.0,
            rotary_base=int(rope_theta) if float(rope_theta).is_integer() else rope_theta,
            rope_scaling=arch.rope_scaling is not None,
            rope_scaling_factor=arch.rope_scaling_factor or 8.0,
            vp_stage=vp_stage,
        )
    if options.compile and not meta_device:
        compile_layers(model)
    return model


def build_model_chunks(
    arch: ExaoneArch,
    parallel: ParallelConfig | None = None,
    precision: PrecisionConfig | None = None,
    options: ModelOptions | None = None,
) -> list:
    """All model chunks of this rank: one, or one per virtual pipeline stage."""
    parallel = parallel or ParallelConfig()
    vpp = parallel.virtual_pipeline_model_parallel_size
    if not vpp:
        return [build_model(arch, parallel, precision, options)]
    return [build_model(arch, parallel, precision, options, vp_stage=i) for i in range(vpp)]
