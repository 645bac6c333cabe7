"""The training loop every stage runs: Megatron-Core model, DDP, optimizer, schedules.

``train(cfg)`` builds the model for the configured layout, initialises it (fresh, from a
previous stage, or by resuming this run's latest checkpoint), then runs optimizer steps
until ``train.max_steps``: data by consumed-sample offset, the stage's objective, the LR
schedule, non-finite checks, logging, periodic atomic checkpoints, and a clean checkpoint
and exit on SIGTERM. Launch it with ``python`` (one process) or ``torchrun`` (many): the
code is the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from nemo_exaone.checkpoint.identity import identity_for_run
from nemo_exaone.checkpoint.locate import checkpoint_step, locate_checkpoint, newest_intact
from nemo_exaone.checkpoint.mcore_checkpoint import load_stage_weights
from nemo_exaone.checkpoint.training_state import (
    CheckpointSaver,
    Layout,
    TrainState,
    load_training_state,
)
from nemo_exaone.config.parallel import ParallelConfig, validate_parallel, validate_precision
from nemo_exaone.config.presets import ExaoneArch
from nemo_exaone.runtime.machine import check_machine
from nemo_exaone.runtime.quiet import missing_kernels_note
from nemo_exaone.training.config import TrainingJobConfig, validate_job
from nemo_exaone.training.flops import training_flops_per_token
from nemo_exaone.training.metrics import MetricsLogger, checked_mfu, truncate_metrics
from nemo_exaone.training.safety import LossSpikeDetector, NonFiniteTrainingError, nonfinite_message


@dataclass
class TrainResult:
    """What a finished (or stopped) run reports to its caller, identical on every rank."""

    state: TrainState
    metrics: list[dict] = field(default_factory=list)  # this process's records (all steps run)
    terminated: bool = False  # stopped early by SIGTERM (after saving)
    last_checkpoint: str | None = None
    resumed_from: str | None = None
    # The run this result is of: a pipeline (SFT, then preference stages) returns its last
    # run's, which need not be the job the command was given.
    run_dir: str | None = None
    max_steps: int | None = None


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
    arch = cfg.model.build_arch(cfg.init.checkpoint)
    parallel = effective_parallel(cfg)
    validate_parallel(arch, parallel, world_size, seq_length=cfg.train.seq_length)
    validate_precision(cfg.precision)
    check_machine(parallel, cfg.precision)
    from nemo_exaone.model.builder import check_compile

    check_compile(_model_options(cfg), parallel)
    dp = parallel.data_parallel_size(world_size)
    per_step = cfg.train.micro_batch_size * dp
    if cfg.train.global_batch_size % per_step:
        raise ValueError(
            f"train.global_batch_size={cfg.train.global_batch_size} is not divisible by "
            f"micro_batch_size x data_parallel_size = {cfg.train.micro_batch_size} x {dp}")
    if cfg.stage.objective == "dpo" and parallel.pipeline_model_parallel_size > 1:
        raise ValueError("stage.objective=dpo runs the reference beside the policy on each "
                         "rank; use pipeline_model_parallel_size=1 (TP and DP work)")
    if cfg.stage.objective == "reward" and parallel.pipeline_model_parallel_size > 1:
        raise ValueError("stage.objective=reward puts its scalar head on the last stage's "
                         "final hidden state; use pipeline_model_parallel_size=1 (TP and DP "
                         "work)")
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
        compile=cfg.model.compile,
        extra_config={"calculate_per_token_loss": True},
    )


def _build_objective(cfg: TrainingJobConfig, parallel: ParallelConfig, run_log, arch=None,
                     source=None):
    from nemo_exaone.training.objectives import (
        DistillationLossConfig,
        DistillationObjective,
        LanguageModelObjective,
    )

    if cfg.stage.objective == "lm":
        return LanguageModelObjective(spec=cfg.model.spec), ()
    if cfg.stage.objective == "reward":
        from nemo_exaone.alignment.reward_model import RewardModelObjective

        return RewardModelObjective(), RewardModelObjective.extra_keys
    if cfg.stage.objective == "dpo":
        from nemo_exaone.alignment.dpo import PreferenceObjective, build_preference_objective

        objective = build_preference_objective(cfg, arch, parallel, _model_options(cfg),
                                               source, run_log)
        return objective, PreferenceObjective.extra_keys
    from nemo_exaone.model.builder import build_model_chunks

    teacher_arch = cfg.distill.build_teacher_arch()
    (teacher,) = build_model_chunks(teacher_arch, parallel, cfg.precision, _model_options(cfg))
    if cfg.distill.teacher_checkpoint:
        found = locate_checkpoint(cfg.distill.teacher_checkpoint)
        load_stage_weights([teacher], found.path, teacher_arch)
        run_log.event("teacher_loaded", path=str(found.path), preset=teacher_arch.name,
                      note=found.note)
    else:
        run_log.event("teacher_random", note="distill.teacher_checkpoint is null: the teacher "
                      "keeps its random initialisation (smoke test only)")
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    loss_cfg = DistillationLossConfig(loss=cfg.distill.loss, alpha=cfg.distill.alpha,
                                      temperature=cfg.distill.temperature,
                                      afm_teacher_weight=cfg.distill.afm_teacher_weight)
    return DistillationObjective(teacher, loss_cfg, spec=cfg.model.spec), ("lm loss",)


class _StopFlag:
    """Records SIGTERM or a first Ctrl-C (SIGINT); the loop saves and exits at the end of the
    current step. A second Ctrl-C aborts at once (KeyboardInterrupt), without saving."""

    def __init__(self) -> None:
        self.raised = False
        self.signal_name: str | None = None
        self._previous: dict = {}
        if _in_main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if signum == signal.SIGINT and self.raised:
            raise KeyboardInterrupt("second Ctrl-C: stopped without saving")
        if signum == signal.SIGINT:
            print("\nCtrl-C: saving a checkpoint at the end of this step, then stopping "
                  "(Ctrl-C again to abort without saving)", flush=True)
        self.raised = True
        self.signal_name = signal.Signals(signum).name

    def any_rank(self) -> bool:
        from nemo_exaone.training.iteration import comm_device

        value = torch.tensor([1.0 if self.raised else 0.0], device=comm_device())
        if torch.distributed.get_world_size() > 1:
            torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value[0] > 0)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


_HELD_RUN_LOCKS: set[Path] = set()


@contextlib.contextmanager
def run_directory_lock(run_dir: str | Path) -> Iterator[None]:
    """One training per run directory: hold ``<run.dir>/.lock`` (a second run is refused,
    naming the holder). Re-entrant within a process, so an entry point may take it before
    it writes into the run directory and the loop takes it again."""
    from nemo_exaone.runtime.outputs import output_lock

    path = Path(run_dir).absolute()
    if path in _HELD_RUN_LOCKS:
        yield
        return
    with output_lock(path, inside=True):
        _HELD_RUN_LOCKS.add(path)
        try:
            yield
        finally:
            _HELD_RUN_LOCKS.discard(path)


def _lock_run_directory(stack: contextlib.ExitStack, run_dir: str) -> None:
    """Rank 0 takes the run directory's lock; every rank stops together if it is held."""
    from nemo_exaone.runtime.outputs import OutputLockedError

    error = None
    if torch.distributed.get_rank() == 0:
        try:
            stack.enter_context(run_directory_lock(run_dir))
        except OutputLockedError as exc:
            error = exc
    flag = [str(error) if error else None]
    if torch.distributed.get_world_size() > 1:
        torch.distributed.broadcast_object_list(flag, src=0)
    if flag[0] is not None:
        raise error if error is not None else OutputLockedError(flag[0])


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
        with contextlib.ExitStack() as stack:
            _lock_run_directory(stack, cfg.run.dir)
            return _train(cfg, arch, parallel)
    finally:
        if owns_group:
            destroy_distributed()
        else:
            from megatron.core import parallel_state

            parallel_state.destroy_model_parallel()


