"""The training loop every stage runs: Megatron-Core model, DDP, optimizer, schedules.

``train(cfg)`` builds the model for the configured layout, initialises it (fresh, from a
previous stage, or by resuming this run's latest checkpoint), then runs optimizer steps
until ``train.max_steps``: data by consumed-sample offset, the stage's objective, the LR
schedule, non-finite checks, logging, periodic atomic checkpoints, and a clean checkpoint
and exit on SIGTERM. Launch it with ``python`` (one process) or ``torchrun`` (many): the
code is the same.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nemo_exaone.config.parallel import ParallelConfig, validate_parallel, validate_precision
from nemo_exaone.config.presets import ExaoneArch
from nemo_exaone.training.checkpointing import (
    CheckpointSaver,
    TrainState,
    latest_checkpoint,
    load_training_state,
    load_weights,
    resolve_checkpoint,
)
from nemo_exaone.training.config import TrainingJobConfig, validate_job
from nemo_exaone.training.flops import training_flops_per_token
from nemo_exaone.training.metrics import MetricsLogger, truncate_metrics
from nemo_exaone.training.safety import LossSpikeDetector, NonFiniteTrainingError, nonfinite_message


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports to its caller, identical on every rank."""

    state: TrainState
    metrics: list[dict] = field(default_factory=list)  # this process's records (all steps run)
    terminated: bool = False  # stopped early by SIGTERM (after saving)
    last_checkpoint: str | None = None
    resumed_from: str | None = None


def effective_parallel(cfg: TrainingJobConfig) -> ParallelConfig:
    """The configured layout, with sequence parallelism switched on for long sequences."""
    parallel = dataclasses.replace(cfg.parallel)
    threshold = cfg.train.sequence_parallel_from_length
    if (threshold is not None and parallel.tensor_model_parallel_size > 1
            and cfg.train.seq_length >= threshold):
        parallel.sequence_parallel = True
    return parallel


def validate_for_launch(cfg: TrainingJobConfig, world_size: int) -> tuple[ExaoneArch,
                                                                           ParallelConfig]:
    """All checks that need no process group: fail in seconds, with the field named."""
    validate_job(cfg)
    arch = cfg.model.build_arch()
    parallel = effective_parallel(cfg)
    validate_parallel(arch, parallel, world_size, seq_length=cfg.train.seq_length)
    validate_precision(cfg.precision)
    dp = parallel.data_parallel_size(world_size)
    per_step = cfg.train.micro_batch_size * dp
    if cfg.train.global_batch_size % per_step:
        raise ValueError(
            f"train.global_batch_size={cfg.train.global_batch_size} is not divisible by "
            f"micro_batch_size x data_parallel_size = {cfg.train.micro_batch_size} x {dp}")
    if cfg.stage.objective == "distill":
        if parallel.pipeline_model_parallel_size > 1:
            raise ValueError("stage.objective=distill runs the teacher beside the student on "
                             "each rank; use pipeline_model_parallel_size=1 (TP and DP work)")
        teacher = cfg.distill.build_teacher_arch()
        validate_parallel(teacher, dataclasses.replace(parallel), world_size,
                          seq_length=cfg.train.seq_length)
        if teacher.vocab_size != arch.vocab_size:
            raise ValueError(f"teacher vocab_size={teacher.vocab_size} differs from the "
                             f"student's {arch.vocab_size}: distillation needs one tokenizer")
    return arch, parallel


def _model_options(cfg: TrainingJobConfig):
    from nemo_exaone.model.builder import ModelOptions

    return ModelOptions(
        spec=cfg.model.spec,
        recompute_granularity=cfg.model.recompute_granularity,
        recompute_method=cfg.model.recompute_method,
        recompute_num_layers=cfg.model.recompute_num_layers,
        extra_config={"calculate_per_token_loss": True},
    )


def _build_objective(cfg: TrainingJobConfig, parallel: ParallelConfig, run_log):
    from nemo_exaone.training.objectives import (
        DistillationLossConfig,
        DistillationObjective,
        LanguageModelObjective,
    )

    if cfg.stage.objective == "lm":
        return LanguageModelObjective(), ()
    from nemo_exaone.model.builder import build_model_chunks

    teacher_arch = cfg.distill.build_teacher_arch()
    (teacher,) = build_model_chunks(teacher_arch, parallel, cfg.precision, _model_options(cfg))
    if cfg.distill.teacher_checkpoint:
        path = resolve_checkpoint(cfg.distill.teacher_checkpoint)
        load_weights(path, [teacher], teacher_arch)
        run_log.event("teacher_loaded", path=str(path), preset=teacher_arch.name)
    else:
        run_log.event("teacher_random", note="distill.teacher_checkpoint is null: the teacher "
                      "keeps its random initialisation (smoke test only)")
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    loss_cfg = DistillationLossConfig(loss=cfg.distill.loss, alpha=cfg.distill.alpha,
                                      temperature=cfg.distill.temperature,
                                      afm_teacher_weight=cfg.distill.afm_teacher_weight)
    return DistillationObjective(teacher, loss_cfg), ("lm loss",)


