"""The NeMo 2 leg (``make test-nemo``, in .venv-nemo): collected only where NeMo 2 is installed.

The main leg has no NeMo, so nothing here is even imported there; in the NeMo leg every test
runs (a missing NeMo there means no tests and pytest's exit 5, a failure). Importing
``nemo.collections.llm`` takes ~20 s, once per session.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_exaone.runtime.nemo_compat import nemo_available

if not nemo_available():
    collect_ignore_glob = ["test_*.py"]


def write_hf_source(directory: Path, *, tied: bool, dtype, num_layers: int = 2,
                    shard_bytes: int = 300_000, seed: int = 1) -> Path:
    """A tiny HF EXAONE 3.5 checkpoint with a tokenizer (chat template included) and a
    generation config, sharded into several safetensors files."""
    from test_hf_identity import write_tokenizer

    from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
    from nemo_exaone.config.presets import get_preset

    arch = get_preset("tiny").replace(num_layers=num_layers, tie_word_embeddings=tied)
    hf = write_random_hf_checkpoint(directory, arch, dtype=dtype, seed=seed,
                                    max_shard_bytes=shard_bytes)
    write_tokenizer(hf)
    (hf / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": 361, "pad_token_id": 0, "do_sample": False}))
    return hf


@pytest.fixture(scope="session")
def tied_hf(tmp_path_factory) -> Path:
    import torch

    return write_hf_source(tmp_path_factory.mktemp("tied") / "hf", tied=True,
                           dtype=torch.float32)


@pytest.fixture(scope="session")
def untied_hf(tmp_path_factory) -> Path:
    import torch

    return write_hf_source(tmp_path_factory.mktemp("untied") / "hf", tied=False,
                           dtype=torch.bfloat16, seed=2)
