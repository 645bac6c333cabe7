"""HF EXAONE -> NeMo 2 -> HF is bit-exact: through NeMo's own ``llm.import_ckpt`` /
``llm.export_ckpt`` and through ``nemo-exaone convert hf-to-nemo`` / ``nemo-to-hf``; tied and
untied, sharded; tokenizer (chat template included) and generation config travel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nemo_exaone.checkpoint.exaone_hf import export_hf_config, identity_files
from nemo_exaone.checkpoint.safetensors_io import SafetensorsSource
from nemo_exaone.config.presets import ExaoneArch


def assert_same_hf(source: Path, back: Path) -> None:
    """Every tensor bit-identical (names, dtypes, values), identity files byte-identical, and
    config.json as our exporter writes it for the source (tie_word_embeddings stated)."""
    a, b = SafetensorsSource(source), SafetensorsSource(back)
    assert sorted(a.tensors) == sorted(b.tensors)
    for name in a.tensors:
        x, y = a.read([name])[name], b.read([name])[name]
        assert x.dtype == y.dtype and torch.equal(x, y), name
    files = [n for n in identity_files(source) if n != "config.json"]
    assert "chat_template.jinja" in files and "generation_config.json" in files
    for name in files:
        assert (back / name).read_bytes() == (source / name).read_bytes(), name
    source_config = json.loads((source / "config.json").read_text())
    want, _ = export_hf_config(ExaoneArch.from_hf_config(source_config), set(files))
    assert json.loads((back / "config.json").read_text()) == want


def test_llm_import_and_export_ckpt_round_trip(untied_hf, tmp_path):
    from nemo.collections import llm
    from nemo.lightning import io

    from nemo_exaone.nemo import ExaoneConfig, ExaoneModel, config_for_preset

    nemo_dir = llm.import_ckpt(model=ExaoneModel(config_for_preset("tiny")),
                               source=f"hf://{untied_hf}", output_path=tmp_path / "nemo")
    assert (nemo_dir / "weights" / ".metadata").is_file()
    assert (nemo_dir / "context" / "nemo_tokenizer" / "chat_template.jinja").is_file()
    config = io.load_context(nemo_dir / "context", subpath="model.config")
    assert isinstance(config, ExaoneConfig)
    assert (config.params_dtype, config.bf16, config.num_layers) == (torch.bfloat16, True, 2)
    assert config.share_embeddings_and_output_weights is False
    tokenizer = io.load_context(nemo_dir / "context", subpath="model.tokenizer")
    chat = tokenizer.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}],
                                                   tokenize=False, add_generation_prompt=True)
    assert chat == "[|user|]hi\n[|assistant|]"

    back = llm.export_ckpt(path=nemo_dir, target="hf", output_path=tmp_path / "back")
    assert_same_hf(untied_hf, Path(back))


def test_cli_round_trip_sharded_tied(tied_hf, tmp_path):
    from nemo_exaone.cli import main

    assert len(list(tied_hf.glob("model-*.safetensors"))) > 1  # really sharded
    nemo_dir, back = tmp_path / "nemo", tmp_path / "back"
    assert main(["convert", "hf-to-nemo", "--hf", str(tied_hf), "--out", str(nemo_dir)]) == 0
    assert main(["convert", "nemo-to-hf", "--nemo", str(nemo_dir), "--out", str(back),
                 "--max-shard-size", "200KB"]) == 0
    assert len(list(back.glob("model-*.safetensors"))) > 1
    assert "lm_head.weight" not in SafetensorsSource(back).tensors  # still tied
    assert_same_hf(tied_hf, back)
    # An existing output is refused without --overwrite and left as it was.
    before = sorted(p.name for p in back.iterdir())
    assert main(["convert", "nemo-to-hf", "--nemo", str(nemo_dir), "--out", str(back)]) == 2
    assert sorted(p.name for p in back.iterdir()) == before


def test_export_refuses_a_directory_that_is_not_a_nemo_checkpoint(tied_hf, tmp_path):
    from nemo_exaone.checkpoint.errors import CheckpointError
    from nemo_exaone.nemo.connectors import export_nemo_to_hf

    with pytest.raises(CheckpointError, match="no context/ directory"):
        export_nemo_to_hf(tied_hf, tmp_path / "out")
    assert not (tmp_path / "out").exists()
