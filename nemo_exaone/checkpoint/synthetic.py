"""Random EXAONE checkpoints in HF format, written streaming (tests and benchmarks).

Tensors are functions of (seed, name), so two calls agree; norms are drawn near 1 so that
activations keep a realistic scale in parity tests.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import torch

from nemo_exaone.checkpoint.exaone4_hf import hf_table
from nemo_exaone.checkpoint.exaone_hf import exaone_dims
from nemo_exaone.checkpoint.safetensors_io import ShardedSafetensorsWriter, TensorEntry
from nemo_exaone.config.presets import ExaoneArch


def random_hf_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int,
                     std: float = 0.02) -> torch.Tensor:
    gen = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
    values = torch.randn(shape, generator=gen, dtype=dtype)  # no fp32 detour for big tensors
    if len(shape) == 1:  # RMSNorm weights
        return values.mul_(0.1).add_(1.0)
    return values.mul_(std)


def hf_entries(arch: ExaoneArch, dtype: torch.dtype) -> list[TensorEntry]:
    """Names and shapes of an EXAONE HF checkpoint, in file order."""
    bound = hf_table(arch).bind(exaone_dims(arch))
    return [TensorEntry(name, dtype, shape) for b in bound
            for name, shape in zip(b.targets, b.target_shapes)]


def write_random_hf_checkpoint(
    out_dir: str | os.PathLike,
    arch: ExaoneArch,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    std: float = 0.02,
    max_shard_bytes: int = 5 * 10**9,
) -> Path:
    """Write config.json + (sharded) safetensors for ``arch``; one tensor in memory at a time."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = arch.to_hf_config()
    config.setdefault("torch_dtype", {torch.float32: "float32", torch.bfloat16: "bfloat16",
                                      torch.float16: "float16"}[dtype])
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    entries = hf_entries(arch, dtype)
    writer = ShardedSafetensorsWriter(out, entries, max_shard_bytes)
    for entry in entries:
        writer.write(entry.name, random_hf_tensor(entry.name, entry.shape, dtype, seed, std))
    writer.close()
    return out
