"""Direct preference optimization (DPO, IPO, RPO, SimPO) as an objective of the one loop.

The policy is the model the loop trains; the reference is the stage's starting checkpoint
(``init.checkpoint``), frozen. Reference log-probs come either from a cache computed once
per stage in a forward-only pass and stored next to the preference data (reused by every
later run with the same data, reference checkpoint, tokenizer and sequence length), or from
the frozen reference run beside the policy on every micro-batch (``dpo.reference=
on_the_fly``). Both feed the same numbers into
:func:`~nemo_exaone.alignment.losses.preference_losses`; SimPO needs no reference at all.

Per-token log-probs come from the vocab-parallel logits (:mod:`..training.vocab_parallel`),
so the objective runs at any tensor-parallel size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch

from nemo_exaone.alignment.losses import NEEDS_REWARDS, PreferenceLossConfig, preference_losses
from nemo_exaone.alignment.preference_data import PAIR_KEYS, PreferenceSamples, collate_pairs

REFERENCE_MODES = ("cache", "on_the_fly")
CACHE_FORMAT = 1


def _tp_group():
    from megatron.core import parallel_state

    if parallel_state.get_tensor_model_parallel_world_size() == 1:
        return None
    return parallel_state.get_tensor_model_parallel_group()


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log π(label_t | tokens_≤t) [B, S] from vocab-parallel logits [B, S, V/tp]."""
    from nemo_exaone.training import vocab_parallel

    return -vocab_parallel.cross_entropy(logits, labels, _tp_group())


def response_sums(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
                  ) -> torch.Tensor:
    """[B, 2]: (sum of response-token log-probs, number of response tokens) per sequence."""
    tok = token_log_probs(logits, labels)
    mask = mask.to(tok.dtype)
    return torch.stack([(tok * mask).sum(-1), mask.sum(-1)], dim=-1)


def reduce_reference(sums: torch.Tensor, average: bool) -> torch.Tensor:
    """Per-sequence reference log-prob from [B, 2] (sum, count): the sum or the mean."""
    return sums[:, 0] / sums[:, 1].clamp(min=1) if average else sums[:, 0]


class PreferenceObjective:
    """The configured preference loss over chosen/rejected pairs (B pairs run as 2B rows).

    Loss sum over pairs, count = pairs: the loop's per-token mode averages over the pairs
    of the global batch. Reported: the loss, implicit-reward accuracy and margin, and the
    SFT term (when weighted).
    """

    loss_key = "preference loss"
    extra_keys = ("preference accuracy", "preference margin", "sft loss")

    def __init__(self, cfg: PreferenceLossConfig, reference: torch.nn.Module | None = None
                 ) -> None:
        self.cfg = cfg
        self.reference = reference  # on the fly; None: ref_sums come with the batch
        self.inject_nonfinite = False

    @staticmethod
    def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
        return collate_pairs(samples)

    def forward_step(self, data_iterator: Iterator[dict], model):
        from nemo_exaone.training.objectives import to_device

        batch = to_device(next(data_iterator))
        ref = batch.get("ref_sums")
        if self.reference is not None and self.cfg.uses_reference:
            with torch.no_grad():
                ref_logits = self.reference(batch["tokens"], batch["position_ids"], None)
                ref = response_sums(ref_logits, batch["labels"], batch["response_mask"])
        logits = model(batch["tokens"], batch["position_ids"], None)
        return logits, partial(self._loss, batch, ref)

    def _loss(self, batch: dict, ref: torch.Tensor | None, logits: torch.Tensor):
        cfg = self.cfg
        tok = token_log_probs(logits, batch["labels"])
        mask, rewards = batch["response_mask"], batch["rewards"]
        pairs = tok.shape[0] // 2
        ref_seq = None
        if cfg.uses_reference:
            if ref is None:
                raise ValueError(f"preference loss {cfg.loss!r} needs reference log-probs: "
                                 "no cache in the batch and no reference model")
            ref_seq = reduce_reference(ref.float(), cfg.average_log_probs)
        out = preference_losses(
            cfg, tok[:pairs], mask[:pairs], tok[pairs:], mask[pairs:],
            None if ref_seq is None else ref_seq[:pairs],
            None if ref_seq is None else ref_seq[pairs:],
            rewards[:pairs], rewards[pairs:])
        total = out.loss.sum()
        if self.inject_nonfinite:
            total = total * float("nan")
        n = torch.tensor(float(pairs), device=total.device)
        report = {self.loss_key: torch.stack([total.detach(), n]),
                  "preference accuracy": torch.stack([out.accuracy.sum(), n]),
                  "preference margin": torch.stack(
                      [(out.chosen_reward - out.rejected_reward).sum(), n]),
                  "sft loss": torch.stack([out.sft.sum(), n])}
        return total, n.to(torch.int), report


