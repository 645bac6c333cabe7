"""Settings of one training job, as dataclasses: the schema of the Hydra configs in ``nemo_exaone/conf/``.

One tree serves every stage (core pretraining, continued/long-context pretraining, annealing,
distillation; later SFT, reward models, DPO): stages differ by data, schedule, how they are
initialised (``init``) and the objective they plug into the loop (``stage.objective``).
Hydra YAML may only set fields declared here; OmegaConf rejects any other key and names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nemo_exaone.config.errors import ConfigError
from nemo_exaone.config.parallel import ParallelConfig, PrecisionConfig
from nemo_exaone.config.presets import ARCH_FIELD_NAMES, ExaoneArch, get_preset
from nemo_exaone.training.optimizer import OptimizerSettings

# Adam(W) through Megatron-Core's optimizer; ``lr`` is the schedule's peak.
OptimizerConfig = OptimizerSettings

OBJECTIVES = ("lm", "distill", "reward", "dpo")
SCHEDULE_STYLES = ("cosine", "wsd", "constant", "linear")
WSD_DECAY_STYLES = ("linear", "cosine", "exponential", "minus_sqrt")
DATA_SOURCES = ("indexed", "shipped", "synthetic", "preference", "chat")
DOCUMENT_MODES = ("split", "whole")
TOO_LONG_POLICIES = ("skip", "truncate", "error")
SHIPPED_SPLITS = ("pretrain", "continued", "hq")
INIT_LOADS = ("weights", "full")
NONFINITE_POLICIES = ("skip", "stop")
PROGRESS_MODES = ("auto", "bar", "lines", "none")
DISTILL_LOSSES = ("kd", "afm")


@dataclass
class RunConfig:
    """Where the run lives and how it is seeded."""

    name: str = "pretrain"
    dir: str = "runs/${run.name}"  # metrics.jsonl, config.yaml, checkpoints/ go here
    seed: int = 1234


@dataclass
class ModelConfig:
    """Architecture (a preset plus field overrides) and how the model computes."""

    preset: str = "exaone3.5-2.4b"
    # ExaoneArch fields to change, e.g. {num_layers: 8, rope_theta: 5.0e6,
    # max_position_embeddings: 65536}; rope_scaling: false removes RoPE scaling.
    arch: dict[str, Any] = field(default_factory=dict)
    recompute_granularity: str | None = None  # null | selective | full
    recompute_method: str | None = None  # with full: uniform | block
    recompute_num_layers: int | None = None
    spec: str | None = None  # null: Transformer Engine on CUDA, local spec otherwise
    # torch.compile each decoder layer (fused RMSNorm/RoPE/SwiGLU; local spec, TP=1). Faster
    # steps after a compilation of tens of seconds at the first step.
    compile: bool = False

    def build_arch(self, init_checkpoint: str | None = None) -> ExaoneArch:
        """The run's architecture. ``preset: from_checkpoint`` takes the one recorded in
        ``init_checkpoint``; any other preset must agree with that checkpoint on every field
        ``arch`` does not override (RoPE and special token ids included)."""
        from nemo_exaone.checkpoint.identity import (
            FROM_CHECKPOINT,
            check_preset_matches_checkpoint,
            checkpoint_arch,
        )

        if self.preset == FROM_CHECKPOINT:
            if not init_checkpoint:
                raise ConfigError(f"model.preset={FROM_CHECKPOINT} takes the architecture from "
                                  "init.checkpoint, which is not set")
            base = checkpoint_arch(init_checkpoint)
            return resolve_arch(FROM_CHECKPOINT, self.arch, "model.arch", base=base)
        arch = resolve_arch(self.preset, self.arch, "model.arch")
        if init_checkpoint:
            check_preset_matches_checkpoint(arch, init_checkpoint, set(self.arch or {}))
        return arch


@dataclass
class DatasetSpec:
    """One Megatron indexed dataset (``prefix.bin`` / ``prefix.idx``) and its blend weight."""

    prefix: str = "???"
    weight: float | None = None  # null: proportional to the dataset's token count


@dataclass
class DataConfig:
    """What the loop reads: a weighted blend of indexed datasets, plus an optional replay blend.

    Datasets come from :mod:`nemo_exaone.data` (Megatron's GPT datasets for ``split``, its
    whole-document datasets for ``whole``); the blend/replay arithmetic is its ``BlendConfig``.
    """

    source: str = "indexed"  # indexed | shipped (prepare the bundled corpus) | synthetic
    blend: list[DatasetSpec] = field(default_factory=list)
    # Replay of an earlier stage's data (continued pretraining): this share of the tokens
    # comes from ``replay``, the rest from ``blend``.
    replay: list[DatasetSpec] = field(default_factory=list)
    replay_fraction: float = 0.0
    # split: documents concatenated and cut every seq_length tokens (Megatron GPT dataset);
    # whole: documents never cut (long-context stage); packed several to a sample unless
    # pack_documents=false; a document longer than the sample is skipped or truncated.
    documents: str = "split"
    pack_documents: bool = True
    # whole documents, chats: skip (counted) | truncate | error (refused, naming it);
    # preference pairs: skip | error (never cut)
    too_long_documents: str = "skip"
    tokenizer_dir: str | None = None  # needed by documents=split (EOD/pad ids); shipped: made
    shuffle: bool = True
    seed: int = 1234
    # source=shipped: which part of nemo_exaone/assets/data/corpus.jsonl, and where the
    # tokenizer and indexed datasets are prepared (shared by the stages that name it).
    shipped_split: str = "pretrain"  # pretrain | continued | hq
    prepare_dir: str | None = None  # null: <run.dir>/data
    # source=preference (reward model, DPO): NeMo-Aligner's DPO JSONL ({prompt,
    # chosen_response, rejected_response}); null: the toy pairs made from the shipped
    # prompts (nemo_exaone.alignment.preference_data), with the tiny tokenizer when
    # tokenizer_dir is null too.
    preference_file: str | None = None
    # source=chat (SFT): chat JSONL files (messages, NeMo-Aligner SFT chat or TRL
    # prompt/completion; nemo_exaone.data.sft_datasets); empty: the shipped chat_sft.jsonl.
    # Whole conversations packed (pack_documents), too long ones skipped or truncated
    # (too_long_documents); loss on assistant tokens only, no attention across conversations.
    chat_files: list[str] = field(default_factory=list)


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, run by Megatron-Core's ``OptimizerParamScheduler``."""

    style: str = "cosine"  # cosine | wsd (warmup-stable-decay) | constant | linear
    warmup_steps: int = 0
    init_lr: float = 0.0  # learning rate at step 0 of the warmup
    decay_steps: int | None = None  # null: train.max_steps (min_lr reached at the end)
    wsd_decay_steps: int | None = None  # wsd: length of the final decay; null: a fraction
    wsd_decay_fraction: float = 0.2
    wsd_decay_style: str = "linear"  # linear | cosine | exponential | minus_sqrt


