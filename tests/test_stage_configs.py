"""A stage chosen on the command line brings its own values (stage=continued: its sequence
length), and an explicit override still wins."""

from __future__ import annotations

from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[1] / "nemo_exaone" / "conf"


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from nemo_exaone.commands.hydra_app import register_configs

    GlobalHydra.instance().clear()
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="pretrain", overrides=overrides)


@pytest.mark.parametrize("overrides, seq_length", [
    ([], 8192),
    (["stage=continued", "init.checkpoint=runs/a"], 32768),
    (["stage=continued", "init.checkpoint=runs/a", "train.seq_length=4096"], 4096),
])
def test_stage_file_sequence_length_unless_overridden(overrides, seq_length):
    cfg = _compose(overrides)
    assert cfg.train.seq_length == seq_length
    if "stage=continued" in overrides:
        assert cfg.model.arch.max_position_embeddings == 32768
        assert cfg.data.documents == "whole"