# ------------------------------------------------------------------ reference log-probs
@torch.no_grad()
def compute_reference_sums(reference, samples: PreferenceSamples, batch_size: int
                           ) -> torch.Tensor:
    """[N, 2, 2]: per item, (chosen, rejected) x (response log-prob sum, token count),
    forward-only, in item order (every TP rank calls it with the same items)."""
    from nemo_exaone.training.objectives import to_device

    was_training = reference.training
    reference.eval()
    out = []
    try:
        for start in range(0, len(samples.items), batch_size):
            batch = to_device(collate_pairs(samples.items[start:start + batch_size]))
            logits = reference(batch["tokens"], batch["position_ids"], None)
            sums = response_sums(logits, batch["labels"], batch["response_mask"]).float().cpu()
            pairs = sums.shape[0] // 2
            out.append(torch.stack([sums[:pairs], sums[pairs:]], dim=1))
    finally:
        reference.train(was_training)
    return torch.cat(out)


def attach_reference_sums(samples: PreferenceSamples, sums: torch.Tensor) -> None:
    """Give every item its cached reference sums (collated as ``ref_sums`` [2B, 2])."""
    if sums.shape[0] != len(samples.items):
        raise ValueError(f"reference cache holds {sums.shape[0]} pairs, the data "
                         f"{len(samples.items)}")
    for item, value in zip(samples.items, sums):
        for i, key in enumerate(PAIR_KEYS):
            item[f"{key}_ref_sums"] = value[i].clone()


def cache_path(data_file: str | Path, reference_ckpt: str | Path, tokenizer_dir: str,
               seq_length: int) -> Path:
    """Where the reference cache of this (data, reference, tokenizer, length) lives: next to
    the data, named by a digest of all four (any change makes a new cache)."""
    from nemo_exaone.checkpoint.metadata import METADATA_NAME

    digest = hashlib.sha256()
    digest.update(Path(data_file).read_bytes())
    ckpt = Path(reference_ckpt).absolute()
    meta = ckpt / METADATA_NAME
    digest.update(json.dumps([str(ckpt), meta.read_text() if meta.is_file() else "",
                              str(Path(tokenizer_dir).absolute()), seq_length,
                              CACHE_FORMAT]).encode())
    data_file = Path(data_file)
    return data_file.with_name(f"{data_file.name}.ref-{digest.hexdigest()[:16]}.pt")


def load_or_compute_cache(path: Path, reference, samples: PreferenceSamples, batch_size: int,
                          log=None) -> torch.Tensor:
    """The cached reference sums at ``path``, or computed now and written there (rank 0,
    atomically); every rank returns the same tensor."""
    from nemo_exaone.runtime.outputs import temporary_name

    distributed = torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
    found = [path.is_file()]
    if distributed:  # one decision for all ranks: tensor-parallel peers compute together
        torch.distributed.broadcast_object_list(found, src=0)
    if found[0]:
        sums = torch.load(path, weights_only=True)
        if log is not None:
            log.event("reference_cache", path=str(path), reused=True)
        return sums
    sums = compute_reference_sums(reference, samples, batch_size)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        tmp = temporary_name(path)
        try:
            torch.save(sums, tmp)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if log is not None:
            log.event("reference_cache", path=str(path), reused=False, pairs=len(sums))
    if distributed:
        torch.distributed.barrier()
    return sums