class _SigtermFlag:
    """Records SIGTERM; the loop saves and exits at the end of the current step."""

    def __init__(self) -> None:
        self.raised = False
        self._previous = None
        if _in_main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.raised = True

    def any_rank(self) -> bool:
        from nemo_exaone.training.iteration import comm_device

        value = torch.tensor([1.0 if self.raised else 0.0], device=comm_device())
        if torch.distributed.get_world_size() > 1:
            torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value[0] > 0)

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def train(cfg: TrainingJobConfig) -> TrainResult:
    """Run (or resume) the configured training job; see the module docstring."""
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed

    world = int(os.environ.get("WORLD_SIZE", "1"))
    arch, parallel = validate_for_launch(cfg, world)
    # A caller that set up torch.distributed keeps its process group (several runs in one
    # process); otherwise the group lives as long as this run.
    owns_group = not torch.distributed.is_initialized()
    init_distributed(parallel, seed=cfg.run.seed)
    try:
        return _train(cfg, arch, parallel)
    finally:
        if owns_group:
            destroy_distributed()
        else:
            from megatron.core import parallel_state

            parallel_state.destroy_model_parallel()


def _train(cfg: TrainingJobConfig, arch: ExaoneArch, parallel: ParallelConfig) -> TrainResult:
    from megatron.core import parallel_state as ps

    from nemo_exaone.model.builder import build_model_chunks
    from nemo_exaone.training.batches import GlobalBatches
    from nemo_exaone.training.iteration import run_iteration
    from nemo_exaone.training.optimizer import OptimizerSettings, build_optimizer, wrap_ddp
    from nemo_exaone.training.peak_flops import device_peak_tflops
    from nemo_exaone.training.schedule import build_scheduler, current_lr

    if cfg.model.recompute_granularity:
        from nemo_exaone.training.megatron_compat import cpu_causal_mask_for_recompute

        cpu_causal_mask_for_recompute()
    rank = torch.distributed.get_rank()
    run_dir = Path(cfg.run.dir)
    ckpt_root = Path(cfg.checkpoint.dir) if cfg.checkpoint.dir else run_dir / "checkpoints"
    resume_path = latest_checkpoint(ckpt_root) if cfg.checkpoint.resume else None
    start_step = 0
    if resume_path is not None:
        from nemo_exaone.training.checkpointing import loaded_arch_summary

        start_step = int(loaded_arch_summary(resume_path).get("train_state", {}).get("step", 0))
    if rank == 0 and start_step and (run_dir / "metrics.jsonl").exists():
        truncate_metrics(run_dir, start_step)
    log = MetricsLogger(run_dir, cfg.train.max_steps, enabled=rank == 0,
                        progress=cfg.logging.progress, tensorboard=cfg.logging.tensorboard,
                        start_step=start_step)
    try:
        chunks = build_model_chunks(arch, parallel, cfg.precision, _model_options(cfg))
        init_path = None
        if resume_path is None and cfg.init.checkpoint:
            init_path = resolve_checkpoint(cfg.init.checkpoint)
            if cfg.init.load == "weights":
                changes = load_weights(init_path, chunks, arch)
                log.event("init_weights", path=str(init_path), arch_changes=changes)
        chunks = wrap_ddp(chunks, parallel)
        settings = OptimizerSettings(**dataclasses.asdict(cfg.optimizer))
        optimizer = build_optimizer(chunks, settings, parallel, cfg.precision)
        scheduler = build_scheduler(optimizer, cfg.schedule, cfg.optimizer, cfg.train.max_steps)
        state = TrainState(stage=cfg.stage.name)
        if resume_path is not None:
            state = load_training_state(resume_path, chunks, optimizer, scheduler, arch)
            log.event("resume", path=str(resume_path), step=state.step,
                      consumed_samples=state.consumed_samples)
        elif init_path is not None and cfg.init.load == "full":
            changes = load_weights(init_path, chunks, arch, optimizer=optimizer)
            log.event("init_full", path=str(init_path), arch_changes=changes)

        source, summary = _build_source(cfg, arch, run_dir)
        log.event("data", **dataclasses.asdict(summary))
        objective, extra_keys = _build_objective(cfg, parallel, log)
        batches = GlobalBatches(source, cfg.train.global_batch_size, cfg.train.micro_batch_size,
                                ps.get_data_parallel_rank(), ps.get_data_parallel_world_size(),
                                collate_fn=getattr(objective, "collate", None))
        from nemo_exaone.training.checkpointing import Layout

        log.event("layout", **dataclasses.asdict(Layout.current()),
                  sequence_parallel=parallel.sequence_parallel,
                  distributed_optimizer=parallel.use_distributed_optimizer,
                  micro_batches_per_step=batches.num_microbatches)

        flops_per_token = training_flops_per_token(arch, cfg.train.seq_length)
        peak = device_peak_tflops(cfg.precision.dtype, cfg.precision.fp8,
                                  cfg.logging.peak_tflops) * 1e12 * torch.distributed.get_world_size()
        saver = CheckpointSaver(ckpt_root, arch, async_save=cfg.checkpoint.async_save,
                                keep_last=cfg.checkpoint.keep_last)
        result = TrainResult(state=state,
                             resumed_from=str(resume_path) if resume_path else None,
                             last_checkpoint=str(resume_path) if resume_path else None)
        spikes = LossSpikeDetector(cfg.safety.spike_factor, cfg.safety.spike_window)
        from nemo_exaone.training.megatron_compat import start_checkpoint_writer_ignoring_sigterm

        start_checkpoint_writer_ignoring_sigterm()
        sigterm = _SigtermFlag()
        consecutive_skips = 0
        tokens_per_step = cfg.train.global_batch_size * cfg.train.seq_length
        saved_at = state.step if resume_path else -1
        try:
            while state.step < cfg.train.max_steps:
                step = state.step + 1
                objective.inject_nonfinite = step in cfg.safety.inject_nan_at_steps
                lr = current_lr(optimizer)
                start = time.perf_counter()
                out = run_iteration(chunks, optimizer,
                                    batches.microbatches(state.consumed_samples),
                                    cfg.train.micro_batch_size, cfg.train.seq_length,
                                    objective.forward_step, objective.loss_key, extra_keys)
                elapsed = time.perf_counter() - start
                state.step = step
                state.consumed_samples += cfg.train.global_batch_size
                state.trained_tokens += tokens_per_step
                if out.applied:
                    scheduler.step(1)
                    consecutive_skips = 0
                else:
                    state.skipped_steps += 1
                    consecutive_skips += 1
                spike, median = (False, None)
                if out.applied:
                    spike, median = spikes.update(out.loss)
                tokens_per_s = tokens_per_step / elapsed
                record = {"step": step, "loss": out.loss, "lr": lr, "grad_norm": out.grad_norm,
                          "tokens_per_s": tokens_per_s,
                          "mfu": tokens_per_s * flops_per_token / peak,
                          "step_time_s": elapsed, "num_tokens": out.num_tokens,
                          "consumed_samples": state.consumed_samples,
                          "skipped": not out.applied, "skipped_total": state.skipped_steps,
                          **{f"loss/{k.replace(' loss', '')}": v for k, v in out.extra.items()}}
                if spike:
                    record["loss_spike"] = True
                    log.event("loss_spike", step=step, loss=out.loss, running_median=median,
                              factor=cfg.safety.spike_factor)
                result.metrics.append(record)
                if step % cfg.logging.log_interval == 0 or not out.applied or spike \
                        or step == cfg.train.max_steps:
                    log.log_step(record)
                if not out.applied:
                    log.event("nonfinite_step", step=step, loss=out.loss,
                              policy=cfg.safety.on_nonfinite, skipped_total=state.skipped_steps)
                    too_many = consecutive_skips > cfg.safety.max_consecutive_skips
                    if cfg.safety.on_nonfinite == "stop" or too_many:
                        reason = ("safety.on_nonfinite=stop" if not too_many else
                                  f"{consecutive_skips} consecutive non-finite steps > "
                                  f"safety.max_consecutive_skips")
                        saver.finalize(blocking=True)  # publish a save still in flight
                        raise NonFiniteTrainingError(nonfinite_message(
                            step, out.loss, out.grad_norm, reason, result.last_checkpoint))
                if cfg.checkpoint.save_interval and step % cfg.checkpoint.save_interval == 0:
                    result.last_checkpoint = str(saver.save(step, chunks, optimizer, scheduler,
                                                            state))
                    saved_at = step
                    log.event("checkpoint", step=step, path=result.last_checkpoint)
                saver.finalize()
                if sigterm.any_rank():
                    if saved_at != step:
                        result.last_checkpoint = str(saver.save(step, chunks, optimizer,
                                                                scheduler, state))
                        saved_at = step
                    saver.finalize(blocking=True)
                    log.event("sigterm", step=step, checkpoint=result.last_checkpoint)
                    result.terminated = True
                    return result
            if cfg.checkpoint.save_at_end and saved_at != state.step:
                result.last_checkpoint = str(saver.save(state.step, chunks, optimizer, scheduler,
                                                        state))
                log.event("checkpoint", step=state.step, path=result.last_checkpoint)
            saver.finalize(blocking=True)
            return result
        finally:
            sigterm.restore()
    finally:
        log.close()


def _build_source(cfg: TrainingJobConfig, arch: ExaoneArch, run_dir: Path):
    """Rank 0 prepares files (shipped corpus) first; then every rank builds the datasets
    together (Megatron's dataset builder synchronises ranks itself)."""
    from nemo_exaone.training.data_sources import build_sample_source, prepare_data

    if torch.distributed.get_rank() == 0:
        prepare_data(cfg.data, arch, run_dir)
    torch.distributed.barrier()
    num_samples = cfg.train.max_steps * cfg.train.global_batch_size
    return build_sample_source(cfg.data, cfg.train.seq_length, arch, run_dir, num_samples)
