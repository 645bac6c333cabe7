"""Learning-rate schedules through Megatron-Core's ``OptimizerParamScheduler``.

The scheduler counts optimizer steps (increment 1 per applied update; a skipped step does not
advance it) and sets lr and weight decay on every param group. Its state is a small dict saved
in the checkpoint, so a resumed run continues the same curve.
"""

from __future__ import annotations

from nemo_exaone.training.config import OptimizerConfig, ScheduleConfig

_MEGATRON_STYLE = {"cosine": "cosine", "wsd": "WSD", "constant": "constant", "linear": "linear"}


def decay_steps(schedule: ScheduleConfig, max_steps: int) -> int:
    steps = schedule.decay_steps or max_steps
    # Megatron requires warmup < decay; a constant schedule never reaches the decay branch.
    return max(steps, schedule.warmup_steps + 1)


def wsd_decay_steps(schedule: ScheduleConfig, max_steps: int) -> int:
    total = decay_steps(schedule, max_steps)
    if schedule.wsd_decay_steps is not None:
        steps = schedule.wsd_decay_steps
    else:
        steps = round(schedule.wsd_decay_fraction * total)
    return max(1, min(steps, total - schedule.warmup_steps))


def build_scheduler(optimizer, schedule: ScheduleConfig, opt: OptimizerConfig, max_steps: int):
    """An ``OptimizerParamScheduler`` for ``schedule`` peaking at ``opt.lr``."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    if schedule.style not in _MEGATRON_STYLE:
        raise ValueError(f"schedule.style={schedule.style!r}: choose one of "
                         f"{', '.join(_MEGATRON_STYLE)}")
    if schedule.warmup_steps < 0:
        raise ValueError(f"schedule.warmup_steps={schedule.warmup_steps} must be >= 0")
    if schedule.init_lr > opt.lr:
        raise ValueError(f"schedule.init_lr={schedule.init_lr} exceeds optimizer.lr={opt.lr}")
    style = _MEGATRON_STYLE[schedule.style]
    return OptimizerParamScheduler(
        optimizer,
        init_lr=schedule.init_lr,
        max_lr=opt.lr,
        min_lr=opt.min_lr,
        lr_warmup_steps=schedule.warmup_steps,
        lr_decay_steps=decay_steps(schedule, max_steps),
        lr_decay_style=style,
        start_wd=opt.weight_decay,
        end_wd=opt.weight_decay,
        wd_incr_steps=max_steps,
        wd_incr_style="constant",
        use_checkpoint_opt_param_scheduler=False,
        override_opt_param_scheduler=True,
        wsd_decay_steps=wsd_decay_steps(schedule, max_steps) if style == "WSD" else None,
        lr_wsd_decay_style=schedule.wsd_decay_style if style == "WSD" else None,
    )


def current_lr(optimizer) -> float:
    """Learning rate the next update uses (first param group carrying one)."""
    for group in optimizer.param_groups:
        if "lr" in group:
            return float(group["lr"])
    return float("nan")
