"""NeMo-Run recipes for EXAONE, in NeMo's recipe style: ``pretrain_recipe`` / ``finetune_recipe``.

Each returns a ``run.Partial`` of ``llm.pretrain`` / ``llm.finetune`` with the model of one
preset and parallelism defaults for 8-GPU H100 (80 GB) nodes (:data:`H100_LAYOUTS`). In the
NeMo 25.x container, with this package installed (``pip install 'nemo-exaone[nemo]'``)::

    # 1. the HF checkpoint into NeMo 2 (or: nemo-exaone convert hf-to-nemo --hf DIR --out DIR)
    python -c "from nemo.collections import llm; from nemo_exaone.nemo import *; \\
      llm.import_ckpt(model=ExaoneModel(Exaone35Config2_4B()), \\
                      source='hf:///models/EXAONE-3.5-2.4B-Instruct', \\
                      output_path='/ckpt/exaone35-2.4b-nemo')"
    # 2. LoRA fine-tuning on 8 GPUs (SQuAD by default; set recipe.data for your own)
    python - <<'EOF'
    import nemo_run as run
    from nemo_exaone.nemo.recipes import finetune_recipe
    recipe = finetune_recipe("exaone3.5-2.4b", resume_path="/ckpt/exaone35-2.4b-nemo",
                             dir="/results", peft_scheme="lora")
    run.run(recipe, executor=run.LocalExecutor(ntasks_per_node=8, launcher="torchrun"))
    EOF

``pretrain_recipe(preset, ...)`` is used the same way (mock data by default: set
``recipe.data`` to a ``PreTrainingDataModule`` over your Megatron-indexed corpus).
``for_preset(preset)`` gives the per-preset namespace NeMo's recipe modules have
(``model``, ``trainer``, ``pretrain_recipe``, ``finetune_recipe``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace

import nemo_run as run
from nemo import lightning as nl
from nemo.collections import llm
from nemo.collections.llm.gpt.data.mock import MockDataModule
from nemo.collections.llm.peft import PEFT_STR2CLS
from nemo.collections.llm.recipes.finetune_default import default_finetune_recipe
from nemo.collections.llm.recipes.log.default import default_log, default_resume, tensorboard_logger
from nemo.collections.llm.recipes.optim.adam import distributed_fused_adam_with_cosine_annealing
from nemo.collections.llm.recipes.precision.mixed_precision import bf16_mixed

from nemo_exaone.nemo.model import PRESET_CONFIGS, ExaoneModel

# The published checkpoints (Hugging Face ids) of each preset: finetune_recipe's default
# resume path is where llm.import_ckpt(..., source="hf://<id>") keeps the import.
HF_IDS: dict[str, str] = {
    "exaone3.0-7.8b": "LGAI-EXAONE/EXAONE-3.0-7.8B-Instruct",
    "exaone3.5-2.4b": "LGAI-EXAONE/EXAONE-3.5-2.4B-Instruct",
    "exaone3.5-7.8b": "LGAI-EXAONE/EXAONE-3.5-7.8B-Instruct",
    "exaone3.5-32b": "LGAI-EXAONE/EXAONE-3.5-32B-Instruct",
}


@dataclass(frozen=True)
class Layout:
    """Parallelism of one job kind on 8-GPU H100 nodes (bf16, distributed optimizer)."""

    tp: int = 1
    pp: int = 1
    cp: int = 1
    sp: bool = False
    num_nodes: int = 1


# preset -> (pretraining at 8k tokens, LoRA, full fine-tuning). Sized from the parameter
# counts (2.4B, 7.8B, 32B) as NeMo sizes Llama 3 8B / 70B: weights, grads and sharded Adam
# state within 80 GB per GPU with room for activations.
H100_LAYOUTS: dict[str, dict[str, Layout]] = {
    "exaone3.0-7.8b": {"pretrain": Layout(cp=2), "lora": Layout(), "full": Layout(tp=2)},
    "exaone3.5-2.4b": {"pretrain": Layout(), "lora": Layout(), "full": Layout()},
    "exaone3.5-7.8b": {"pretrain": Layout(cp=2), "lora": Layout(), "full": Layout(tp=2)},
    "exaone3.5-32b": {"pretrain": Layout(tp=4, pp=2, sp=True, num_nodes=2),
                      "lora": Layout(tp=4, sp=True),
                      "full": Layout(tp=8, pp=2, sp=True, num_nodes=2)},
}


def _check(preset: str) -> None:
    if preset not in HF_IDS:
        raise ValueError(f"no recipe for preset {preset!r}; choose one of: {', '.join(HF_IDS)}")


def model(preset: str) -> run.Config:
    """``run.Config`` of the preset's ExaoneModel."""
    _check(preset)
    return run.Config(ExaoneModel, config=run.Config(PRESET_CONFIGS[preset]))


