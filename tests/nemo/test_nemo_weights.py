"""A NeMo 2 checkpoint's weights initialise our training loop, and ours go into NeMo.

``nemo_to_mcore`` must write what ``convert hf-to-mcore`` writes for the same weights (every
stored tensor equal, same architecture record), which is what our loop loads as a stage's
initial weights at any TP/PP; ``mcore_to_nemo`` must give back the HF weights bit-exactly."""

from __future__ import annotations

import torch

from nemo_exaone.checkpoint.dcp_io import DistCheckpointReader
from nemo_exaone.checkpoint.mcore_layout import single_process_megatron


def _stored(directory) -> dict[str, torch.Tensor]:
    reader = DistCheckpointReader(directory)
    out = {}
    for key, md in reader.metadata.state_dict_metadata.items():
        if not hasattr(md, "chunks"):  # objects (_extra_state): not weights
            continue
        full = torch.empty(tuple(md.size), dtype=md.properties.dtype)
        reader.read(key, (0,) * len(md.size), tuple(md.size), out=full)
        out[key] = full
    return out


def test_nemo_weights_initialise_our_stage_and_ours_go_back(tied_hf, tmp_path):
    from test_nemo_checkpoint import assert_same_hf

    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.mcore_checkpoint import load_stage_weights
    from nemo_exaone.checkpoint.metadata import read_checkpoint_arch
    from nemo_exaone.cli import main
    from nemo_exaone.model.builder import ModelOptions, build_model
    from nemo_exaone.nemo.connectors import (
        export_nemo_to_hf,
        import_hf_to_nemo,
        nemo_checkpoint_config,
    )

    nemo_dir = import_hf_to_nemo(tied_hf, tmp_path / "nemo")
    ours = tmp_path / "from_nemo"
    assert main(["convert", "nemo-to-mcore", "--nemo", str(nemo_dir), "--out", str(ours)]) == 0
    reference = tmp_path / "from_hf"
    convert_hf_to_mcore(tied_hf, reference, progress=False)
    got, want = _stored(ours), _stored(reference)
    assert sorted(got) == sorted(want) and len(want) >= 8
    for key in want:
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key
    arch = read_checkpoint_arch(ours)
    assert arch.hf_differences(read_checkpoint_arch(reference)) == []
    assert (ours / "hf_identity" / "chat_template.jinja").is_file()

    # As a stage's initial weights (TP=1 here; the files are those of hf-to-mcore, which the
    # loop's parallel tests load at TP=2/PP=2).
    with single_process_megatron():
        model = build_model(arch, options=ModelOptions(spec="local"))
        load_stage_weights([model], ours, arch)
        from_nemo = {k: v.clone() for k, v in model.state_dict().items() if "_extra" not in k}
        load_stage_weights([model], reference, arch)
        for key, value in model.state_dict().items():
            if "_extra" not in key:
                assert torch.equal(from_nemo[key], value), key

    # Ours into NeMo (NeMo's own save), then out to HF: the source's weights, bit-exact.
    back_nemo = tmp_path / "nemo_again"
    assert main(["convert", "mcore-to-nemo", "--ckpt", str(reference), "--out",
                 str(back_nemo)]) == 0
    assert nemo_checkpoint_config(back_nemo).to_arch().hf_differences(arch) == []
    back = export_nemo_to_hf(back_nemo, tmp_path / "hf_again")
    assert_same_hf(tied_hf, back)
