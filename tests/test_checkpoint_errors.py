"""Bad HF input: each error names the tensor and the file, and nothing is left at the target.

All of these are caught while reading headers, before Megatron is touched, so they run
in-process in milliseconds.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
from nemo_exaone.config.presets import get_preset

UNTIED = get_preset("tiny").replace(tie_word_embeddings=False, rope_scaling=None)
K_PROJ = "transformer.h.1.attn.attention.k_proj.weight"


@pytest.fixture
def hf_single(tmp_path):
    return write_random_hf_checkpoint(tmp_path / "hf", UNTIED)


@pytest.fixture
def hf_sharded(tmp_path):
    return write_random_hf_checkpoint(tmp_path / "hf", UNTIED, max_shard_bytes=400_000)


def _edit(hf, fn):
    path = hf / "model.safetensors"
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def _fails(hf, tmp_path, exc_type, *needles, **options):
    out = tmp_path / "out"
    with pytest.raises(exc_type) as info:
        convert_hf_to_mcore(hf, out, progress=False, **options)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))  # no temporary left
    return str(info.value)


def test_missing_tensor(hf_single, tmp_path):
    _edit(hf_single, lambda t: t.pop(K_PROJ))
    _fails(hf_single, tmp_path, CheckpointError, repr(K_PROJ), "model.safetensors", "missing")


def test_unexpected_tensor(hf_single, tmp_path):
    name = "transformer.h.0.attn.attention.rotary_emb.inv_freq"
    _edit(hf_single, lambda t: t.update({name: torch.ones(8)}))
    _fails(hf_single, tmp_path, CheckpointError, repr(name), "model.safetensors", "unexpected")


def test_wrong_shape(hf_single, tmp_path):
    _edit(hf_single, lambda t: t.update({K_PROJ: torch.zeros(16, 64)}))
    _fails(hf_single, tmp_path, CheckpointError, repr(K_PROJ), "model.safetensors", "(16, 64)",
           "kv_size=32", "(32, 64)")


def _set_config(hf, **changes):
    config = json.loads((hf / "config.json").read_text())
    config.update(changes)
    (hf / "config.json").write_text(json.dumps(config))


def test_config_with_fewer_layers_than_the_tensors(hf_single, tmp_path):
    _set_config(hf_single, num_layers=3)
    _fails(hf_single, tmp_path, CheckpointError, "'transformer.h.3.", "model.safetensors",
           "config.json says num_layers=3")


def test_config_with_other_head_count_than_the_tensors(hf_single, tmp_path):
    _set_config(hf_single, num_key_value_heads=4)  # tensors were written for 2 KV heads
    _fails(hf_single, tmp_path, CheckpointError, "k_proj.weight", "model.safetensors",
           "kv_size=64")


def test_config_says_tied_but_lm_head_differs(hf_single, tmp_path):
    _set_config(hf_single, tie_word_embeddings=True)
    _fails(hf_single, tmp_path, CheckpointError, "'lm_head.weight'", "model.safetensors",
           "tie_word_embeddings=true")


def test_config_says_untied_but_lm_head_missing(tmp_path):
    hf = write_random_hf_checkpoint(tmp_path / "hf", get_preset("tiny"))  # tied: no lm_head
    _set_config(hf, tie_word_embeddings=False)
    _fails(hf, tmp_path, CheckpointError, "'lm_head.weight'", "model.safetensors",
           "tie_word_embeddings=False")


def test_truncated_safetensors(hf_sharded, tmp_path):
    shard = hf_sharded / "model-00002-of-00004.safetensors"
    os.truncate(shard, shard.stat().st_size - 1000)
    message = _fails(hf_sharded, tmp_path, CheckpointError, shard.name, "truncated")
    assert "tensor 'transformer." in message


def test_index_names_missing_shard(hf_sharded, tmp_path):
    (hf_sharded / "model-00003-of-00004.safetensors").unlink()
    _fails(hf_sharded, tmp_path, FileNotFoundError, "model-00003-of-00004.safetensors",
           "tensor 'transformer.")


def test_index_disagrees_with_shard(hf_sharded, tmp_path):
    index_path = hf_sharded / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"][K_PROJ] = "model-00001-of-00004.safetensors"
    index_path.write_text(json.dumps(index))
    _fails(hf_sharded, tmp_path, CheckpointError, repr(K_PROJ), "model-00001-of-00004")


def test_preset_that_contradicts_config(hf_single, tmp_path):
    _fails(hf_single, tmp_path, CheckpointError, "preset 'exaone3.5-2.4b'", "hidden_size",
           preset="exaone3.5-2.4b")


def test_existing_output_is_not_replaced(hf_single, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert_hf_to_mcore(hf_single, out, progress=False)
    assert (out / "keep.txt").read_text() == "x"
