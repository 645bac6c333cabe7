"""Parallel-parity harness: a few training steps whose losses must not depend on the layout.

A small EXAONE model trains on a synthetic, learnable token stream with the real Megatron-Core
model, DDP, optimizer, pipeline schedules and the loop's own iteration and objective, in any
TP/PP/SP layout. Weights and batches are functions of (seed, tensor name) and (seed, step)
only, so every layout starts from the same full model and sees the same data: losses must
agree. Used by the parity tests, the demo's TP check, the GPU check and the step-time
benchmark.
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass, field

import torch

from nemo_exaone.config.parallel import ParallelConfig, PrecisionConfig
from nemo_exaone.config.presets import ExaoneArch, get_preset
from nemo_exaone.training.batches import Batch
from nemo_exaone.training.optimizer import OptimizerSettings


@dataclass
class ParityConfig:
    preset: str = "tiny"
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    optimizer: OptimizerSettings = field(default_factory=lambda: OptimizerSettings(lr=3e-3))
    steps: int = 3
    micro_batch_size: int = 2
    num_microbatches: int = 2
    seq_length: int = 64
    seed: int = 1234
    arch_overrides: dict = field(default_factory=dict)
    verbose: bool = False
    # Each row packs three segments (document_ids, positions restarting, no loss across a
    # boundary): the objective's attention isolation runs under the layout being compared.
    packed: bool = False

    def arch(self) -> ExaoneArch:
        return get_preset(self.preset).replace(**self.arch_overrides)


def _name_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def full_init_tensor(name: str, shape: tuple[int, ...], seed: int,
                     std: float = 0.02) -> torch.Tensor:
    """Deterministic full-model tensor for ``name``: norms are ones, the rest N(0, std)."""
    if name.endswith("layernorm.weight") or "layer_norm" in name:
        return torch.ones(shape)
    gen = torch.Generator().manual_seed(_name_seed(seed, name))
    return torch.randn(shape, generator=gen) * std


def deterministic_full_state_dict(model, seed: int) -> dict[str, torch.Tensor]:
    """Full (unsharded) tensors for every parameter this rank holds."""
    from megatron.core import parallel_state

    from nemo_exaone.model.sharding import global_param_names, unwrap

    tp = parallel_state.get_tensor_model_parallel_world_size()
    names = global_param_names(model)
    out = {}
    for local_name, param in unwrap(model).named_parameters():
        name = names[local_name]
        if name == "output_layer.weight" and model.share_embeddings_and_output_weights:
            name = "embedding.word_embeddings.weight"
        shape = list(param.shape)
        if tp > 1 and getattr(param, "tensor_model_parallel", False):
            shape[param.partition_dim] *= tp
        out[name] = full_init_tensor(name, tuple(shape), seed)
    return out


def synthetic_batches(vocab_size: int, step: int, cfg: ParityConfig, dp_rank: int = 0,
                      dp_size: int = 1) -> list[Batch]:
    """This data-parallel rank's micro-batches of arithmetic token sequences
    (x, x+k, x+2k, ...) mod vocab: learnable. The global batch depends only on (seed, step),
    so every layout trains on the same data."""
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
    batches = []
    b, s = cfg.micro_batch_size, cfg.seq_length
    for _ in range(cfg.num_microbatches):
        start = torch.randint(0, vocab_size, (b * dp_size, 1), generator=gen)
        stride = torch.randint(1, 8, (b * dp_size, 1), generator=gen)
        seq = ((start + stride * torch.arange(s + 1)) % vocab_size)[dp_rank * b:(dp_rank + 1) * b]
        batch = {
            "tokens": seq[:, :-1].contiguous(),
            "labels": seq[:, 1:].contiguous(),
            "loss_mask": torch.ones(b, s),
            "position_ids": torch.arange(s).unsqueeze(0).expand(b, -1).contiguous(),
        }
        if cfg.packed:
            cuts = torch.randint(s // 8, s - s // 8, (b * dp_size, 2), generator=gen)
            cuts = cuts.sort(dim=1).values[dp_rank * b:(dp_rank + 1) * b]
            index = torch.arange(s + 1).unsqueeze(0)
            docs = (index >= cuts[:, :1]).long() + (index >= cuts[:, 1:]).long()
            starts = torch.where(docs == 0, 0, torch.where(docs == 1, cuts[:, :1], cuts[:, 1:]))
            batch["document_ids"] = docs[:, :-1].contiguous()
            batch["position_ids"] = (index - starts)[:, :-1].contiguous()
            batch["loss_mask"] = (docs[:, 1:] == docs[:, :-1]).float()
        batches.append(batch)
    return batches


def run_parity_training(cfg: ParityConfig) -> list[dict]:
    """Train ``cfg.steps`` steps; returns per-step metrics (identical on every rank)."""
    from nemo_exaone.config.parallel import validate_parallel
    from nemo_exaone.model.builder import ModelOptions, build_model_chunks
    from nemo_exaone.model.sharding import load_full_state_dict
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed
    from nemo_exaone.training.iteration import run_iteration
    from nemo_exaone.training.objectives import LanguageModelObjective
    from nemo_exaone.training.optimizer import build_optimizer, wrap_ddp

    arch = cfg.arch()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    validate_parallel(arch, cfg.parallel, world, seq_length=cfg.seq_length)
    init_distributed(cfg.parallel, seed=cfg.seed)
    try:
        # The training loop's own iteration and objective (token-weighted loss, as in the loop).
        options = ModelOptions(extra_config={"calculate_per_token_loss": True})
        chunks = build_model_chunks(arch, cfg.parallel, cfg.precision, options)
        objective = LanguageModelObjective()
        for chunk in chunks:
            load_full_state_dict(chunk, deterministic_full_state_dict(chunk, cfg.seed))
        chunks = wrap_ddp(chunks, cfg.parallel)
        optimizer = build_optimizer(chunks, cfg.optimizer, cfg.parallel, cfg.precision)
        from megatron.core import parallel_state

        dp_rank = parallel_state.get_data_parallel_rank()
        dp_size = parallel_state.get_data_parallel_world_size()
        metrics = []
        for step in range(cfg.steps):
            start = time.perf_counter()
            result = run_iteration(
                chunks, optimizer, synthetic_batches(arch.vocab_size, step, cfg, dp_rank, dp_size),
                cfg.micro_batch_size, cfg.seq_length, objective.forward_step, objective.loss_key)
            out = {"loss": result.loss, "grad_norm": result.grad_norm,
                   "update_successful": result.applied}
            out["step"] = step + 1
            out["step_time_s"] = time.perf_counter() - start
            metrics.append(out)
            if cfg.verbose and torch.distributed.get_rank() == 0:
                print(f"step {step + 1:4d}  loss {out['loss']:.6f}  grad_norm "
                      f"{out['grad_norm']:.4f}  {out['step_time_s'] * 1000:.0f} ms", flush=True)
        return metrics
    finally:
        destroy_distributed()
