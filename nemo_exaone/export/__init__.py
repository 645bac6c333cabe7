"""Exports for serving stacks: Llama-compatible HF, TensorRT-LLM checkpoints, Triton repositories."""
