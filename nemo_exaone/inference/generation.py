"""Text generation on Megatron-Core's own inference stack, from model chunks already built.

The path is Megatron-Core's: ``GPTInferenceWrapper`` around this rank's ``GPTModel``, a
``TextGenerationController`` (sampling, stop handling, prefill/decode bookkeeping) and the
``StaticInferenceEngine`` on an explicitly built ``StaticInferenceContext`` (the KV cache:
one prefill up to the shortest prompt of the batch, then one-token decode steps). It runs at
any tensor-parallel size: every rank of the job calls :func:`generate` with the same prompts
and gets the same tokens (logits are gathered over TP; sampling uses one seeded generator per
rank, so all TP ranks draw the same token). Verified against transformers' greedy ``generate``
for EXAONE 3.x and 4.0 (sliding-window layers included), on megatron-core 0.16 and 0.19.

Why the static engine and not the dynamic one (the paged-KV engine Megatron keeps): on a
machine without CUDA the dynamic engine needs pin_memory, NVTX, flash-attn and (0.19) a triton
KV-append kernel, and a private attention method whose signature changed between 0.16 and
0.19 would have to be replaced (shared/notes/INFERENCE.md). The static engine runs unpatched
on both supported Megatron-Core lines, on CPU and GPU, with a KV cache; there is no
home-made decode loop here. ``StaticInferenceEngine`` is called with ``legacy=True`` because
its default path silently builds a dynamic context from a 40 GB buffer default and falls back
with a warning when that fails; we build the context ourselves and ask for the static path.

What this module adds on top of Megatron's controller, and why:

- several stop ids (EXAONE's ``[|endofturn|]`` and the checkpoint's ``eos_token_id``, which
  may differ or be a list): Megatron's static path stops on one ``tokenizer.eod`` only, so
  :class:`_StopSetController` overrides its public ``update_generation_status`` hook;
- the caller's RNG state is restored afterwards (the engine reseeds torch's global generator),
  and the model's train/eval mode too, so that a training run (preference-data building,
  online DPO) can generate between steps with the weights it is training, in memory;
- version differences (0.16's ``InferenceWrapperConfig`` vs 0.19's context-only wrapper).

The generated ids exclude the stop token (Megatron's convention); ``finish_reason`` says
whether a stop id or the token budget ended each sequence.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from nemo_exaone.config.errors import ConfigError, InputError

__all__ = ["GenerationConfig", "Generation", "generate", "default_stop_ids"]


@dataclass(frozen=True)
class GenerationConfig:
    """How to decode. Greedy unless ``greedy=False`` (then temperature / top-k / top-p).

    Megatron's sampler applies top-k *or* top-p, not both; ``seed`` makes sampling
    reproducible (same seed, prompts and model: same tokens, at any TP size).
    """

    max_new_tokens: int
    greedy: bool = True
    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filtering
    top_p: float = 0.0  # 0.0: no nucleus filtering
    seed: int = 1234
    stop_ids: tuple[int, ...] = ()  # generation of a sequence ends at the first of these

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens!r} must be an integer >= 1")
        if not self.temperature > 0:
            raise ConfigError(f"temperature={self.temperature!r} must be > 0")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ConfigError(f"top_k={self.top_k!r} must be an integer >= 0")
        if not 0.0 <= self.top_p <= 1.0:
            raise ConfigError(f"top_p={self.top_p!r} must be in [0, 1]")
        if self.top_k > 0 and self.top_p > 0.0:
            raise ConfigError(f"top_k={self.top_k} and top_p={self.top_p}: Megatron-Core's "
                              "sampler applies one of them; set the other to 0")
        if any(not isinstance(i, int) or i < 0 for i in self.stop_ids):
            raise ConfigError(f"stop_ids={self.stop_ids!r} must be non-negative integers")


@dataclass
class Generation:
    """One prompt's result: the generated ids (stop token excluded) and why it ended."""

    prompt_ids: list[int]
    token_ids: list[int]
    finish_reason: str  # "stop" (a stop id was generated) or "length" (max_new_tokens)
    text: str | None = None  # decoded ``token_ids`` when a tokenizer was given


def default_stop_ids(tokenizer=None, eos_token_id: int | Sequence[int] | None = None
                     ) -> tuple[int, ...]:
    """``[|endofturn|]`` of ``tokenizer`` (an :class:`ExaoneTokenizer`) plus the model's
    ``eos_token_id`` (an int or a list, as in HF configs), without duplicates."""
    ids: list[int] = []
    if tokenizer is not None:
        ids.append(int(tokenizer.eot_id))
    if eos_token_id is not None:
        ids += [int(eos_token_id)] if isinstance(eos_token_id, int) else [int(i) for i in
                                                                           eos_token_id]
    return tuple(dict.fromkeys(ids))


