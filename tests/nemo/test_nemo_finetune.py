"""The user journey in NeMo: import an HF EXAONE checkpoint, then ``llm.finetune`` resumes from
it (``AutoResume``/``RestoreConfig``: NeMo's own loader) on a CPU. Its first loss equals our
model's loss on the same HF weights and batch, so NeMo restored exactly what was imported."""

from __future__ import annotations

import pytest


def test_llm_finetune_resumes_from_the_imported_checkpoint(tied_hf, tmp_path):
    import lightning.pytorch as pl
    import torch
    from megatron.core.distributed import DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig
    from nemo import lightning as nl
    from nemo.collections import llm
    from nemo.lightning.pytorch.plugins import MegatronDataSampler
    from torch.utils.data import DataLoader

    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.mcore_checkpoint import load_stage_weights
    from nemo_exaone.checkpoint.mcore_layout import single_process_megatron
    from nemo_exaone.checkpoint.metadata import read_checkpoint_arch
    from nemo_exaone.model.builder import ModelOptions, build_model
    from nemo_exaone.nemo import ExaoneModel
    from nemo_exaone.nemo.connectors import import_hf_to_nemo, nemo_checkpoint_config

    nemo_dir = import_hf_to_nemo(tied_hf, tmp_path / "nemo")
    seq, mbs, gbs = 32, 2, 4
    gen = torch.Generator().manual_seed(0)
    causal = torch.triu(torch.ones(1, seq, seq, dtype=torch.bool), 1)
    rows = []
    for _ in range(gbs):
        tokens = torch.randint(0, 2048, (seq + 1,), generator=gen)
        rows.append({"tokens": tokens[:-1], "labels": tokens[1:], "loss_mask": torch.ones(seq),
                     "position_ids": torch.arange(seq), "attention_mask": causal})

    class Data(pl.LightningDataModule):
        def __init__(self) -> None:
            super().__init__()
            self.micro_batch_size, self.global_batch_size, self.seq_length = mbs, gbs, seq
            self.data_sampler = MegatronDataSampler(seq_len=seq, micro_batch_size=mbs,
                                                    global_batch_size=gbs)

        def train_dataloader(self):
            return DataLoader(rows, batch_size=mbs, shuffle=False)

    config = nemo_checkpoint_config(nemo_dir)
    config.seq_length = seq
    model = ExaoneModel(config, optim=nl.MegatronOptimizerModule(OptimizerConfig(
        optimizer="adam", lr=1e-3, clip_grad=0.0, use_distributed_optimizer=False)))
    seen: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(float(trainer.callback_metrics["reduced_train_loss"]))

    # No checkpoint callback: NeMoLogger's needs nvidia-resiliency-ext (GPU-only here).
    trainer = nl.Trainer(
        accelerator="cpu", devices=1, max_steps=1, callbacks=[Record()],
        enable_checkpointing=False, log_every_n_steps=1, limit_val_batches=0,
        num_sanity_val_steps=0, strategy=nl.MegatronStrategy(
            ddp=DistributedDataParallelConfig(use_distributed_optimizer=False),
            ckpt_async_save=False))
    llm.finetune(model, Data(), trainer, log=nl.NeMoLogger(log_dir=str(tmp_path / "logs")),
                 resume=nl.AutoResume(restore_config=nl.RestoreConfig(path=str(nemo_dir))),
                 tokenizer=None)
    assert len(seen) == 1

    convert_hf_to_mcore(tied_hf, tmp_path / "mcore", progress=False)
    arch = read_checkpoint_arch(tmp_path / "mcore")
    with single_process_megatron():
        ours = build_model(arch, options=ModelOptions(spec="local"))
        load_stage_weights([ours], tmp_path / "mcore", arch)
        tokens = torch.stack([r["tokens"] for r in rows])
        labels = torch.stack([r["labels"] for r in rows])
        with torch.no_grad():
            loss = ours(tokens, torch.arange(seq).expand(gbs, seq), None, labels=labels)
    assert seen[0] == pytest.approx(float(loss.mean()), rel=1e-6)
