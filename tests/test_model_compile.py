"""``model.compile``: compiled decoder layers train exactly like the eager model.

The option exists for speed (fused elementwise work, see benchmarks/RESULTS.md); it must not
change the numbers. The same job runs eager and compiled in one process and the per-step
losses agree to 1e-5 and the gradient norms to 1e-5 relative; dynamo's graph counter shows
that the compiled run did compile.
"""

from __future__ import annotations

import pytest

from nemo_exaone.config.errors import ConfigError
from nemo_exaone.config.parallel import ParallelConfig
from nemo_exaone.model.builder import ModelOptions, check_compile
from nemo_exaone.runtime.launch import spawn_local

STEPS = 4


def _job(run_dir: str, compile_layers: bool):
    from nemo_exaone.training.config import TrainingJobConfig

    cfg = TrainingJobConfig()
    cfg.model.preset = "tiny"
    cfg.model.compile = compile_layers
    cfg.data.source = "synthetic"
    cfg.train.seq_length = 32
    cfg.train.micro_batch_size = 2
    cfg.train.global_batch_size = 4
    cfg.train.max_steps = STEPS
    cfg.schedule.warmup_steps = 1
    cfg.checkpoint.save_at_end = False
    cfg.checkpoint.resume = False
    cfg.logging.progress = "none"
    cfg.logging.tensorboard = False
    cfg.run.dir = run_dir
    return cfg


def _eager_and_compiled(tmp: str) -> dict:
    import torch._dynamo

    from nemo_exaone.training.loop import train

    out = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        torch._dynamo.utils.counters.clear()
        metrics = train(_job(f"{tmp}/{name}", compiled)).metrics
        out[name] = [m["loss"] for m in metrics]
        out[f"{name} grad norms"] = [m["grad_norm"] for m in metrics]
        out[f"{name} graphs"] = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    return out


def test_compiled_layers_train_like_eager(tmp_path):
    got = spawn_local(_eager_and_compiled, 1, str(tmp_path))[0]
    assert got["eager graphs"] == 0
    assert got["compiled graphs"] >= 1
    assert len(got["eager"]) == len(got["compiled"]) == STEPS
    assert got["compiled"][-1] != got["compiled"][0]  # the weights moved
    for step, (a, b) in enumerate(zip(got["eager"], got["compiled"], strict=True)):
        assert abs(a - b) <= 1e-5, f"step {step}: loss eager {a} vs compiled {b}"
    # The loss of a freshly initialised model barely reacts to small errors (a 1e-3 scale
    # error in every layer's norms moves it by 4e-6); the gradient norm reacts 100x more.
    for step, (a, b) in enumerate(zip(got["eager grad norms"], got["compiled grad norms"],
                                      strict=True)):
        assert abs(a - b) <= 1e-5 * a, f"step {step}: grad norm eager {a} vs compiled {b}"


@pytest.mark.parametrize("options,parallel,needle", [
    (ModelOptions(spec="te", compile=True), ParallelConfig(), "local layer spec"),
    (ModelOptions(spec="local", compile=True),
     ParallelConfig(tensor_model_parallel_size=2), "tensor_model_parallel_size=1"),
])
def test_compile_refused_where_unverified(options, parallel, needle):
    with pytest.raises(ConfigError, match=needle):
        check_compile(options, parallel)
    check_compile(ModelOptions(spec=options.spec, compile=False), parallel)  # eager is fine
