"""Turn ``DataConfig`` into one deterministic sample source for the loop.

- ``documents=split``: :func:`nemo_exaone.data.build_pretraining_datasets` (Megatron's
  ``BlendedMegatronDatasetBuilder`` + GPT datasets over the blend and replay), sized for the
  run (``max_steps x global_batch_size`` samples);
- ``documents=whole``: one :class:`nemo_exaone.data.document_datasets.WholeDocumentDataset`
  per prefix, mixed by :class:`.samples.BlendedSamples` with the weights of the same
  blend/replay arithmetic;
- ``source=synthetic``: no data at all;
- ``source=chat``: chat JSONL for SFT, packed whole conversations
  (:mod:`nemo_exaone.data.sft_datasets`).

``source=shipped`` first prepares the corpus bundled with the package
(:mod:`nemo_exaone.data.shipped_data`) and points the data settings at it.
Megatron's builder synchronises ranks internally, so every rank calls
:func:`build_sample_source` together (after :func:`prepare_data` ran on rank 0).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from nemo_exaone.config.errors import ConfigError
from nemo_exaone.config.presets import ExaoneArch
from nemo_exaone.training.config import DataConfig, DatasetSpec
from nemo_exaone.training.samples import BlendedSamples, SampleSource, SyntheticSamples


@dataclass
class DataSummary:
    """What the run reads, for the log."""

    source: str
    prefixes: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    skipped_documents: int = 0
    truncated_documents: int = 0
    tokenizer_dir: str | None = None


def data_dir(data: DataConfig, run_dir: Path) -> Path:
    return Path(data.prepare_dir) if data.prepare_dir else run_dir / "data"


def prepare_data(data: DataConfig, arch: ExaoneArch, run_dir: Path) -> DataConfig:
    """Resolve ``source=shipped`` into prepared indexed datasets (idempotent, cached)."""
    if data.source != "shipped":
        return data
    from nemo_exaone.data.shipped_data import SPLIT_SOURCES, prepare_shipped_data

    if data.shipped_split not in SPLIT_SOURCES:
        raise ConfigError(f"data.shipped_split={data.shipped_split!r}: choose one of "
                          f"{', '.join(SPLIT_SOURCES)}")
    shipped = prepare_shipped_data(data_dir(data, run_dir), arch.vocab_size)
    replay = []
    if data.replay_fraction > 0:
        replay = list(data.replay) or [DatasetSpec(prefix=str(shipped.prefix("pretrain")))]
    return dataclasses.replace(
        data, source="indexed", tokenizer_dir=str(shipped.tokenizer_dir),
        blend=list(data.blend) or [DatasetSpec(prefix=str(shipped.prefix(data.shipped_split)))],
        replay=replay)


def _blend_config(data: DataConfig):
    from nemo_exaone.data.blends import BlendConfig

    if not data.blend:
        raise ValueError("data.source=indexed needs data.blend: a list of {prefix, weight} "
                         "(Megatron indexed datasets, e.g. from 'nemo-exaone data preprocess')")

    def weights(specs):
        values = [s.weight for s in specs]
        if all(v is None for v in values):
            return None  # proportional to token counts
        if any(v is None for v in values):
            raise ValueError("give a weight to every dataset of data.blend/data.replay, or to "
                             "none (then they are weighted by token count)")
        return values

    return BlendConfig(
        prefixes=[s.prefix for s in data.blend], weights=weights(data.blend),
        replay_prefixes=[s.prefix for s in data.replay],
        replay_weights=weights(data.replay) if data.replay else None,
        replay_fraction=data.replay_fraction)


def _check_vocab(tokenizer_dir: str | None, arch: ExaoneArch) -> int | None:
    """The tokenizer's pad id; refuses a tokenizer larger than the model's vocabulary."""
    if not tokenizer_dir:
        return None
    from nemo_exaone.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    if tokenizer.vocab_size > arch.vocab_size:
        raise ValueError(f"tokenizer {tokenizer_dir} has {tokenizer.vocab_size} tokens but the "
                         f"model's vocab_size is {arch.vocab_size}")
    return tokenizer.pad_id


def build_sample_source(data: DataConfig, seq_length: int, arch: ExaoneArch, run_dir: Path,
                        num_samples: int) -> tuple[SampleSource, DataSummary]:
    """The run's sample source (call on every rank, after :func:`prepare_data`)."""
    if data.source == "synthetic":
        return (SyntheticSamples(arch.vocab_size, seq_length, data.seed),
                DataSummary(source="synthetic"))
    if data.source == "preference":
        from nemo_exaone.alignment.preference_data import build_preference_source

        source, path, tokenizer_dir = build_preference_source(data, seq_length, arch,
                                                              data_dir(data, run_dir))
        return source, DataSummary(source="preference", prefixes=[path],
                                   skipped_documents=source.num_skipped,  # pairs
                                   tokenizer_dir=tokenizer_dir)
    if data.source == "chat":
        from nemo_exaone.data.sft_datasets import build_chat_source

        source, paths, tokenizer_dir = build_chat_source(data, seq_length, arch,
                                                         data_dir(data, run_dir))
        return source, DataSummary(source="chat", prefixes=paths,
                                   skipped_documents=source.num_skipped,
                                   truncated_documents=source.num_truncated,
                                   tokenizer_dir=tokenizer_dir)
    data = prepare_data(data, arch, run_dir)
    pad_id = _check_vocab(data.tokenizer_dir, arch)
    blend_config = _blend_config(data)
    if data.documents == "split":
        from nemo_exaone.data.pretraining_datasets import build_pretraining_datasets

        if not data.tokenizer_dir:
            raise ValueError("data.documents=split needs data.tokenizer_dir (Megatron's GPT "
                             "dataset reads the EOD and pad ids from the tokenizer)")
        built = build_pretraining_datasets(
            blend_config, data.tokenizer_dir, seq_length, seed=data.seed,
            num_samples=num_samples, cache_dir=data_dir(data, run_dir) / "index_cache",
            create_attention_mask=False)
        blend = built.blend
        summary = DataSummary(source=data.source, prefixes=blend.prefixes,
                              weights=blend.weights, tokenizer_dir=data.tokenizer_dir)
        return built.train, summary
    from nemo_exaone.data.blends import resolve_blend
    from nemo_exaone.data.document_datasets import WholeDocumentDataset
    from nemo_exaone.data.preprocess import mask_prefix

    def masks(prefix: str) -> str | None:
        """A chat dataset's assistant mask (``preprocess --mode chat``): SFT loss."""
        found = mask_prefix(prefix)
        return str(found) if Path(f"{found}.idx").is_file() else None

    blend = resolve_blend(blend_config)
    # Packed documents carry document_ids: the objective keeps them from attending to each
    # other (nemo_exaone.model.packed_attention).
    datasets = [WholeDocumentDataset(prefix, seq_length, seed=data.seed + i,
                                     shuffle=data.shuffle, pack=data.pack_documents,
                                     too_long=data.too_long_documents, pad_id=pad_id or 0,
                                     loss_mask_prefix=masks(prefix))
                for i, prefix in enumerate(blend.prefixes)]
    summary = DataSummary(source=data.source, prefixes=blend.prefixes, weights=blend.weights,
                          skipped_documents=sum(d.num_skipped for d in datasets),
                          truncated_documents=sum(d.num_truncated for d in datasets),
                          tokenizer_dir=data.tokenizer_dir)
    return BlendedSamples(datasets, blend.weights), summary
