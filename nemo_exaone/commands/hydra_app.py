"""Glue between Hydra entry points (``examples/*.py``) and :func:`training.loop.train`.

``register_configs()`` stores the schema of :class:`TrainingJobConfig` as ``job_schema``; every
primary config in ``nemo_exaone/conf/`` lists it first in its defaults, so each YAML file and command-line
override is checked against the dataclasses (an unknown key fails with its full name).
``run_job`` converts the composed config, prints and saves it, trains, and maps failures
to exit codes with one clear message.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from nemo_exaone.config.errors import ConfigError, InputError
from nemo_exaone.config.structured import from_container, omegaconf_schema
from nemo_exaone.runtime.outputs import OutputLockedError
from nemo_exaone.training.config import TrainingJobConfig

SCHEMA_NAME = "job_schema"

# Exit codes of the example scripts.
EXIT_OK, EXIT_NONFINITE, EXIT_CONFIG = 0, 3, 2


def register_configs() -> None:
    """Make the structured schema available to Hydra's defaults lists."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=omegaconf_schema(TrainingJobConfig))


def job_config(cfg) -> TrainingJobConfig:
    """Typed job config from a composed (DictConfig) config, interpolations resolved."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    data.pop("hydra", None)
    return from_container(TrainingJobConfig, data)


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def save_resolved_config(cfg, run_dir: Path) -> str:
    from omegaconf import OmegaConf

    text = OmegaConf.to_yaml(cfg, resolve=True)
    if _rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(text, encoding="utf-8")
    return text


def quiet_library_warnings() -> None:
    """Megatron warns about missing Apex/TE at import on every CPU run; they are expected."""
    for pattern in ("Transformer Engine", "Apex", "apex", "TE ", "torch.distributed",
                    "cuda_graph_scope"):
        warnings.filterwarnings("ignore", message=f".*{pattern}.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def run_job(cfg, train_fn=None) -> int:
    """Train the composed config (with ``train_fn(job)``, default :func:`train`); returns
    the process exit code.

    A configuration problem prints ``config error: ...`` and a damaged or missing input (a
    checkpoint, a dataset, a run directory another training holds) ``error: ...``, both exit
    2; any other exception is a bug and propagates with its traceback.
    """
    import contextlib

    from omegaconf.errors import OmegaConfBaseException

    from nemo_exaone.training.loop import run_directory_lock, train
    from nemo_exaone.training.safety import NonFiniteTrainingError

    quiet_library_warnings()
    try:
        job = job_config(cfg)
    except (ValueError, OmegaConfBaseException) as exc:  # the YAML/overrides do not fit
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        # Rank 0 holds the run directory from before it writes config.yaml until the end.
        with run_directory_lock(job.run.dir) if _rank() == 0 else contextlib.nullcontext():
            text = save_resolved_config(cfg, Path(job.run.dir))
            if _rank() == 0:
                print("=== resolved config ===\n" + text + "=======================", flush=True)
            result = (train_fn or train)(job)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (InputError, FileNotFoundError, FileExistsError, OutputLockedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except NonFiniteTrainingError as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return EXIT_NONFINITE
    if _rank() == 0:
        last = result.metrics[-1] if result.metrics else {}
        status = "stopped by a signal after saving" if result.terminated else "finished"
        run_dir = Path(result.run_dir or job.run.dir)
        max_steps = job.train.max_steps if result.max_steps is None else result.max_steps
        print(f"{status}: step {result.state.step}/{max_steps}, "
              f"loss {last.get('loss', float('nan')):.4f}, skipped steps "
              f"{result.state.skipped_steps}, checkpoint {result.last_checkpoint}, "
              f"metrics {run_dir / 'metrics.jsonl'}", flush=True)
    return EXIT_OK


def compose_stage(cfg, objective: str, overrides: list[str]):
    """``cfg`` itself when its ``stage.objective`` is ``objective``; otherwise the same
    primary config composed again with ``overrides`` (e.g. ``stage=dpo``) before the
    command line's own, so a script can be given a config of another stage
    (``examples/dpo.py --config-name tiny_cpu``). Call inside a Hydra app."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    if cfg.stage.objective == objective:
        return cfg
    hydra_cfg = HydraConfig.get()
    name = hydra_cfg.job.config_name
    given = list(hydra_cfg.overrides.task)
    print(f"{name} has stage.objective={cfg.stage.objective}: composed with "
          f"{' '.join(overrides)} (then the command line's overrides)", flush=True)
    return compose(config_name=name, overrides=[*overrides, *given])


def hydra_entry(config_name: str, train_fn=None, stage: tuple[str, list[str]] | None = None):
    """The ``main`` of a Hydra training script (``examples/*.py``): the shipped configs
    (``--config-dir`` adds the user's), ``config_name`` as the default primary config, and
    :func:`run_job`'s exit code. Every example script is this with its own default.
    ``train_fn`` replaces :func:`train` (a script that chains runs); ``stage``
    (objective, overrides): a config of another stage is recomposed with the overrides
    (:func:`compose_stage`)."""
    import hydra

    from nemo_exaone.conf import SEARCH_PATH

    register_configs()

    @hydra.main(version_base="1.3", config_path=SEARCH_PATH, config_name=config_name)
    def main(cfg) -> None:
        if stage is not None:
            cfg = compose_stage(cfg, *stage)
        code = run_job(cfg, train_fn)
        if code:
            sys.exit(code)

    return main
