"""`nemo-exaone train`: run a training stage from the Hydra configs, without a script.

Same configs, overrides and outputs as ``examples/pretrain.py`` (composed with Hydra's
compose API, so no Hydra run directory or logging set-up is involved):

    nemo-exaone train --config-name tiny_cpu train.max_steps=20 run.dir=runs/t
    nemo-exaone train --config-name tiny_cpu_continued --cfg      # print the config only
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nemo_exaone.conf import CONFIG_MODULE, SEARCH_PATH
from nemo_exaone.config.errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="run a training stage (pretrain, continued, anneal, distill)",
        description="Compose a training config from the configs shipped in the package "
        "(nemo_exaone/conf, Hydra) and run the Megatron-Core training loop; the same configs "
        "and overrides as examples/pretrain.py.")
    parser.add_argument("--config-name", default="pretrain",
                        help="primary config in the config directory (default: pretrain)")
    parser.add_argument("--config-dir", default=None,
                        help="a directory of your own Hydra configs, searched before the "
                        "shipped ones (which stay available to its defaults lists)")
    parser.add_argument("--cfg", action="store_true", help="print the composed config and exit")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. train.max_steps=20")
    parser.set_defaults(func=run, strict_errors=True)


def compose_config(config_dir: str | Path | None, config_name: str, overrides: list[str]):
    """The composed (DictConfig) job config, checked against the schema.

    Without ``config_dir`` the shipped configs are used; with it, that directory comes first
    and the shipped configs stay on the search path behind it.
    """
    from hydra import compose, initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from nemo_exaone.commands.hydra_app import register_configs

    GlobalHydra.instance().clear()
    register_configs()
    if config_dir is None:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides))
    config_dir = Path(config_dir).resolve()
    if not config_dir.is_dir():
        raise FileNotFoundError(f"--config-dir {config_dir} does not exist or is not a directory")
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name=config_name,
                       overrides=[f"hydra.searchpath=[{SEARCH_PATH}]", *overrides])


def run(args: argparse.Namespace) -> int:
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from nemo_exaone.commands.hydra_app import run_job

    try:
        cfg = compose_config(args.config_dir, args.config_name, args.overrides)
    except HydraException as exc:
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        raise ConfigError(f"{exc}{cause}") from None
    if args.cfg:
        print(OmegaConf.to_yaml(cfg))
        return 0
    return run_job(cfg)
