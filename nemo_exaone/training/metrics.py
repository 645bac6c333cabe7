"""Where the loop's numbers go: ``metrics.jsonl``, TensorBoard, and a progress display.

``<run.dir>/metrics.jsonl`` holds one JSON object per logged step (``step``, ``loss``,
``lr``, ``grad_norm``, ``tokens_per_s``, ``mfu``, ...). It is the file tests, reports and
golden-loss checks read. A resumed run first drops the lines of steps after its checkpoint
(those steps are trained again), so a killed-and-resumed run leaves the same file as an
uninterrupted one. Events (resume, checkpoint saved, spike, skipped step) go to
``events.jsonl``. Only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from nemo_exaone.runtime.outputs import write_text_atomic

METRICS_FILE = "metrics.jsonl"
EVENTS_FILE = "events.jsonl"


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL file; a torn last line (killed writer) is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """Keep only records of steps <= ``last_step`` (atomic rewrite)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return
    kept = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= last_step]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Inf; keep them readable
    return value


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"


_MFU_WARNED: list[bool] = []


def checked_mfu(model_flops_per_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation, or nan (with one warning) when it would exceed 100%: then the
    peak is wrong (a ``logging.peak_tflops`` set too low), and a number above 1 would mislead."""
    if not peak_flops or not math.isfinite(peak_flops) or peak_flops <= 0:
        return float("nan")
    value = model_flops_per_s / peak_flops
    if value > 1.0:
        if not _MFU_WARNED:
            _MFU_WARNED.append(True)
            warnings.warn(f"MFU would be {100 * value:.0f}% against a peak of "
                          f"{peak_flops / 1e12:.3f} TFLOP/s: the peak is too low (check "
                          "logging.peak_tflops); MFU is reported as n/a", stacklevel=2)
        return float("nan")
    return value


def format_line(record: dict, max_steps: int) -> str:
    parts = [f"step {record['step']}/{max_steps}", f"loss {record['loss']:.4f}",
             f"lr {record['lr']:.2e}", f"grad_norm {record['grad_norm']:.3f}",
             f"{_si(record['tokens_per_s'])} tok/s",
             f"MFU {100 * record['mfu']:.1f}%" if math.isfinite(record["mfu"]) else "MFU n/a",
             f"{record['step_time_s'] * 1000:.0f} ms"]
    if record.get("skipped"):
        parts.append("SKIPPED (non-finite)")
    if record.get("loss_spike"):
        parts.append("LOSS SPIKE")
    return " | ".join(parts)


class MetricsLogger:
    """Rank-0 sink for per-step records and events; a no-op on other ranks."""

    def __init__(self, run_dir: Path, max_steps: int, enabled: bool, progress: str = "auto",
                 tensorboard: bool = True, start_step: int = 0) -> None:
        self.enabled = enabled
        self.max_steps = max_steps
        self.run_dir = run_dir
        self._bar = None
        self._tb = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(run_dir / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._events = open(run_dir / EVENTS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        mode = progress
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode = mode
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=max_steps, initial=start_step, unit="step",
                             dynamic_ncols=True)
        if tensorboard:
            self._tb = _tensorboard_writer(run_dir / "tensorboard")

    def log_step(self, record: dict) -> None:
        if not self.enabled:
            return
        self._metrics.write(json.dumps({k: _finite_or_none(v) for k, v in record.items()})
                            + "\n")
        self._metrics.flush()
        if self._tb is not None:
            for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "step_time_s"):
                value = record.get(key)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(f"train/{key}", value, record["step"])
            for key, value in record.items():
                if key.startswith("loss/") and isinstance(value, float) and math.isfinite(value):
                    self._tb.add_scalar(f"train/{key}", value, record["step"])
        if self._bar is not None:
            self._bar.update(record["step"] - self._bar.n)
            self._bar.set_postfix_str(format_line(record, self.max_steps).split(" | ", 1)[1])
        elif self.mode == "lines":
            print(format_line(record, self.max_steps), flush=True)

    def event(self, kind: str, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"event": kind, "time": time.time(), **fields}
        self._events.write(json.dumps({k: _finite_or_none(v) for k, v in record.items()})
                           + "\n")
        self._events.flush()
        message = f"[{kind}] " + ", ".join(f"{k}={v}" for k, v in fields.items())
        if self._bar is not None:
            self._bar.write(message)
        elif self.mode != "none":
            print(message, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        self._metrics.close()
        self._events.close()


def _tensorboard_writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(path))
