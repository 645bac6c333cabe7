"""What a conversion did, for the CLI to print and the benchmark to record."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ConversionReport:
    direction: str  # "hf-to-mcore" | "mcore-to-hf"
    source: str
    output: str
    tensors: int
    bytes_read: int
    bytes_written: int
    seconds: float
    # What a reader must know about the result: the RoPE (always), defaults taken, fields the
    # export changed against the source config.json, files carried or left out.
    details: list[str] = field(default_factory=list)

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / 1e6 / max(self.seconds, 1e-9)

    def summary(self) -> str:
        return (f"{self.direction}: {self.tensors} tensors, {self.bytes_read / 1e9:.3f} GB read, "
                f"{self.bytes_written / 1e9:.3f} GB written in {self.seconds:.1f} s "
                f"({self.mb_per_s:.0f} MB/s) -> {self.output}"
                + "".join(f"\n  {line}" for line in self.details))
