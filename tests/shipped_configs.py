"""Compose a shipped Hydra config (``nemo_exaone/conf``) into the job dataclasses, as the
example scripts do; one helper for every test that runs a shipped recipe in-process."""

from __future__ import annotations

from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "nemo_exaone" / "conf"


def compose_job(name: str, overrides: list[str]):
    """``TrainingJobConfig`` of config ``name`` with Hydra ``overrides`` applied."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from nemo_exaone.commands.hydra_app import job_config, register_configs

    GlobalHydra.instance().clear()
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return job_config(compose(config_name=name, overrides=overrides))
