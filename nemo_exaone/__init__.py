"""nemo-exaone: EXAONE LLMs on NVIDIA's large-scale stack (Megatron-Core first)."""

__version__ = "0.1.0"
