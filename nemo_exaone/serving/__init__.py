"""Serving on CPU through the Triton server of the nvidia-pytriton wheel (``nemo-exaone serve``)."""