def _train(cfg: TrainingJobConfig, arch: ExaoneArch, parallel: ParallelConfig) -> TrainResult:
    run_dir = Path(cfg.run.dir)
    ckpt_root = Path(cfg.checkpoint.dir) if cfg.checkpoint.dir else run_dir / "checkpoints"
    found = newest_intact(ckpt_root, fallback=cfg.checkpoint.fallback) \
        if cfg.checkpoint.resume else None
    resume_path = found.path if found else None
    start_step = checkpoint_step(resume_path) if resume_path else 0
    rank = torch.distributed.get_rank()
    if rank == 0 and found and found.skipped:
        # Printed, not warnings.warn: library-warning filters must never hide it.
        print(f"warning: resuming from {resume_path}, the newest intact checkpoint; passed "
              "over damaged: " + " | ".join(found.skipped), file=sys.stderr, flush=True)
    if rank == 0:
        truncate_metrics(run_dir, start_step)  # steps after the checkpoint are trained again
    log = MetricsLogger(run_dir, cfg.train.max_steps, enabled=rank == 0,
                        progress=cfg.logging.progress, tensorboard=cfg.logging.tensorboard,
                        start_step=start_step)
    try:
        if found and found.skipped:
            log.event("checkpoint_fallback", path=str(resume_path), skipped=found.skipped)
        return _Session(cfg, arch, parallel, log, ckpt_root, resume_path).run()
    finally:
        log.close()


