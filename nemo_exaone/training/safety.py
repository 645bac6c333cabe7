"""Numerical safety: non-finite steps (skip or stop) and loss-spike detection."""

from __future__ import annotations

import statistics
from collections import deque


class NonFiniteTrainingError(RuntimeError):
    """The run stopped on a NaN/Inf loss or gradient; the message names the step and the
    checkpoint to resume from."""


class LossSpikeDetector:
    """Flags a loss above ``factor`` x the median of the last ``window`` finite losses.

    A median (not a mean) so that one spike does not raise the bar for the next; detection
    starts once a few losses are known, so the high losses of step 1 are not spikes.
    """

    def __init__(self, factor: float = 5.0, window: int = 50, min_history: int = 5) -> None:
        self.factor = factor
        self.history: deque[float] = deque(maxlen=max(window, 1))
        self.min_history = min_history

    def update(self, loss: float) -> tuple[bool, float | None]:
        """Record ``loss``; returns (is_spike, running median before this loss)."""
        median = statistics.median(self.history) if self.history else None
        spike = (self.factor > 0 and median is not None
                 and len(self.history) >= self.min_history and loss > self.factor * median)
        if not spike:  # keep spikes out of the reference
            self.history.append(loss)
        return spike, median


def nonfinite_message(step: int, loss: float, grad_norm: float, reason: str,
                      last_checkpoint: str | None) -> str:
    where = (f"the last good checkpoint is {last_checkpoint} (it stays 'latest'); resume from "
             "it after fixing the cause (e.g. lower optimizer.lr, check the data)"
             if last_checkpoint else "no checkpoint was written yet")
    return (f"non-finite training step {step}: loss={loss}, grad_norm={grad_norm} ({reason}); "
            f"no update was applied and the run stops. {where}.")
