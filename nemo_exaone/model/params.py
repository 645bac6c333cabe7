"""Parameter counts read off a built model's shapes (on the meta device: no memory used)."""

from __future__ import annotations

from collections import Counter

from nemo_exaone.config.presets import ExaoneArch


def _group(name: str) -> str:
    if name.startswith("embedding."):
        return "embedding"
    if name.startswith("output_layer."):
        return "output_layer"
    if "self_attention" in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    return "norms"


def count_parameters(arch: ExaoneArch) -> dict[str, int]:
    """Exact parameter count of the full (TP=1, PP=1) model, total and by component.

    Builds the Megatron model on the meta device, so it works for 32B on a laptop. Always
    with the local layer spec: Transformer Engine modules allocate on an explicit device
    under CPU initialisation, escaping the meta context (the count is the same). Starts
    (and ends) a world-of-one process group when none exists.
    """
    import torch

    from nemo_exaone.config.parallel import ParallelConfig
    from nemo_exaone.model.builder import ModelOptions, build_model
    from nemo_exaone.runtime.distributed import destroy_distributed, init_distributed

    own_group = not torch.distributed.is_initialized()
    if own_group:
        init_distributed(ParallelConfig())
    try:
        model = build_model(arch, ParallelConfig(), options=ModelOptions(spec="local"),
                            meta_device=True)
        by_group: Counter[str] = Counter()
        for name, param in model.named_parameters():
            by_group[_group(name)] += param.numel()
        return {"num_parameters": sum(by_group.values()), **dict(sorted(by_group.items()))}
    finally:
        if own_group:
            destroy_distributed()