class _Session:
    """One run of the loop: model, optimizer and data set up, then steps until the end."""

    def __init__(self, cfg: TrainingJobConfig, arch: ExaoneArch, parallel: ParallelConfig,
                 log: MetricsLogger, ckpt_root: Path, resume_path: Path | None) -> None:
        self.cfg, self.arch, self.parallel, self.log = cfg, arch, parallel, log
        self.resume_path = resume_path
        self._build_model_and_optimizer()
        self._initialise_state()
        self._build_data_and_objective()
        self.flops_per_token = training_flops_per_token(arch, cfg.train.seq_length)
        from nemo_exaone.training.peak_flops import job_peak_flops

        # The devices this job runs on (a CPU host's cores once, however many ranks share it).
        self.peak_flops = job_peak_flops(cfg.precision.dtype, cfg.precision.fp8,
                                         cfg.logging.peak_tflops,
                                         torch.distributed.get_world_size())
        self.saver = CheckpointSaver(ckpt_root, arch, async_save=cfg.checkpoint.async_save,
                                     keep_last=cfg.checkpoint.keep_last)
        # Every checkpoint carries the HF identity (config, tokenizer, remote code) of the one
        # this run resumes or starts from, or the tokenizer of a run from a preset.
        self.saver.identity = identity_for_run(self.resume_path or self.init_path,
                                               self.tokenizer_dir)
        self.log.event("hf_identity", origin=getattr(self.saver.identity, "origin", None))
        self.spikes = LossSpikeDetector(cfg.safety.spike_factor, cfg.safety.spike_window)
        last = str(resume_path) if resume_path else None
        self.result = TrainResult(state=self.state, resumed_from=last, last_checkpoint=last,
                                  run_dir=str(cfg.run.dir), max_steps=cfg.train.max_steps)
        self.saved_at = self.state.step if resume_path else -1
        self.consecutive_skips = 0
        self.steps_run = self.steps_applied = 0

    # ------------------------------------------------------------------ set-up
    def _build_model_and_optimizer(self) -> None:
        from nemo_exaone.model.builder import build_model_chunks
        from nemo_exaone.training.optimizer import OptimizerSettings, build_optimizer, wrap_ddp
        from nemo_exaone.training.schedule import build_scheduler

        cfg = self.cfg
        chunks = build_model_chunks(self.arch, self.parallel, cfg.precision, _model_options(cfg))
        self.init_path = None
        if self.resume_path is None and cfg.init.checkpoint:
            found = locate_checkpoint(cfg.init.checkpoint)
            self.init_path = found.path
            self.log.event("init_checkpoint", path=str(found.path), note=found.note)
            if cfg.init.load == "weights" and cfg.stage.objective != "reward":
                # before the optimizer copies the weights
                changes = load_stage_weights(chunks, self.init_path, self.arch)
                self.log.event("init_weights", path=str(self.init_path), arch_changes=changes)
        if cfg.stage.objective == "reward":  # the scalar head; an LM checkpoint loads under it
            from nemo_exaone.alignment.reward_model import init_reward_chunks

            load = self.init_path is not None and cfg.init.load == "weights"
            changes = init_reward_chunks(chunks, self.init_path, self.arch, load_weights=load)
            if load:
                self.log.event("init_weights", path=str(self.init_path), arch_changes=changes)
        self.chunks = wrap_ddp(chunks, self.parallel)
        settings = OptimizerSettings(**dataclasses.asdict(cfg.optimizer))
        self.optimizer = build_optimizer(self.chunks, settings, self.parallel, cfg.precision)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, cfg.optimizer,
                                         cfg.train.max_steps)

    def _initialise_state(self) -> None:
        self.state = TrainState(stage=self.cfg.stage.name)
        if self.resume_path is not None:
            self.state = load_training_state(self.resume_path, self.chunks, self.optimizer,
                                             self.scheduler, self.arch)
            self.log.event("resume", path=str(self.resume_path), step=self.state.step,
                           consumed_samples=self.state.consumed_samples)
        elif self.init_path is not None and self.cfg.init.load == "full":
            changes = load_stage_weights(self.chunks, self.init_path, self.arch,
                                         optimizer=self.optimizer)
            self.log.event("init_full", path=str(self.init_path), arch_changes=changes)

    def _build_data_and_objective(self) -> None:
        from megatron.core import parallel_state as ps

        from nemo_exaone.training.batches import GlobalBatches

        cfg = self.cfg
        source, summary = _build_source(cfg, self.arch, Path(cfg.run.dir))
        self.tokenizer_dir = getattr(summary, "tokenizer_dir", None)
        self.log.event("data", **dataclasses.asdict(summary))
        self.objective, self.extra_keys = _build_objective(cfg, self.parallel, self.log,
                                                           self.arch, source)
        self.batches = GlobalBatches(
            source, cfg.train.global_batch_size, cfg.train.micro_batch_size,
            ps.get_data_parallel_rank(), ps.get_data_parallel_world_size(),
            collate_fn=getattr(self.objective, "collate", None))
        self.log.event("layout", **dataclasses.asdict(Layout.current()),
                       sequence_parallel=self.parallel.sequence_parallel,
                       distributed_optimizer=self.parallel.use_distributed_optimizer,
                       micro_batches_per_step=self.batches.num_microbatches)
        note = missing_kernels_note()  # CUDA without TE: said once here; on a CPU, nothing
        if note:
            self.log.event("runtime", note=note)

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        from nemo_exaone.runtime.megatron_compat import start_checkpoint_writer_ignoring_sigterm

        start_checkpoint_writer_ignoring_sigterm()
        stop = _StopFlag()
        try:
            while self.state.step < self.cfg.train.max_steps:
                self._step()
                self.saver.finalize()
                if stop.any_rank():
                    self._save(final=True)
                    self.log.event("sigterm", step=self.state.step, signal=stop.signal_name,
                                   checkpoint=self.result.last_checkpoint)
                    self.result.terminated = True
                    return self.result
            self._check_some_step_applied()
            if self.cfg.checkpoint.save_at_end:
                self._save(final=True)
            self.saver.finalize(blocking=True)
            return self.result
        finally:
            stop.restore()

    def _step(self) -> None:
        from nemo_exaone.training.iteration import run_iteration
        from nemo_exaone.training.schedule import current_lr

        cfg, state = self.cfg, self.state
        step = state.step + 1
        self.objective.inject_nonfinite = step in cfg.safety.inject_nan_at_steps
        lr = current_lr(self.optimizer)
        start = time.perf_counter()
        out = run_iteration(self.chunks, self.optimizer,
                            self.batches.microbatches(state.consumed_samples),
                            cfg.train.micro_batch_size, cfg.train.seq_length,
                            self.objective.forward_step, self.objective.loss_key,
                            self.extra_keys)
        elapsed = time.perf_counter() - start
        state.step = step
        state.consumed_samples += cfg.train.global_batch_size
        state.trained_tokens += cfg.train.global_batch_size * cfg.train.seq_length
        self.steps_run += 1
        if out.applied:
            self.scheduler.step(1)  # a skipped update does not advance the schedule
            self.consecutive_skips = 0
            self.steps_applied += 1
        else:
            state.skipped_steps += 1
            self.consecutive_skips += 1
        record = self._record(step, out, lr, elapsed)
        self.result.metrics.append(record)
        if step % cfg.logging.log_interval == 0 or not out.applied \
                or record.get("loss_spike") or step == cfg.train.max_steps:
            self.log.log_step(record)
        if not out.applied:
            self._handle_nonfinite(step, out)
        if cfg.checkpoint.save_interval and step % cfg.checkpoint.save_interval == 0:
            self._save()

    def _record(self, step: int, out, lr: float, elapsed: float) -> dict:
        tokens_per_s = self.cfg.train.global_batch_size * self.cfg.train.seq_length / elapsed
        record = {"step": step, "loss": out.loss, "lr": lr, "grad_norm": out.grad_norm,
                  "tokens_per_s": tokens_per_s,
                  "mfu": checked_mfu(tokens_per_s * self.flops_per_token, self.peak_flops),
                  "step_time_s": elapsed, "num_tokens": out.num_tokens,
                  "consumed_samples": self.state.consumed_samples,
                  "skipped": not out.applied, "skipped_total": self.state.skipped_steps,
                  **{f"loss/{k.replace(' loss', '')}": v for k, v in out.extra.items()}}
        if out.applied:
            spike, median = self.spikes.update(out.loss)
            if spike:
                record["loss_spike"] = True
                self.log.event("loss_spike", step=step, loss=out.loss, running_median=median,
                               factor=self.cfg.safety.spike_factor)
        return record

    def _handle_nonfinite(self, step: int, out) -> None:
        safety = self.cfg.safety
        self.log.event("nonfinite_step", step=step, loss=out.loss, policy=safety.on_nonfinite,
                       skipped_total=self.state.skipped_steps)
        too_many = self.consecutive_skips > safety.max_consecutive_skips
        if safety.on_nonfinite != "stop" and not too_many:
            return
        reason = ("safety.on_nonfinite=stop" if not too_many else
                  f"{self.consecutive_skips} consecutive non-finite steps > "
                  "safety.max_consecutive_skips")
        self.saver.finalize(blocking=True)  # publish a save still in flight
        raise NonFiniteTrainingError(nonfinite_message(
            step, out.loss, out.grad_norm, reason, self.result.last_checkpoint))

    def _check_some_step_applied(self) -> None:
        """A run that skipped every step trained nothing: fail rather than report success
        (and leave ``latest`` on the last good checkpoint)."""
        if self.steps_run == 0 or self.steps_applied > 0:
            return
        safety = self.cfg.safety
        self.saver.finalize(blocking=True)
        raise NonFiniteTrainingError(
            f"every one of the {self.steps_run} steps of this run was non-finite and skipped "
            f"(safety.on_nonfinite={safety.on_nonfinite}; the limit safety."
            f"max_consecutive_skips={safety.max_consecutive_skips} was not reached before "
            f"train.max_steps={self.cfg.train.max_steps}): no update was applied. "
            + ("The last good checkpoint is " + self.result.last_checkpoint
               if self.result.last_checkpoint else "No checkpoint was written")
            + "; check the data and lower optimizer.lr")

    def _save(self, final: bool = False) -> None:
        """Checkpoint the current step (once); ``final`` also waits for it to be published."""
        step = self.state.step
        if self.saved_at != step:
            path = self.saver.save(step, self.chunks, self.optimizer, self.scheduler,
                                   self.state)
            self.result.last_checkpoint, self.saved_at = str(path), step
            self.log.event("checkpoint", step=step, path=str(path))
        if final:
            self.saver.finalize(blocking=True)


def _build_source(cfg: TrainingJobConfig, arch: ExaoneArch, run_dir: Path):
    """Rank 0 prepares files (shipped corpus) first; then every rank builds the datasets
    together (Megatron's dataset builder synchronises ranks itself)."""
    from nemo_exaone.training.data_sources import build_sample_source, prepare_data

    if torch.distributed.get_rank() == 0:
        prepare_data(cfg.data, arch, run_dir)
    torch.distributed.barrier()
    num_samples = cfg.train.max_steps * cfg.train.global_batch_size
    return build_sample_source(cfg.data, cfg.train.seq_length, arch, run_dir, num_samples)