@dataclass
class TrainConfig:
    """Batch geometry and length of the run."""

    max_steps: int = 100
    micro_batch_size: int = 1
    global_batch_size: int = 8  # samples per optimizer step, over all data-parallel ranks
    seq_length: int = 4096
    # With tensor parallelism, switch sequence parallelism on from this length (long context
    # needs it to fit activations); null: use parallel.sequence_parallel as given.
    sequence_parallel_from_length: int | None = None


@dataclass
class CheckpointConfig:
    """Distributed checkpoints of the full training state, for exact resume."""

    dir: str | None = None  # null: <run.dir>/checkpoints
    save_interval: int = 0  # every N steps; 0: only at the end
    save_at_end: bool = True
    resume: bool = True  # continue from <dir>/latest when it exists
    # A damaged latest checkpoint (file missing, truncated, unreadable): resume from the
    # newest intact one with a warning; false: stop with an error naming the file.
    fallback: bool = True
    async_save: bool = True  # write in the background while training continues
    keep_last: int | None = None  # delete older checkpoints (null: keep all)


@dataclass
class InitConfig:
    """Start a new stage from a previous stage's (or the HF converter's) checkpoint."""

    checkpoint: str | None = None  # run dir, checkpoints dir (uses latest) or checkpoint dir
    load: str = "weights"  # weights | full (weights + optimizer state; step and schedule restart)


@dataclass
class SafetyConfig:
    """What to do with non-finite losses/gradients and how to flag loss spikes."""

    on_nonfinite: str = "skip"  # skip (count, no update) | stop (keep the last good checkpoint)
    max_consecutive_skips: int = 10  # then stop anyway
    spike_factor: float = 5.0  # a loss above factor x running median is a spike
    spike_window: int = 50
    # Fault injection for tests and drills: the loss at these steps is made NaN.
    inject_nan_at_steps: list[int] = field(default_factory=list)


@dataclass
class LoggingConfig:
    log_interval: int = 1
    progress: str = "auto"  # auto (bar on a terminal, lines otherwise) | bar | lines | none
    tensorboard: bool = True  # when the tensorboard package is installed
    peak_tflops: float | None = None  # per GPU / per CPU host; null: datasheet / CPU theoretical


