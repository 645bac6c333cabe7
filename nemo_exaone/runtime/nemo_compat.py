"""What NeMo 2 needs from this package's runtime: its presence, and a CPU.

``require_nemo`` turns a missing NeMo into an error naming the extra and admits the
megatron-core line NeMo 2.7 drives (0.15.x, see :mod:`nemo_exaone.runtime.versions`).
``enable_nemo_cpu_compat`` applies, only without CUDA, the CPU stand-ins of
:mod:`nemo_exaone.runtime.cpu_compat` before NeMo touches Megatron-Core; NeMo's files are
never edited.
"""

from __future__ import annotations

import importlib.util

NEMO_EXTRA_HINT = ("pip install 'nemo-exaone[nemo]' (NVIDIA NeMo 2: nemo-toolkit 2.7.x, the last "
                   "release with nemo.collections.llm), or run inside a NeMo 25.x container; "
                   "scripts/setup_nemo.sh builds .venv-nemo/ with the versions tested")


def nemo_available() -> bool:
    """Whether ``nemo.collections.llm`` can be imported (found, not imported: that takes ~20 s)."""
    try:
        return importlib.util.find_spec("nemo.collections.llm") is not None
    except (ImportError, ValueError):
        return False


def require_nemo() -> None:
    """Raise ImportError naming the ``nemo`` extra when NeMo 2 is absent; else prepare for it."""
    if not nemo_available():
        raise ImportError(f"nemo_exaone.nemo needs NVIDIA NeMo 2 (nemo.collections.llm was not "
                          f"found): {NEMO_EXTRA_HINT}")
    from nemo_exaone.runtime.versions import allow_nemo_megatron_core

    allow_nemo_megatron_core()
    enable_nemo_cpu_compat()


def enable_nemo_cpu_compat() -> bool:
    """Apply the CPU stand-ins (device mapping, streams, RNG) when CUDA is absent."""
    import torch

    if torch.cuda.is_available():
        return False
    from nemo_exaone.runtime.cpu_compat import enable_cpu_compat

    active = enable_cpu_compat()
    _patch_checkpoint_device_fix()
    _patch_rng_tracker_seeding()
    return active


def _patch_rng_tracker_seeding() -> None:
    """NeMo seeds Megatron's model-parallel RNG tracker only when ``torch.cuda.device_count()
    > 0`` (``nemo.lightning.megatron_init._set_random_seed``), so without CUDA the first
    ``get_cuda_rng_tracker().fork()`` fails (``cuda rng state model-parallel-rng is not
    added``). On a CPU the tracker's states are CPU generator states (runtime.cpu_compat), so
    it is seeded here the same way NeMo seeds it on a GPU."""
    from megatron.core import parallel_state, tensor_parallel
    from nemo.lightning import megatron_init

    original = megatron_init._set_random_seed
    if getattr(original, "_nemo_exaone_cpu", False):
        return

    def set_random_seed(seed_):
        original(seed_)
        seed = seed_ + 100 * parallel_state.get_pipeline_model_parallel_rank()
        tensor_parallel.model_parallel_cuda_manual_seed(seed)

    set_random_seed._nemo_exaone_cpu = True
    megatron_init._set_random_seed = set_random_seed


def _patch_checkpoint_device_fix() -> None:
    """NeMo's checkpoint loader (``nemo.lightning.io.pl._fix_tensors_device``) asserts that CUDA
    is initialised before moving loaded tensors to the current GPU; ``llm.export_ckpt`` meets it
    in NeMo's ModelOpt probe, which loads the model first. Without CUDA there is nothing to
    move, so the checkpoint passes through unchanged."""
    from nemo.lightning.io import pl as nemo_pl

    if getattr(nemo_pl._fix_tensors_device, "_nemo_exaone_cpu", False):
        return

    def keep_on_cpu(checkpoint):
        return checkpoint

    keep_on_cpu._nemo_exaone_cpu = True
    nemo_pl._fix_tensors_device = keep_on_cpu
