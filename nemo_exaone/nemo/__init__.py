"""EXAONE as a first-class NeMo 2 model (``nemo.collections.llm``, nemo-toolkit 2.7.x).

Optional: importing this package needs NVIDIA NeMo 2 (``pip install 'nemo-exaone[nemo]'``, or a
NeMo 25.x container). Everything here is built from the package's own presets table and HF
weight table, so a NeMo 2 checkpoint and ours hold the same parameters under the same rules.

- :mod:`.model`: ``ExaoneConfig(GPTConfig)``, one subclass per preset, ``ExaoneModel(GPTModel)``
- :mod:`.connectors`: ``llm.import_ckpt`` / ``llm.export_ckpt`` with ``hf``
- :mod:`.recipes`: ``pretrain_recipe`` / ``finetune_recipe`` per preset (NeMo-Run)
- :mod:`.weights`: NeMo 2 checkpoint weights <-> our training loop's models
"""

from __future__ import annotations

from nemo_exaone.runtime.nemo_compat import require_nemo

require_nemo()

from nemo_exaone.nemo import connectors  # noqa: E402,F401  (registers "hf" import/export)
from nemo_exaone.nemo.model import (  # noqa: E402
    PRESET_CONFIGS,
    ExaoneConfig,
    ExaoneModel,
    config_for_preset,
)

__all__ = ["PRESET_CONFIGS", "ExaoneConfig", "ExaoneModel", "config_for_preset"]

# The generated preset classes by name: ``from nemo_exaone.nemo import Exaone35Config2_4B``.
globals().update({cls.__name__: cls for cls in PRESET_CONFIGS.values()})
__all__ += [cls.__name__ for cls in PRESET_CONFIGS.values()]