@dataclass
class DistillConfig:
    """Knowledge distillation from a teacher of the same tokenizer (any size)."""

    teacher_checkpoint: str | None = None  # weights only; run/checkpoints/checkpoint dir
    teacher_preset: str | None = None  # null: the architecture recorded in the checkpoint
    teacher_arch: dict[str, Any] = field(default_factory=dict)
    loss: str = "kd"  # kd: a*CE + (1-a)*T^2*KL(teacher||student) | afm: soft target
    alpha: float = 0.5
    temperature: float = 1.0
    afm_teacher_weight: float = 0.9  # afm: target = w*onehot(teacher top-1) + (1-w)*onehot(label)

    def build_teacher_arch(self) -> ExaoneArch:
        """The teacher's architecture: from its checkpoint's metadata unless a preset is
        given (``teacher_arch`` overrides apply to a preset only)."""
        if self.teacher_preset:
            return resolve_arch(self.teacher_preset, self.teacher_arch, "distill.teacher_arch")
        if not self.teacher_checkpoint:
            raise ConfigError("stage.objective=distill needs distill.teacher_checkpoint (the "
                             "teacher's architecture is read from it) or distill.teacher_preset")
        from nemo_exaone.checkpoint.locate import resolve_checkpoint
        from nemo_exaone.checkpoint.metadata import read_checkpoint_arch

        return read_checkpoint_arch(resolve_checkpoint(self.teacher_checkpoint)).replace(
            name="teacher")


@dataclass
class DPOStageConfig:
    """One stage of a multi-stage preference run (alignment.stages); null: the job's value."""

    name: str = "M1"
    max_steps: int | None = None  # null: train.max_steps
    lr: float | None = None  # null: optimizer.lr (min_lr scaled with it)
    preference_loss: str | None = None  # null: dpo.preference_loss
    # Online DPO (EXAONE 3.0): pairs regenerated from the current policy's samples, scored by
    # the task's rule (best and worst of samples_per_prompt) on the train prompts.
    online: bool = False
    samples_per_prompt: int = 4
    temperature: float = 1.0
    max_prompts: int | None = None  # online: the first N train prompts (null: all)


@dataclass
class DPOConfig:
    """Preference optimization (``stage.objective=dpo``), with NeMo-Aligner's ``dpo`` keys.

    ``preference_loss``: dpo | ipo | rpo_sq | rpo_fwd_kl | rpo_bwd_kl | simpo (SimPO is
    reference-free and length-normalised; its beta is ``simpo_beta``, or
    ``ref_policy_kl_penalty`` when that is null, its margin ``simpo_gamma``: SimPO's beta is a
    reward scale of order 1-10, DPO's a KL coefficient of order 0.1, so a recipe that may run
    either loss sets both). The reference is ``init.checkpoint``; ``reference``: cache (log-probs
    computed once, stored next to the data) | on_the_fly (frozen reference every step).
    """

    preference_loss: str = "dpo"
    ref_policy_kl_penalty: float = 0.1
    preference_average_log_probs: bool = False
    sft_average_log_probs: bool | None = None
    preference_loss_weight: float = 1.0
    sft_loss_weight: float = 0.0
    gt_reward_scale: float = 1.0
    simpo_gamma: float = 0.5
    simpo_beta: float | None = None  # null: ref_policy_kl_penalty
    reference: str = "cache"
    # The rule-checkable evidence task (nemo_exaone.alignment.synthetic_task), written under
    # data.prepare_dir: "instructions" | null (data.preference_file as given). With a task,
    # examples/dpo.py makes M0 by SFT when init.checkpoint is null and writes eval.json.
    task: str | None = None
    task_seed: int = 0
    sft_steps: int = 200  # the on-the-fly SFT run (<run.dir>/sft) that makes M0
    sft_lr: float = 3.0e-3
    sft_compliance: float = 0.5  # share of SFT answers that follow their instruction
    eval_pairs: int = 96  # held-out pairs (and prompts for greedy generation)
    eval_max_new_tokens: int = 32  # 0: no generation (behaviour rate not measured)
    # M0 -> M1 -> M2 ...: each stage starts from (and, DPO, is referenced to) the previous
    # one's final checkpoint; empty: one stage, the job itself.
    stages: list[DPOStageConfig] = field(default_factory=list)


@dataclass
class StageConfig:
    name: str = "pretrain"
    objective: str = "lm"  # lm (pretraining stages and SFT) | distill | reward | dpo


@dataclass
class TrainingJobConfig:
    run: RunConfig = field(default_factory=RunConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    init: InitConfig = field(default_factory=InitConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)


_ARCH_FIELDS = ARCH_FIELD_NAMES  # hf_* bookkeeping (spelling of the source) is not overridable


def resolve_arch(preset: str, overrides: dict[str, Any], where: str,
                 base: ExaoneArch | None = None) -> ExaoneArch:
    """``get_preset(preset)`` (or ``base``) with ``overrides`` applied; unknown fields are named.

    Any invalid value (an unknown preset, a field the architecture refuses) is a
    :class:`ConfigError` naming ``where``."""
    try:
        return _resolve_arch(preset, overrides, where, base)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"{where} (preset {preset!r}): {exc}") from exc


