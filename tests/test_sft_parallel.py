"""Packed batches (three segments a row, attention isolated by the objective's mask) train
with the same losses under TP=2 with sequence parallelism as under TP=1: the mask is built
per micro-batch on every rank and applies to the full sequence after the sequence-parallel
gather. Real gloo process groups, Megatron-Core's schedules, 3 optimizer steps."""

from __future__ import annotations

from nemo_exaone.config.parallel import ParallelConfig
from nemo_exaone.runtime.launch import spawn_local
from nemo_exaone.training.parity import ParityConfig, run_parity_training


def _losses(configs: list[ParityConfig]) -> list[list[float]]:
    return [[m["loss"] for m in run_parity_training(c)] for c in configs]


def test_packed_tp2_sequence_parallel_matches_tp1():
    [(packed, plain)] = spawn_local(_losses, 1, [ParityConfig(packed=True), ParityConfig()])
    tp2 = ParallelConfig(tensor_model_parallel_size=2, sequence_parallel=True)
    got = [m["loss"] for m in spawn_local(run_parity_training, 2,
                                          ParityConfig(parallel=tp2, packed=True))[0]]
    assert len(got) == 3
    for a, b in zip(got, packed, strict=True):
        assert abs(a - b) <= 1e-5 * abs(b)
    # the packed run really differs from the unpacked one (segments and mask took effect)
    assert abs(packed[0] - plain[0]) > 1e-3