def _apply_layout(trainer: run.Config, layout: Layout) -> run.Config:
    strategy = trainer.strategy
    strategy.tensor_model_parallel_size = layout.tp
    strategy.pipeline_model_parallel_size = layout.pp
    strategy.context_parallel_size = layout.cp
    strategy.sequence_parallel = layout.sp
    trainer.num_nodes = layout.num_nodes
    return trainer


def trainer(preset: str, num_nodes: int | None = None, num_gpus_per_node: int = 8,
            max_steps: int = 1_000_000) -> run.Config:
    """The pretraining ``nl.Trainer`` (MegatronStrategy, bf16) with the preset's layout."""
    _check(preset)
    layout = H100_LAYOUTS[preset]["pretrain"]
    strategy = run.Config(
        nl.MegatronStrategy, tensor_model_parallel_size=layout.tp,
        pipeline_model_parallel_size=layout.pp, context_parallel_size=layout.cp,
        sequence_parallel=layout.sp, gradient_as_bucket_view=True, ckpt_async_save=True,
        ckpt_parallel_load=True)
    return run.Config(
        nl.Trainer, accelerator="gpu", devices=num_gpus_per_node,
        num_nodes=num_nodes or layout.num_nodes, max_steps=max_steps, plugins=bf16_mixed(),
        strategy=strategy, accumulate_grad_batches=1, limit_val_batches=32,
        log_every_n_steps=10, val_check_interval=2000, use_distributed_sampler=False)


def pretrain_recipe(preset: str, dir: str | None = None, name: str = "default",
                    num_nodes: int | None = None, num_gpus_per_node: int = 8,
                    seq_length: int = 8192, global_batch_size: int = 512,
                    max_lr: float = 3e-4) -> run.Partial:
    """``llm.pretrain`` of ``preset`` from scratch (mock data until ``recipe.data`` is set)."""
    recipe = run.Partial(
        llm.pretrain, model=model(preset),
        trainer=trainer(preset, num_nodes, num_gpus_per_node),
        data=run.Config(MockDataModule, seq_length=seq_length,
                        global_batch_size=global_batch_size, micro_batch_size=1),
        log=default_log(dir=dir, name=name, tensorboard_logger=tensorboard_logger(name=name)),
        optim=distributed_fused_adam_with_cosine_annealing(max_lr=max_lr),
        resume=default_resume())
    recipe.model.config.seq_length = seq_length
    return recipe


def finetune_recipe(preset: str, resume_path: str | None = None, dir: str | None = None,
                    name: str = "default", num_nodes: int | None = None,
                    num_gpus_per_node: int = 8, peft_scheme: str | None = "lora",
                    seq_length: int = 2048) -> run.Partial:
    """``llm.finetune`` of an imported EXAONE checkpoint: LoRA (``peft_scheme="lora"``/
    ``"dora"``) or full fine-tuning (``None``/``"none"``).

    ``resume_path``: the NeMo 2 checkpoint to start from (``convert hf-to-nemo --out`` or
    ``llm.import_ckpt(output_path=...)``); default: NeMo's cache entry of the published
    checkpoint (``nemo://LGAI-EXAONE/...``).
    """
    _check(preset)
    scheme = "none" if peft_scheme is None else peft_scheme.lower()
    if scheme not in ("none", "lora", "dora"):
        raise ValueError(f"peft_scheme={peft_scheme!r}: choose 'lora', 'dora' or None")
    recipe = default_finetune_recipe(model(preset), HF_IDS[preset], dir, name,
                                     num_nodes or 1, num_gpus_per_node)
    if resume_path is not None:
        recipe.resume = run.Config(nl.AutoResume, restore_config=run.Config(
            nl.RestoreConfig, path=str(resume_path)))
    layout = H100_LAYOUTS[preset]["full" if scheme == "none" else "lora"]
    _apply_layout(recipe.trainer, layout)
    if num_nodes is not None:
        recipe.trainer.num_nodes = num_nodes
    if scheme == "none":
        recipe.optim.config.lr = 5e-6
    else:
        recipe.peft = run.Config(PEFT_STR2CLS[scheme], dim=8, alpha=16)
        recipe.optim.config.use_distributed_optimizer = False
        recipe.model.config.cross_entropy_loss_fusion = False  # as NeMo's LoRA recipes
        recipe.optim.config.lr = 1e-4
    recipe.model.config.seq_length = seq_length
    recipe.data.seq_length = seq_length
    return recipe


def for_preset(preset: str) -> SimpleNamespace:
    """NeMo's per-model recipe module shape: ``model``, ``trainer``, ``pretrain_recipe``,
    ``finetune_recipe`` with the preset bound."""
    _check(preset)
    return SimpleNamespace(
        NAME=preset, model=functools.partial(model, preset),
        trainer=functools.partial(trainer, preset),
        pretrain_recipe=functools.partial(pretrain_recipe, preset),
        finetune_recipe=functools.partial(finetune_recipe, preset))
