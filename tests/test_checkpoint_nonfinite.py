"""An HF checkpoint whose weights hold NaN/Inf is refused at import, naming the tensor and the
file; nothing is published. (A damaged download converts "fine" otherwise and trains NaN.)"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
from nemo_exaone.config.presets import get_preset

ARCH = get_preset("tiny").replace(tie_word_embeddings=False, rope_scaling=None)
K_PROJ = "transformer.h.1.attn.attention.k_proj.weight"  # fused into linear_qkv


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_hf_tensor_is_refused_naming_it(tmp_path, value):
    hf = write_random_hf_checkpoint(tmp_path / "hf", ARCH)
    tensors = load_file(hf / "model.safetensors")
    tensors[K_PROJ][3, 5] = value
    save_file(tensors, hf / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match="NaN/Inf") as info:
        convert_hf_to_mcore(hf, out, progress=False)
    message = str(info.value)
    assert K_PROJ in message and "model.safetensors" in message and "(3, 5)" in message
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_finite_weights_that_overflow_the_requested_dtype_are_refused(tmp_path):
    hf = write_random_hf_checkpoint(tmp_path / "hf", ARCH)
    tensors = load_file(hf / "model.safetensors")
    tensors[K_PROJ] = tensors[K_PROJ].float()
    tensors[K_PROJ][0, 0] = 1e6  # finite in fp32, Inf in fp16
    save_file(tensors, hf / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"{K_PROJ}.*overflow to Inf.*float16"):
        convert_hf_to_mcore(hf, tmp_path / "out", progress=False, dtype="fp16")
    assert torch.isfinite(load_file(hf / "model.safetensors")[K_PROJ]).all()  # input untouched


def _load_into_model(hf_dir: str) -> str:
    from nemo_exaone.checkpoint.hf_weights import load_hf_weights
    from nemo_exaone.config.parallel import ParallelConfig
    from nemo_exaone.model.builder import build_model
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed

    init_distributed(ParallelConfig())
    try:
        load_hf_weights([build_model(ARCH)], hf_dir, ARCH)
    except CheckpointError as exc:
        return str(exc)
    finally:
        destroy_distributed()
    return "loaded"


def test_nonfinite_hf_tensor_is_refused_by_the_live_loader_too(tmp_path):
    from nemo_exaone.runtime.launch import spawn_local

    hf = write_random_hf_checkpoint(tmp_path / "hf", ARCH)
    tensors = load_file(hf / "model.safetensors")
    tensors[K_PROJ][0, 1] = float("nan")
    save_file(tensors, hf / "model.safetensors", metadata={"format": "pt"})
    [message] = spawn_local(_load_into_model, 1, str(hf))
    assert K_PROJ in message and "NaN/Inf" in message and "(0, 1)" in message
