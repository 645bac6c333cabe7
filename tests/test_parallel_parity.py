"""TP=2+SP, PP=2 (with and without virtual stages), DP=2 with the distributed optimizer:
same losses as TP=1 for the same weights and batches over 3 optimizer steps, each layout a
real multi-process gloo group running Megatron-Core's schedules."""

from __future__ import annotations

import pytest

from nemo_exaone.config.parallel import ParallelConfig
from nemo_exaone.runtime.launch import spawn_local
from nemo_exaone.training.optimizer import OptimizerSettings
from nemo_exaone.training.parity import ParityConfig, run_parity_training

STEPS = 3
RTOL = 1e-5


def _run_all(configs: list[ParityConfig]) -> list[list[float]]:
    return [[m["loss"] for m in run_parity_training(c)] for c in configs]


@pytest.fixture(scope="module")
def reference() -> dict[str, list[float]]:
    """TP=1/PP=1 losses, in one separate process (keeps Megatron state out of pytest)."""
    base = ParityConfig(steps=STEPS)
    vpp = ParityConfig(steps=STEPS, num_microbatches=4)
    dp = ParityConfig(steps=STEPS, micro_batch_size=4)
    frozen = ParityConfig(steps=STEPS, optimizer=OptimizerSettings(lr=0.0, min_lr=0.0))
    [runs] = spawn_local(_run_all, 1, [base, vpp, dp, frozen])
    return {"base": runs[0], "vpp": runs[1], "dp": runs[2], "frozen": runs[3]}


def _losses(parallel: ParallelConfig, **kw) -> list[list[float]]:
    results = spawn_local(run_parity_training, 2, ParityConfig(parallel=parallel, steps=STEPS, **kw))
    return [[m["loss"] for m in rank] for rank in results]


def _assert_close(got: list[float], want: list[float]) -> None:
    assert len(got) == len(want) == STEPS
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=RTOL), (got, want)


def test_reference_learns(reference):
    """The updates lower the loss: on the same batches, the trained model's steps 2-3 lose
    less than the untouched initial model's (lr=0); measured 0.0074 lower in total."""
    base, frozen = reference["base"], reference["frozen"]
    assert base[0] == frozen[0]  # step 1 runs before any update
    assert all(b < f for b, f in zip(base[1:], frozen[1:])), (base, frozen)
    assert sum(frozen[1:]) - sum(base[1:]) > 5e-3, (base, frozen)


def test_tp2_sequence_parallel_matches_tp1(reference):
    ranks = _losses(ParallelConfig(tensor_model_parallel_size=2, sequence_parallel=True))
    for losses in ranks:
        _assert_close(losses, reference["base"])


def test_pp2_matches_tp1(reference):
    ranks = _losses(ParallelConfig(pipeline_model_parallel_size=2))
    for losses in ranks:
        _assert_close(losses, reference["base"])


def test_pp2_interleaved_virtual_stages_match_tp1(reference):
    ranks = _losses(ParallelConfig(pipeline_model_parallel_size=2,
                                   virtual_pipeline_model_parallel_size=2), num_microbatches=4)
    for losses in ranks:
        _assert_close(losses, reference["vpp"])


def test_dp2_distributed_optimizer_matches_single_process(reference):
    # Global batch 4 per micro-batch: DP=2 x 2 rows vs one process x 4 rows.
    ranks = _losses(ParallelConfig(use_distributed_optimizer=True), micro_batch_size=2)
    for losses in ranks:
        _assert_close(losses, reference["dp"])
