"""Weighted averages of Megatron checkpoints of one architecture ("model soup").

``out = sum_i w_i * ckpt_i`` tensor by tensor, accumulated in fp32 and stored in the dtype
the first checkpoint stores that tensor in. Streaming: the output is written with the
converter's DCP writer (:func:`~nemo_exaone.checkpoint.dcp_io.write_dcp`), which asks for one
chunk at a time (one layer of one parameter, large ones cut into row ranges of at most
``max_chunk_bytes``), and each source chunk is read on its own with
:class:`~nemo_exaone.checkpoint.dcp_io.DistCheckpointReader`; no model is built and memory
holds one chunk of each source plus its fp32 sum, at any model size. Sources may have been
saved at any TP/PP (the reader assembles any region from the stored chunks); training
checkpoints contribute their model weights only (optimizer and RNG state are not averaged).

The output has the layout Megatron-Core writes for the architecture at TP=1 (asked of
Megatron itself, :func:`~nemo_exaone.checkpoint.mcore_layout.megatron_layout`, as the
converter does), so it loads at any TP/PP in training, generation and export. It carries
the first checkpoint's architecture record and HF identity (tokenizer, config), and lists
the sources and weights in ``nemo_exaone.json`` (``extra.averaged_from``). Every identity
field (shapes, RoPE, context length, token ids) must agree across the sources; the differing
fields are named. Tensors beyond the language model (a reward model's ``reward_head.weight``)
are averaged when the caller names them in ``extra_tensor_keys`` and every source has them.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.config.errors import ConfigError

__all__ = ["AverageReport", "resolve_weights", "parse_weights", "average_checkpoints"]

_SUM_TOLERANCE = 1e-6


def parse_weights(text: str) -> list[float]:
    """``"0.5,0.25,0.25"`` -> floats; an entry that is not a number is named."""
    out = []
    for index, part in enumerate(text.split(",")):
        try:
            out.append(float(part))
        except ValueError:
            raise ConfigError(f"--weights {text!r}: entry {index} ({part.strip()!r}) is not a "
                              "number") from None
    return out


def resolve_weights(weights: Sequence[float] | None, count: int, normalize: bool = False
                    ) -> list[float]:
    """The weights to use: uniform when None; otherwise one finite, non-negative weight per
    checkpoint summing to 1 (within 1e-6), or any positive sum with ``normalize``."""
    if count < 2:
        raise ConfigError(f"averaging needs at least two checkpoints, got {count}")
    if weights is None:
        return [1.0 / count] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ConfigError(f"--weights has {len(weights)} values for {count} checkpoints; give "
                          "one weight per --ckpt")
    for index, value in enumerate(weights):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"--weights entry {index} ({value!r}) must be a finite number "
                              ">= 0")
    total = math.fsum(weights)
    if normalize:
        if total <= 0:
            raise ConfigError(f"--weights sum to {total!r}; --normalize needs a positive sum")
        return [w / total for w in weights]
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise ConfigError(f"--weights sum to {total!r}, not 1; pass --normalize to divide "
                          "them by their sum")
    return weights


@dataclass
class AverageReport:
    """What was averaged into what."""

    sources: list[str]
    weights: list[float]
    out: str
    tensors: int
    chunks: int
    bytes_written: int
    seconds: float
    extra_keys: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"averaged {len(self.sources)} checkpoints -> {self.out}"]
        lines += [f"  {w:.6g} x {s}" for s, w in zip(self.sources, self.weights)]
        lines.append(f"{self.tensors} tensors ({self.chunks} chunks, "
                     f"{self.bytes_written / 2**20:.1f} MiB) in {self.seconds:.1f} s; "
                     "identity and tokenizer from the first")
        if self.extra_keys:
            lines.append("also averaged: " + ", ".join(self.extra_keys))
        return "\n".join(lines)


def _check_same_identity(archs: list, paths: list[Path]) -> None:
    from nemo_exaone.checkpoint.identity import IDENTITY_FIELDS

    def same(a, b) -> bool:
        if isinstance(a, float) or isinstance(b, float):
            return a is not None and b is not None and float(a) == float(b)
        return a == b

    for arch, path in zip(archs[1:], paths[1:]):
        diffs = [f"{f}: {getattr(archs[0], f)!r} vs {getattr(arch, f)!r}"
                 for f in IDENTITY_FIELDS if not same(getattr(archs[0], f), getattr(arch, f))]
        if diffs:
            raise CheckpointError(f"checkpoints {paths[0]} and {path} have different "
                                  "architectures and cannot be averaged: " + "; ".join(diffs))


def average_checkpoints(
    ckpts: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    weights: Sequence[float] | None = None,
    normalize: bool = False,
    overwrite: bool = False,
    extra_tensor_keys: Sequence[str] = (),
    progress: bool | None = None,
    max_chunk_bytes: int = 256 * 2**20,
) -> AverageReport:
    """Write ``sum_i weights[i] * ckpts[i]`` to ``out`` (see the module docstring).

    ``ckpts``: run directories, ``checkpoints/`` folders, ``iter_N`` or converted
    checkpoints (:func:`~nemo_exaone.checkpoint.locate.locate_checkpoint`). Single process.
    """
    from nemo_exaone.checkpoint.dcp_io import ChunkSpec, DistCheckpointReader, write_dcp
    from nemo_exaone.checkpoint.dtypes import hf_dtype_name
    from nemo_exaone.checkpoint.exaone4_hf import hf_table
    from nemo_exaone.checkpoint.hf_to_mcore import split_rows, write_megatron_files
    from nemo_exaone.checkpoint.identity import recorded_identity, write_identity
    from nemo_exaone.checkpoint.locate import locate_checkpoint
    from nemo_exaone.checkpoint.mcore_layout import megatron_layout
    from nemo_exaone.checkpoint.metadata import (
        CheckpointMetadata,
        read_checkpoint_arch,
        write_metadata,
    )
    from nemo_exaone.checkpoint.progress import byte_progress
    from nemo_exaone.checkpoint.verify import verify_dist_checkpoint
    from nemo_exaone.runtime.outputs import atomic_directory, check_output, refuse_overlap
    from nemo_exaone.runtime.versions import megatron_core_version

    start = time.perf_counter()
    weights = resolve_weights(weights, len(ckpts), normalize)
    out = Path(out).absolute()
    flags = ["--ckpt"] * len(ckpts)
    refuse_overlap(out, list(ckpts), output_flag="--out", input_flags=flags)
    paths = [Path(locate_checkpoint(c).path).absolute() for c in ckpts]
    refuse_overlap(out, paths, output_flag="--out", input_flags=flags)
    check_output(out, overwrite, flag="--out")
    archs = [read_checkpoint_arch(p) for p in paths]
    _check_same_identity(archs, paths)
    readers = [DistCheckpointReader(p) for p in paths]
    layout = megatron_layout(archs[0], hf_table(archs[0]))

    stored = [set(r.keys()) for r in readers]
    extra = []
    for key in extra_tensor_keys:
        having = [str(p) for p, keys in zip(paths, stored) if key in keys]
        if len(having) == len(paths):
            extra.append(key)
        elif having:
            lacking = [str(p) for p, keys in zip(paths, stored) if key not in keys]
            raise CheckpointError(f"tensor {key!r} is in {', '.join(having)} but not in "
                                  f"{', '.join(lacking)}: these checkpoints are not the same "
                                  "kind of model")
    global_shapes = {c.key: c.global_shape for c in layout.chunks}
    for key in extra:
        global_shapes[key] = tuple(readers[0].tensor_metadata(key).size)
    for reader in readers:
        for key, shape in global_shapes.items():
            found = tuple(reader.tensor_metadata(key).size)  # names a missing key
            if found != shape:
                raise CheckpointError(f"tensor {key!r} in {reader.directory} has global shape "
                                      f"{found}, expected {shape}")
    dtypes = {key: readers[0].tensor_metadata(key).properties.dtype for key in global_shapes}

    pieces = [piece for c in layout.chunks
              for piece in split_rows(c, dtypes[c.key].itemsize, max_chunk_bytes)]
    specs = [ChunkSpec(c.key, c.global_shape, c.offset, c.shape, dtypes[c.key])
             for c in pieces]
    specs += [ChunkSpec(key, global_shapes[key], (0,) * len(global_shapes[key]),
                        global_shapes[key], dtypes[key]) for key in extra]
    total = sum(math.prod(s.shape) * s.dtype.itemsize for s in specs)
    bar = byte_progress(total, "average", progress)
    failure: dict[str, Exception] = {}

    def produce(spec: ChunkSpec) -> torch.Tensor:
        acc = torch.zeros(spec.shape, dtype=torch.float32)
        for weight, reader in zip(weights, readers):
            part = reader.read(spec.key, spec.offset, spec.shape)
            if not bool(torch.isfinite(part).all()):
                failure["error"] = CheckpointError(
                    f"tensor {spec.key!r} (region {spec.offset}+{spec.shape}) in "
                    f"{reader.directory} holds NaN/Inf: refusing to average it")
                raise failure["error"]
            acc.add_(part.to(torch.float32), alpha=weight)
        result = acc.to(spec.dtype)
        if not bool(torch.isfinite(result).all()):
            failure["error"] = CheckpointError(
                f"tensor {spec.key!r}: the average overflows {hf_dtype_name(spec.dtype)}")
            raise failure["error"]
        bar.update(result.numel() * result.element_size())
        return result

    try:
        with atomic_directory(out, overwrite=overwrite, inputs=paths, input_flags=flags,
                              flag="--out", verify=verify_dist_checkpoint) as tmp:
            try:
                write_dcp(tmp, specs, layout.objects, produce)
            except BaseException:  # DCP wraps errors from produce in its own exception
                if "error" in failure:
                    raise failure["error"] from None
                raise
            write_megatron_files(tmp, layout)
            write_metadata(tmp, CheckpointMetadata(
                hf_config=archs[0].to_hf_config(),
                dtype=",".join(sorted({hf_dtype_name(d) for d in dtypes.values()})),
                writer="align-average", megatron_core=megatron_core_version(),
                extra={"averaged_from": [{"checkpoint": str(p), "weight": w}
                                         for p, w in zip(paths, weights)]}))
            write_identity(tmp, recorded_identity(paths[0]))
            written = sum(p.stat().st_size for p in tmp.iterdir() if p.is_file())
    finally:
        bar.close()
    return AverageReport([str(p) for p in paths], weights, str(out), len(global_shapes),
                         len(specs), written, time.perf_counter() - start, extra)