def loss_config(dpo) -> PreferenceLossConfig:
    """:class:`PreferenceLossConfig` from the job's ``dpo`` section (NeMo-Aligner keys;
    SimPO takes ``simpo_beta`` as its beta when set). Invalid values are a
    :class:`ConfigError` naming the ``dpo.`` field."""
    from nemo_exaone.config.errors import ConfigError

    simpo = dpo.preference_loss == "simpo" and dpo.simpo_beta is not None
    beta = dpo.simpo_beta if simpo else dpo.ref_policy_kl_penalty
    if simpo and not beta > 0:
        raise ConfigError(f"dpo.simpo_beta={beta}: SimPO's beta must be > 0 (about 2)")
    settings = {"preference_loss": dpo.preference_loss, "ref_policy_kl_penalty": beta,
                "preference_average_log_probs": dpo.preference_average_log_probs,
                "sft_average_log_probs": dpo.sft_average_log_probs,
                "preference_loss_weight": dpo.preference_loss_weight,
                "sft_loss_weight": dpo.sft_loss_weight,
                "gt_reward_scale": dpo.gt_reward_scale, "simpo_gamma": dpo.simpo_gamma}
    try:
        return PreferenceLossConfig.from_mapping(settings)
    except ValueError as exc:  # the loss module's own checks, with NeMo-Aligner's key names
        raise ConfigError(f"dpo: {exc}") from None


def build_preference_objective(cfg, arch, parallel, options, source, log):
    """The loop's objective for ``stage.objective=dpo``: reference built from
    ``init.checkpoint`` (frozen), its log-probs cached next to the data or kept on the fly."""
    from nemo_exaone.checkpoint.locate import locate_checkpoint
    from nemo_exaone.checkpoint.mcore_checkpoint import load_stage_weights
    from nemo_exaone.config.errors import ConfigError
    from nemo_exaone.model.builder import build_model_chunks

    loss_cfg = loss_config(cfg.dpo)
    if loss_cfg.loss in NEEDS_REWARDS:
        missing = [i for i, item in enumerate(source.items)
                   if not all(torch.isfinite(item[f"{k}_reward"]) for k in PAIR_KEYS)]
        if missing:
            raise ConfigError(f"dpo.preference_loss={loss_cfg.loss} needs chosen_reward and "
                              f"rejected_reward on every pair; {len(missing)} pairs lack them "
                              f"(first: pair {missing[0]} of data.preference_file)")
    if not loss_cfg.uses_reference:
        log.event("reference", mode="none", note=f"{loss_cfg.loss} is reference-free")
        return PreferenceObjective(loss_cfg)
    if not cfg.init.checkpoint:
        raise ConfigError(f"dpo.preference_loss={loss_cfg.loss} uses the starting checkpoint "
                          "as the reference policy: set init.checkpoint (the SFT model)")
    ref_path = locate_checkpoint(cfg.init.checkpoint).path
    (reference,) = build_model_chunks(arch, parallel, cfg.precision, options)
    load_stage_weights([reference], ref_path, arch)
    reference.eval()
    for param in reference.parameters():
        param.requires_grad_(False)
    if cfg.dpo.reference == "on_the_fly":
        log.event("reference", mode="on_the_fly", path=str(ref_path))
        return PreferenceObjective(loss_cfg, reference=reference)
    path = cache_path(source.path, ref_path, source.tokenizer_dir, cfg.train.seq_length)
    sums = load_or_compute_cache(path, reference, source, cfg.train.micro_batch_size, log)
    attach_reference_sums(source, sums)
    del reference
    return PreferenceObjective(loss_cfg)