# ----------------------------------------------------------------------------- Megatron glue
class _TokenizerAdapter:
    """What Megatron's controller asks of a tokenizer: ``eod`` (also its prompt padding id),
    ``bos`` and ``detokenize``. Prompts arrive as ids, so ``tokenize`` is never needed."""

    def __init__(self, tokenizer, eod: int) -> None:
        self._tokenizer = tokenizer
        self.eod = eod
        self.bos = getattr(tokenizer, "bos_id", None)

    def tokenize(self, text: str) -> list[int]:
        if self._tokenizer is None:
            raise InputError("a text prompt needs a tokenizer; pass token ids instead")
        return self._tokenizer.encode(text)

    def detokenize(self, ids, skip_special_tokens: bool = True) -> str:
        if self._tokenizer is None:
            return ""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


def _controller_class():
    from megatron.core.inference.text_generation_controllers.text_generation_controller import (
        TextGenerationController,
    )

    class _StopSetController(TextGenerationController):
        """Megatron's controller, ending a sequence at any of ``stop_ids`` (not one eod)."""

        stop_ids: torch.Tensor

        def update_generation_status(self, updated_prompts_tokens, generation_started,
                                     current_context_end_position, is_generation_done_tensor,
                                     generated_sequence_lengths, termination_id=None):
            latest = updated_prompts_tokens[:, current_context_end_position]
            stop = self.stop_ids.to(latest.device)
            if termination_id == -1 or stop.numel() == 0:  # no early termination
                reached = torch.zeros_like(generation_started)
            else:
                reached = torch.isin(latest, stop) & generation_started
            is_generation_done_tensor = is_generation_done_tensor | reached
            generated_sequence_lengths += ~is_generation_done_tensor & generation_started
            return is_generation_done_tensor, generated_sequence_lengths.int()

    return _StopSetController


def _inference_wrapper(model, max_batch_size: int, max_sequence_length: int):
    """``GPTInferenceWrapper`` on a fresh ``StaticInferenceContext`` (the KV cache), built the
    way the installed Megatron-Core wants it."""
    from megatron.core.inference.contexts import StaticInferenceContext
    from megatron.core.inference.model_inference_wrappers.gpt.gpt_inference_wrapper import (
        GPTInferenceWrapper,
    )

    context = StaticInferenceContext(max_batch_size, max_sequence_length)
    try:  # megatron-core <= 0.16: sizes travel in an InferenceWrapperConfig
        from megatron.core.inference.model_inference_wrappers.inference_wrapper_config import (
            InferenceWrapperConfig,
        )
    except ImportError:  # >= 0.19: the context carries them
        return GPTInferenceWrapper(model, context)
    config = model.config
    wrapper_config = InferenceWrapperConfig(
        hidden_size=config.hidden_size, params_dtype=config.params_dtype,
        inference_batch_times_seqlen_threshold=-1,  # never split a batch into micro-batches
        padded_vocab_size=model.vocab_size, inference_max_requests=max_batch_size,
        inference_max_seq_length=max_sequence_length,
        fp32_residual_connection=config.fp32_residual_connection)
    return GPTInferenceWrapper(model, wrapper_config, context)


def _inference_mode_flag():
    """Megatron-Core >= 0.19's process-wide ``InferenceMode`` class (None before 0.19)."""
    try:
        from megatron.core.inference.utils import InferenceMode
    except ImportError:
        return None
    return InferenceMode


@contextlib.contextmanager
def _preserved_state(model: torch.nn.Module) -> Iterator[None]:
    """Give back the caller's RNG streams, train/eval flags and (0.19+) Megatron's
    process-wide ``InferenceMode`` flag: the engine reseeds torch's global generator, puts
    the model in eval mode and sets that flag for good (after which a training forward on
    the same ranks fails: 'Inference must always gather TP logits')."""
    modes = [(m, m.training) for m in model.modules()]
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state() if torch.cuda.is_available() else None
    flag = _inference_mode_flag()
    was_active = flag is not None and flag.is_active()
    try:
        yield
    finally:
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state)
        for module, training in modes:
            module.training = training
        if flag is not None and not was_active:
            flag.unset_active()


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Silence the engine's per-batch progress bar (noise on stderr for every call)."""
    from megatron.core.inference.engines import static_engine

    original = static_engine.tqdm
    static_engine.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        static_engine.tqdm = original


def check_prompts(prompts: Sequence[Sequence[int]], vocab_size: int) -> list[list[int]]:
    """The prompts as lists of ints; an empty prompt or an id outside the vocabulary is an
    error naming the prompt and the ids."""
    if not prompts:
        raise InputError("no prompts to generate from")
    out = []
    for index, prompt in enumerate(prompts):
        ids = [int(i) for i in prompt]
        if not ids:
            raise InputError(f"prompt {index} is empty: generation needs at least one token")
        bad = [i for i in ids if not 0 <= i < vocab_size]
        if bad:
            raise InputError(f"prompt {index}: token id(s) {bad[:5]} are outside the model's "
                             f"vocabulary [0, {vocab_size})")
        out.append(ids)
    return out


