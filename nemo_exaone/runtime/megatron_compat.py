"""A targeted fix for Megatron-Core's distributed optimizer without Apex/Transformer Engine.

Torch's Adam keeps a per-parameter ``step`` tensor next to its moments. When Megatron-Core
(0.16 and 0.19) loads a ``fully_reshardable`` distributed-optimizer checkpoint it copies
*every* entry of that per-parameter state from the checkpoint, but the checkpoint stores
``step`` once per param group (and restores it from there), so the copy fails with
``KeyError: 'step'``. With Apex/TE (fused Adam, no per-parameter step) nothing fails, which is
why only CPU runs meet it. The fix copies what the checkpoint holds and leaves ``step``, already
restored from the param groups, untouched. Applied once, only where Apex/TE are absent.
"""

from __future__ import annotations

_APPLIED = False


def fix_distributed_optimizer_step_loading() -> None:
    global _APPLIED
    if _APPLIED:
        return
    from megatron.core.optimizer import distrib_optimizer

    if getattr(distrib_optimizer, "HAVE_APEX_OR_TE", True):
        _APPLIED = True
        return
    cls = distrib_optimizer.DistributedOptimizer
    original = cls._set_main_param_and_optimizer_states

    def set_states_without_step(self, model_param, tensors):
        group_index, group_order = self.model_param_group_index_map[model_param]
        main_param = self.optimizer.param_groups[group_index]["params"][group_order]
        state = self.optimizer.state.get(main_param, {})
        if "step" not in state or "step" in tensors:
            return original(self, model_param, tensors)
        step = state.pop("step")
        try:
            return original(self, model_param, tensors)
        finally:
            state["step"] = step

    cls._set_main_param_and_optimizer_states = set_states_without_step
    _APPLIED = True


def unshare_adam_steps(optimizer) -> None:
    """Give every parameter its own Adam ``step`` tensor after a distributed-optimizer load.

    Megatron-Core's ``DistributedOptimizer.load_state_dict`` (without Apex/TE) assigns one
    ``step`` tensor object to all parameters; torch's Adam increments each parameter's step in
    place, so the shared counter would advance once per parameter per update and corrupt the
    bias correction from the first step after a resume.
    """
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if inner is None:
            continue
        for state in inner.state.values():
            step = state.get("step")
            if step is not None and hasattr(step, "clone"):
                state["step"] = step.clone()


def start_checkpoint_writer_ignoring_sigterm() -> None:
    """Start dist_checkpointing's writer-results process now, with SIGTERM and SIGINT ignored.

    Megatron's filesystem writer collects results through a ``multiprocessing`` Manager,
    a separate process started at the first save. Schedulers (SLURM, ``kill -TERM -PGID``)
    deliver SIGTERM to every process of the job, which killed that process and broke the
    very checkpoint the loop saves on SIGTERM. A process inherits "ignored" dispositions
    across exec, so creating the Manager while SIGTERM is ignored keeps it alive until the
    trainer itself shuts it down. Ctrl-C (SIGINT to the terminal's process group) is the
    same case. Main thread only (signals); a no-op elsewhere.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    getter = (getattr(filesystem_async, "get_write_results_queue", None)
              or getattr(filesystem_async, "_get_write_results_queue", None))
    if getter is None or getattr(filesystem_async, "_results_queue", None) is not None:
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM,
                                                                      signal.SIGINT)}
    try:
        getter()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
