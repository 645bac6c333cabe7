"""Turn ``DataConfig`` into one deterministic sample source (see :mod:`.samples`).

``source=indexed`` reads the configured Megatron indexed datasets; ``source=shipped``
first prepares the small bilingual corpus bundled with the package (tokenizer + indexed
datasets under ``<run.dir>/data``, made once by rank 0 with :mod:`nemo_exaone.data`), so the
tiny CPU configs are self-contained; ``source=synthetic`` needs no data at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nemo_exaone.config.presets import ExaoneArch
from nemo_exaone.training.config import DataConfig, DatasetSpec
from nemo_exaone.training.samples import (
    BlendedSamples,
    IndexedDocuments,
    SampleSource,
    SplitDocumentSamples,
    SyntheticSamples,
    WholeDocumentSamples,
)


@dataclass
class DataSummary:
    """What the run reads, for the log and the run directory."""

    source: str
    components: list[dict] = field(default_factory=list)
    truncated_documents: int = 0


def _component(spec: DatasetSpec, data: DataConfig, seq_length: int, pad_id: int,
               salt: int) -> tuple[SampleSource, dict]:
    docs = IndexedDocuments(spec.prefix)
    seed = data.seed * 1009 + salt
    if data.documents == "whole":
        src = WholeDocumentSamples(docs, seq_length, seed, data.shuffle, pad_id=pad_id)
    else:
        src = SplitDocumentSamples(docs, seq_length, seed, data.shuffle)
    info = {"prefix": spec.prefix, "documents": len(docs), "tokens": docs.num_tokens,
            "samples_per_epoch": src.samples_per_epoch,
            "truncated_documents": getattr(src, "truncated_documents", 0)}
    return src, info


def _normalised(specs: list[DatasetSpec], where: str) -> list[float]:
    total = sum(s.weight for s in specs)
    if total <= 0 or any(s.weight < 0 for s in specs):
        raise ValueError(f"{where} weights must be >= 0 with a positive sum")
    return [s.weight / total for s in specs]


def indexed_source(data: DataConfig, seq_length: int, pad_id: int
                   ) -> tuple[SampleSource, DataSummary]:
    """Blend of ``data.blend`` (and ``data.replay`` at ``data.replay_fraction``)."""
    if not data.blend:
        raise ValueError("data.source=indexed needs data.blend: a list of {prefix, weight} "
                         "(Megatron indexed datasets)")
    weights = [w * (1.0 - data.replay_fraction) for w in _normalised(data.blend, "data.blend")]
    specs = list(data.blend)
    if data.replay_fraction > 0:
        if not data.replay:
            raise ValueError("data.replay_fraction > 0 needs data.replay datasets")
        weights += [w * data.replay_fraction for w in _normalised(data.replay, "data.replay")]
        specs += list(data.replay)
    sources, summary = [], DataSummary(source="indexed")
    for salt, (spec, weight) in enumerate(zip(specs, weights)):
        src, info = _component(spec, data, seq_length, pad_id, salt)
        info["weight"] = weight
        sources.append(src)
        summary.components.append(info)
        summary.truncated_documents += info["truncated_documents"]
    return BlendedSamples(sources, weights, seq_length), summary


def build_sample_source(data: DataConfig, seq_length: int, arch: ExaoneArch, run_dir: Path
                        ) -> tuple[SampleSource, DataSummary]:
    """The run's sample source. Call on every rank after the process group exists."""
    if data.source == "synthetic":
        return (SyntheticSamples(arch.vocab_size, seq_length, data.seed),
                DataSummary(source="synthetic"))
    if data.source == "shipped":
        from nemo_exaone.training.shipped_data import ShippedCorpusMissing, prepare_shipped_data

        try:
            data = prepare_shipped_data(data, arch, run_dir)
        except ShippedCorpusMissing as exc:
            summary = DataSummary(source=f"synthetic (fallback: {exc})")
            return SyntheticSamples(arch.vocab_size, seq_length, data.seed), summary
    return indexed_source(data, seq_length, pad_id=arch.pad_token_id)