def length_groups(lengths: Sequence[int], max_new_tokens: int, max_batch_size: int
                  ) -> list[list[int]]:
    """Prompt indices in static batches: by length, at most ``max_batch_size`` each, and the
    longest prompt of a batch at most ``max(1, max_new_tokens // 2)`` tokens longer than its
    shortest.

    Megatron's static engine prefills a batch only up to its shortest prompt and feeds the
    rest of the longer prompts one token per step; a batch costs about
    ``spread + max_new_tokens`` forward steps, so prompts far apart in length run faster in
    separate batches than in one.
    """
    allowed = max(1, max_new_tokens // 2)
    groups: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        group = groups[-1] if groups else None
        if (group is None or len(group) >= max_batch_size
                or lengths[index] - lengths[group[0]] > allowed):
            groups.append([index])
        else:
            group.append(index)
    return groups


def generate(model_chunks: list, prompts: Sequence[Sequence[int]], config: GenerationConfig,
             *, tokenizer=None, max_batch_size: int | None = None,
             max_position_embeddings: int | None = None) -> list[Generation]:
    """Generate a continuation of every prompt (lists of token ids) with this rank's model.

    Collective: every rank of the tensor-parallel group calls it with the same arguments (as a
    training step would); all get the same result. ``model_chunks`` are the chunks a training
    run or :func:`load_for_generation` built (DDP / Float16Module wrappers are looked
    through); the weights are used in place, nothing is copied. ``tokenizer`` (optional)
    decodes the results into ``Generation.text``. Prompts run in static batches of up to
    ``max_batch_size`` (default: all of them) grouped by length (:func:`length_groups`);
    results come back in prompt order. ``max_position_embeddings`` (the
    model's trained context, when known) bounds prompt + new tokens.
    """
    from megatron.core import parallel_state
    from megatron.core.inference.inference_request import InferenceRequest
    from megatron.core.inference.sampling_params import SamplingParams

    from nemo_exaone.model.sharding import unwrap

    if len(model_chunks) != 1:
        raise ConfigError(f"generation runs one model chunk per rank, got {len(model_chunks)} "
                          "(virtual pipeline stages): Megatron-Core's inference wrapper does "
                          "not support the interleaved schedule")
    if parallel_state.get_pipeline_model_parallel_world_size() != 1:
        raise ConfigError("generation is implemented and tested at pipeline_model_parallel_size"
                          f"=1 (this job has {parallel_state.get_pipeline_model_parallel_world_size()}"
                          "); use tensor parallelism for models that do not fit one device")
    model = unwrap(model_chunks[0])
    prompts = check_prompts(prompts, model.vocab_size)
    longest = max(len(p) for p in prompts) + config.max_new_tokens
    if max_position_embeddings is not None and longest > max_position_embeddings:
        raise ConfigError(f"the longest prompt plus max_new_tokens is {longest} tokens, more "
                          f"than the model's max_position_embeddings={max_position_embeddings}")
    groups = length_groups([len(p) for p in prompts], config.max_new_tokens,
                           max_batch_size or len(prompts))
    batch = max(len(g) for g in groups)

    controller_class = _controller_class()
    with _preserved_state(model), warnings.catch_warnings():
        # The engine announces its own deprecation on every construction.
        warnings.filterwarnings("ignore", message=r".*static engine will be deprecated.*")
        from megatron.core.inference.engines import StaticInferenceEngine

        wrapper = _inference_wrapper(model, batch, longest)
        stops = config.stop_ids
        controller = controller_class(wrapper, _TokenizerAdapter(
            tokenizer, stops[0] if stops else (getattr(tokenizer, "eot_id", None) or 0)))
        controller.stop_ids = torch.tensor(stops, dtype=torch.long)
        controller.sampling_rng.manual_seed(config.seed)
        engine = StaticInferenceEngine(controller, max_batch_size=batch, random_seed=config.seed,
                                       legacy=True)
        params = SamplingParams(
            temperature=1.0 if config.greedy else float(config.temperature),
            top_k=1 if config.greedy else int(config.top_k),
            top_p=0.0 if config.greedy else float(config.top_p),
            num_tokens_to_generate=config.max_new_tokens)
        done: dict[int, object] = {}
        for group in groups:  # one static batch each, in order
            requests = [InferenceRequest(request_id=engine.get_new_request_id(), prompt="",
                                         prompt_tokens=list(prompts[i]), sampling_params=params)
                        for i in group]
            with _quiet_progress():
                done.update(zip(group, engine.generate(inference_requests=requests)))
    results = []
    for prompt, request in zip(prompts, (done[i] for i in range(len(prompts)))):
        ids = [int(t) for t in torch.as_tensor(request.generated_tokens).tolist()]
        reason = "length" if len(ids) >= config.max_new_tokens else "stop"
        text = tokenizer.decode(ids, skip_special_tokens=True) if tokenizer is not None else None
        results.append(Generation(prompt, ids, reason, text))
    return results
