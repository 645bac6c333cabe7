"""Build a model for generation from a checkpoint, with the tokenizer the checkpoint carries.

Training code does not need this (it hands its own model chunks to
:func:`nemo_exaone.inference.generate`); the ``generate`` command and the benchmark do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nemo_exaone.config.errors import InputError
from nemo_exaone.config.presets import ExaoneArch


@dataclass
class LoadedModel:
    """This rank's model chunks, the recorded architecture, the tokenizer (if any) and where
    they came from."""

    chunks: list
    arch: ExaoneArch
    tokenizer: object | None  # ExaoneTokenizer
    path: Path
    note: str
    tokenizer_source: str | None = None


def checkpoint_tokenizer_dir(ckpt_dir: str | os.PathLike,
                             explicit: str | os.PathLike | None = None) -> Path | None:
    """Where the tokenizer of checkpoint ``ckpt_dir`` lives: ``explicit`` (which must exist),
    else the HF identity the checkpoint carries (``hf_identity/``, from import or training:
    None if it has no tokenizer files), else, for checkpoints from before identities were
    recorded, their HF source directory if it still exists (as ``convert mcore-to-hf``)."""
    from nemo_exaone.checkpoint.exaone_hf import tokenizer_files
    from nemo_exaone.checkpoint.identity import recorded_identity
    from nemo_exaone.checkpoint.metadata import METADATA_NAME, read_metadata

    if explicit is not None:
        if not Path(explicit).is_dir():
            raise FileNotFoundError(f"--tokenizer {explicit}: no such directory")
        return Path(explicit)
    identity = recorded_identity(ckpt_dir)
    if identity is not None:  # what import or training recorded is the whole truth
        return identity.directory if tokenizer_files(list(identity.files)) else None
    if (Path(ckpt_dir) / METADATA_NAME).exists():
        source = read_metadata(ckpt_dir).hf_source_dir
        if source and Path(source).is_dir() and any(
                (Path(source) / n).is_file() for n in ("tokenizer.json", "vocab.json")):
            return Path(source)
    return None


def load_tokenizer_for(ckpt_dir: str | os.PathLike, explicit: str | os.PathLike | None = None):
    """The :class:`ExaoneTokenizer` of a checkpoint (see :func:`checkpoint_tokenizer_dir`),
    or None; a tokenizer directory that cannot be loaded is an error naming it."""
    from nemo_exaone.data.tokenizer import load_tokenizer

    directory = checkpoint_tokenizer_dir(ckpt_dir, explicit)
    if directory is None:
        return None
    try:
        return load_tokenizer(directory)
    except (OSError, ValueError, Exception) as exc:  # tokenizers raises its own Exception kind
        raise InputError(f"tokenizer in {directory} cannot be loaded: {exc}") from exc


def load_for_generation(ckpt: str | os.PathLike, *, tensor_parallel: int = 1,
                        precision: str = "fp32", tokenizer_dir: str | os.PathLike | None = None,
                        seed: int = 0) -> LoadedModel:
    """Initialise the process groups (a plain process or every rank of a ``torchrun`` job),
    build the model the checkpoint records at ``tensor_parallel`` and load its weights.

    ``ckpt``: a run directory, its ``checkpoints/`` folder, an ``iter_N`` or a converted
    checkpoint (:func:`~nemo_exaone.checkpoint.locate.locate_checkpoint`).
    """
    from nemo_exaone.checkpoint.locate import locate_checkpoint
    from nemo_exaone.checkpoint.mcore_checkpoint import load_mcore_checkpoint
    from nemo_exaone.checkpoint.metadata import read_checkpoint_arch
    from nemo_exaone.config.parallel import ParallelConfig, PrecisionConfig
    from nemo_exaone.model.builder import build_model_chunks
    from nemo_exaone.runtime.distributed import init_distributed

    found = locate_checkpoint(ckpt)
    arch = read_checkpoint_arch(found.path)
    tokenizer = load_tokenizer_for(found.path, tokenizer_dir)
    parallel = ParallelConfig(tensor_model_parallel_size=tensor_parallel)
    init_distributed(parallel, seed=seed)
    chunks = build_model_chunks(arch, parallel, PrecisionConfig(dtype=precision))
    load_mcore_checkpoint(chunks, found.path, arch)
    return LoadedModel(chunks, arch, tokenizer, Path(found.path), found.note,
                       tokenizer.path if tokenizer is not None else None)
