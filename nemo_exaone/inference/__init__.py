"""Generation with EXAONE models on Megatron-Core's inference stack (see generation)."""

from nemo_exaone.inference.generation import (
    Generation,
    GenerationConfig,
    default_stop_ids,
    generate,
)

__all__ = ["Generation", "GenerationConfig", "default_stop_ids", "generate"]