def _resolve_arch(preset: str, overrides: dict[str, Any], where: str,
                  base: ExaoneArch | None) -> ExaoneArch:
    arch = base if base is not None else get_preset(preset)
    changes = dict(overrides or {})
    unknown = sorted(set(changes) - set(_ARCH_FIELDS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]} is not an architecture field; valid fields: "
                         f"{', '.join(_ARCH_FIELDS)}")
    if "rope_scaling" in changes and changes["rope_scaling"] in (False, "none", {}):
        changes["rope_scaling"] = None
    if changes.get("rope_scaling"):
        changes["rope_scaling"] = {**(arch.rope_scaling or {"rope_type": "llama3"}),
                                   **dict(changes["rope_scaling"])}
    for key in ("rope_theta",):
        if key in changes:
            changes[key] = float(changes[key])
    return arch.replace(**changes) if changes else arch


def _choice(where: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{where}={value!r}: choose one of {', '.join(map(str, choices))}")


def validate_job(cfg: TrainingJobConfig) -> None:
    """Check choices and batch arithmetic that do not need the model or the process group."""
    _choice("stage.objective", cfg.stage.objective, OBJECTIVES)
    _choice("schedule.style", cfg.schedule.style, SCHEDULE_STYLES)
    _choice("schedule.wsd_decay_style", cfg.schedule.wsd_decay_style, WSD_DECAY_STYLES)
    _choice("data.source", cfg.data.source, DATA_SOURCES)
    _choice("data.documents", cfg.data.documents, DOCUMENT_MODES)
    _choice("data.too_long_documents", cfg.data.too_long_documents, TOO_LONG_POLICIES)
    if cfg.data.source == "preference" and cfg.data.too_long_documents == "truncate":
        raise ConfigError("data.too_long_documents=truncate: preference pairs are never cut "
                          "(a cut response is compared without its end); use skip or error")
    _choice("data.shipped_split", cfg.data.shipped_split, SHIPPED_SPLITS)
    _choice("init.load", cfg.init.load, INIT_LOADS)
    _choice("safety.on_nonfinite", cfg.safety.on_nonfinite, NONFINITE_POLICIES)
    _choice("logging.progress", cfg.logging.progress, PROGRESS_MODES)
    _choice("distill.loss", cfg.distill.loss, DISTILL_LOSSES)
    t = cfg.train
    for name in ("max_steps", "micro_batch_size", "global_batch_size", "seq_length"):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name}={getattr(t, name)} must be >= 1")
    if t.global_batch_size % t.micro_batch_size:
        raise ConfigError(f"train.global_batch_size={t.global_batch_size} is not divisible by "
                         f"train.micro_batch_size={t.micro_batch_size}")
    if not 0.0 <= cfg.data.replay_fraction < 1.0:
        raise ConfigError(f"data.replay_fraction={cfg.data.replay_fraction} must be in [0, 1)")
    if cfg.data.replay_fraction > 0 and not cfg.data.replay and cfg.data.source == "indexed":
        raise ConfigError("data.replay_fraction > 0 needs data.replay datasets")
    if (cfg.stage.objective in ("reward", "dpo")) != (cfg.data.source == "preference"):
        raise ConfigError(f"stage.objective={cfg.stage.objective} with data.source="
                          f"{cfg.data.source}: the reward and dpo objectives read preference "
                          "pairs (data.source=preference) and only they do")
    _choice("dpo.reference", cfg.dpo.reference, ("cache", "on_the_fly"))
    from nemo_exaone.alignment.losses import PREFERENCE_LOSSES

    _choice("dpo.preference_loss", cfg.dpo.preference_loss, PREFERENCE_LOSSES)
    _choice("dpo.task", cfg.dpo.task, (None, "instructions"))
    for i, stage in enumerate(cfg.dpo.stages):
        if stage.preference_loss is not None:
            _choice(f"dpo.stages[{i}].preference_loss", stage.preference_loss,
                    PREFERENCE_LOSSES)
        if stage.samples_per_prompt < 2:
            raise ConfigError(f"dpo.stages[{i}].samples_per_prompt={stage.samples_per_prompt}"
                              " must be >= 2 (a best and a worst sample)")
    if not 0.0 <= cfg.distill.alpha <= 1.0:
        raise ConfigError(f"distill.alpha={cfg.distill.alpha} must be in [0, 1]")
    if cfg.distill.temperature <= 0:
        raise ConfigError(f"distill.temperature={cfg.distill.temperature} must be > 0")
    if cfg.optimizer.min_lr > cfg.optimizer.lr:
        raise ConfigError(f"optimizer.min_lr={cfg.optimizer.min_lr} exceeds optimizer.lr="
                         f"{cfg.optimizer.lr}")
