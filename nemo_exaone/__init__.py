"""nemo-exaone: EXAONE LLMs on NVIDIA's large-scale stack (Megatron-Core first)."""

from nemo_exaone.runtime.quiet import quiet_missing_kernel_warnings
from nemo_exaone.runtime.triton_stub import install_triton_stub_if_needed
from nemo_exaone.runtime.versions import install_megatron_import_guard

__version__ = "0.1.0"

install_triton_stub_if_needed()
quiet_missing_kernel_warnings()  # before anything imports megatron.core
install_megatron_import_guard()
