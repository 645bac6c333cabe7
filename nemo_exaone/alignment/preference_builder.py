"""Preference pairs from sampled responses: the EXAONE 3.5 recipe (issue 9, item 6).

For each prompt x: sample N responses from each of K policies, score them with a reward
model RM1, keep the best (y_w) and the worst (y_l) by RM1; a second reward model RM2 scores
the same responses and the pair is kept only if RM2 agrees with RM1 (shared/notes/EXAONE.md:
"pairs whose two rankings agree too little are dropped"). The report does not publish its
agreement statistic or threshold, so both checks are explicit settings here:

- ``rm2_orders_pair``: RM2 scores y_w strictly above y_l (``require_rm2_order``);
- Kendall's tau-b between the RM1 and RM2 scores of all the prompt's responses (ties
  handled as tau-b does; undefined, reported as None, when either side is all ties), at
  least ``min_tau`` (None: no tau check).

Everything model-specific is injected, so the same code serves the ``nemo-exaone align
build-preferences`` command (checkpoints loaded one at a time), online DPO (the policy being
trained, in memory) and tests (rule-based rewards):

- ``sample_fn(prompts, n) -> list[list[str]]``: n responses per prompt;
- ``rm_fn(prompts, responses_per_prompt) -> list[list[float]]``: one score per response.

:func:`make_sample_fn` and :func:`make_reward_fn` build them from model chunks held in memory.
Output records are NeMo-Aligner DPO JSONL (``prompt``, ``chosen_response``,
``rejected_response``, ``chosen_reward``, ``rejected_reward``) plus provenance; the DPO
reader (:func:`~nemo_exaone.alignment.preference_data.read_preference_jsonl`) reads them.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from nemo_exaone.config.errors import ConfigError

__all__ = [
    "DROP_REASONS",
    "PreferenceBuildConfig",
    "PairDecision",
    "BuildReport",
    "kendall_tau_b",
    "choose_pair",
    "build_preferences",
    "make_sample_fn",
    "make_reward_fn",
]

Prompt = str | list[dict[str, str]]
SampleFn = Callable[[list[Prompt], int], list[list[str]]]
RewardFn = Callable[[list[Prompt], list[list[str]]], list[list[float]]]

KEPT = "kept"
# Why a prompt gives no pair, in the order choose_pair checks them.
DROP_REASONS = ("too_few_responses", "duplicate_responses", "all_equal", "gap_below_min",
                "rm2_disagrees", "tau_below_threshold")


@dataclass(frozen=True)
class PreferenceBuildConfig:
    """How pairs are sampled and filtered.

    ``samples_per_prompt`` is per policy (K policies give K*N responses a prompt).
    ``min_score_gap``: RM1(y_w) - RM1(y_l) must be at least this (0: any strict gap).
    ``min_tau``: Kendall tau-b floor for RM2 vs RM1 (None: not checked; the default 0.0
    drops prompts on which RM2 ranks the responses more often against RM1 than with it).
    ``require_rm2_order``: RM2 must score y_w strictly above y_l. Sampling fields feed
    :class:`~nemo_exaone.inference.GenerationConfig` (temperature sampling, never greedy:
    N greedy samples would be identical); policy k samples with seed ``seed + k``.
    """

    samples_per_prompt: int = 4
    min_score_gap: float = 0.0
    min_tau: float | None = 0.0
    require_rm2_order: bool = True
    seed: int = 1234
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.samples_per_prompt, bool) or not isinstance(
                self.samples_per_prompt, int) or self.samples_per_prompt < 1:
            raise ConfigError(f"samples_per_prompt={self.samples_per_prompt!r} must be an "
                              "integer >= 1")
        if not (isinstance(self.min_score_gap, int | float)
                and math.isfinite(self.min_score_gap) and self.min_score_gap >= 0):
            raise ConfigError(f"min_score_gap={self.min_score_gap!r} must be a finite number "
                              ">= 0")
        if self.min_tau is not None and not (isinstance(self.min_tau, int | float)
                                             and -1.0 <= self.min_tau <= 1.0):
            raise ConfigError(f"min_tau={self.min_tau!r} must be in [-1, 1] (or None: no "
                              "tau check)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed={self.seed!r} must be an integer")

    def generation_config(self, policy_index: int = 0, stop_ids: tuple[int, ...] = ()):
        """The sampling :class:`GenerationConfig` for policy ``policy_index``."""
        from nemo_exaone.inference import GenerationConfig

        return GenerationConfig(max_new_tokens=self.max_new_tokens, greedy=False,
                                temperature=self.temperature, top_k=self.top_k,
                                top_p=self.top_p, seed=self.seed + policy_index,
                                stop_ids=stop_ids)


@dataclass(frozen=True)
class PairDecision:
    """What :func:`choose_pair` decided for one prompt's responses.

    ``reason`` is ``"kept"`` or one of :data:`DROP_REASONS`. Indices and rewards are set
    whenever RM1 singles out a best and a worst response (also for pairs dropped later, so
    the report can say what RM2 thought of them); ``tau`` is None without RM2 or when it is
    undefined (all ties on one side).
    """

    reason: str
    chosen_index: int | None = None
    rejected_index: int | None = None
    chosen_reward: float | None = None
    rejected_reward: float | None = None
    tau: float | None = None
    rm2_orders_pair: bool | None = None
    rm2_chosen_reward: float | None = None
    rm2_rejected_reward: float | None = None

    @property
    def kept(self) -> bool:
        return self.reason == KEPT

    @property
    def gap(self) -> float | None:
        if self.chosen_reward is None or self.rejected_reward is None:
            return None
        return self.chosen_reward - self.rejected_reward


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b of two score lists: (C - D) / sqrt((P - Tx)(P - Ty)) over the
    P = n(n-1)/2 pairs, C/D concordant/discordant pairs, Tx/Ty pairs tied in x/y. None when
    undefined (fewer than two items, or every pair tied in x or in y). O(n^2): n is the
    number of responses a prompt, a handful."""
    if len(x) != len(y):
        raise ValueError(f"kendall_tau_b: {len(x)} scores vs {len(y)}")
    n = len(x)
    concordant = discordant = tied_x = tied_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0:
                tied_x += 1
            if dy == 0:
                tied_y += 1
            if dx * dy > 0:
                concordant += 1
            elif dx * dy < 0:
                discordant += 1
    pairs = n * (n - 1) // 2
    denominator = (pairs - tied_x) * (pairs - tied_y)
    if denominator == 0:
        return None
    return (concordant - discordant) / math.sqrt(denominator)


def _check_scores(scores: Sequence[float], n: int, what: str) -> list[float]:
    if len(scores) != n:
        raise ValueError(f"{what}: {len(scores)} scores for {n} responses")
    out = []
    for i, value in enumerate(scores):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise ValueError(f"{what}[{i}] = {value!r} is not a finite number")
        out.append(float(value))
    return out


def choose_pair(responses: Sequence[str], rm1: Sequence[float], rm2: Sequence[float] | None,
                cfg: PreferenceBuildConfig) -> PairDecision:
    """Pick (best, worst) by RM1 and check RM2's agreement; a pure function.

    Checks, in order (the first that fails is the reason): at least two responses; not all
    the same text (whitespace-stripped); RM1 not all tied; RM1 gap >= ``min_score_gap``;
    best and worst texts differ; RM2 scores y_w above y_l (``require_rm2_order``); tau-b >=
    ``min_tau``. Ties in RM1 resolve to the first best and the first worst response.
    """
    n = len(responses)
    first = _check_scores(rm1, n, "rm1")
    second = _check_scores(rm2, n, "rm2") if rm2 is not None else None
    if n < 2:
        return PairDecision("too_few_responses")
    texts = [r.strip() for r in responses]
    if len(set(texts)) == 1:
        return PairDecision("duplicate_responses")
    if max(first) == min(first):
        return PairDecision("all_equal")
    best, worst = first.index(max(first)), first.index(min(first))
    tau = kendall_tau_b(first, second) if second is not None else None
    decided = dict(chosen_index=best, rejected_index=worst, chosen_reward=first[best],
                   rejected_reward=first[worst], tau=tau)
    if second is not None:
        decided.update(rm2_orders_pair=second[best] > second[worst],
                       rm2_chosen_reward=second[best], rm2_rejected_reward=second[worst])
    if first[best] - first[worst] < cfg.min_score_gap:
        return PairDecision("gap_below_min", **decided)
    if texts[best] == texts[worst]:
        return PairDecision("duplicate_responses", **decided)
    if second is not None:
        if cfg.require_rm2_order and not decided["rm2_orders_pair"]:
            return PairDecision("rm2_disagrees", **decided)
        if cfg.min_tau is not None and (tau is None or tau < cfg.min_tau):
            return PairDecision("tau_below_threshold", **decided)
    return PairDecision(KEPT, **decided)


@dataclass
class BuildReport:
    """What a build did: pairs kept, prompts dropped by reason, RM2 agreement.

    ``mean_tau``: over prompts with a defined tau (kept or not); ``rm2_order_rate``: share
    of RM1 pairs (best != worst) that RM2 orders the same way; ``mean_gap``: RM1 gap of the
    kept pairs. ``kept + sum(dropped.values()) == prompts``.
    """

    prompts: int = 0
    responses: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    mean_tau: float | None = None
    tau_defined: int = 0
    rm2_order_rate: float | None = None
    mean_gap: float | None = None
    chosen_by_policy: dict[str, int] = field(default_factory=dict)
    rejected_by_policy: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def summary(self) -> str:
        """A few lines for the terminal."""
        def num(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        lines = [f"preference pairs: {self.kept} kept of {self.prompts} prompts "
                 f"({self.responses} responses scored)"]
        for reason in DROP_REASONS:
            if self.dropped.get(reason):
                lines.append(f"  dropped {reason}: {self.dropped[reason]}")
        lines.append(f"RM2 agreement: mean Kendall tau-b {num(self.mean_tau)} over "
                     f"{self.tau_defined} prompts; RM2 orders y_w above y_l in "
                     f"{num(self.rm2_order_rate)} of RM1 pairs")
        lines.append(f"mean RM1 gap of kept pairs: {num(self.mean_gap)}")
        if len(self.chosen_by_policy) + len(self.rejected_by_policy) > 0:
            lines.append("chosen by policy: " + ", ".join(
                f"{k}={v}" for k, v in sorted(self.chosen_by_policy.items())))
            lines.append("rejected by policy: " + ", ".join(
                f"{k}={v}" for k, v in sorted(self.rejected_by_policy.items())))
        return "\n".join(lines)


def _policies(sample_fn: SampleFn | Sequence[SampleFn] | Mapping[str, SampleFn]
              ) -> list[tuple[str, SampleFn]]:
    if isinstance(sample_fn, Mapping):
        named = list(sample_fn.items())
    elif callable(sample_fn):
        named = [("policy0", sample_fn)]
    else:
        named = [(f"policy{i}", fn) for i, fn in enumerate(sample_fn)]
    if not named:
        raise ValueError("build_preferences: no sample_fn (policy) given")
    for name, fn in named:
        if not callable(fn):
            raise TypeError(f"sample_fn {name!r} is not callable")
    return named


def _per_prompt(values: Any, prompts: int, what: str) -> list:
    if not isinstance(values, Sequence) or len(values) != prompts:
        got = len(values) if isinstance(values, Sequence) else type(values).__name__
        raise ValueError(f"{what} returned {got} entries for {prompts} prompts")
    return list(values)


def build_preferences(
    prompts: Sequence[Prompt],
    sample_fn: SampleFn | Sequence[SampleFn] | Mapping[str, SampleFn],
    rm1_fn: RewardFn,
    rm2_fn: RewardFn | None,
    cfg: PreferenceBuildConfig,
    *,
    metadata: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], BuildReport]:
    """Sample, score and filter; return the kept pairs (DPO JSONL records) and the report.

    ``sample_fn``: one callable, a list (K policies, named ``policy0``...) or a mapping
    name -> callable; each is called once with all prompts, in order, so a caller that
    loads a checkpoint inside it holds one model at a time. ``rm1_fn`` and then ``rm2_fn``
    are each called once with every prompt's merged responses. ``metadata[i]`` (e.g. an
    ``id``) is copied into prompt i's record under keys the record does not already use.
    """
    prompts = list(prompts)
    if metadata is not None and len(metadata) != len(prompts):
        raise ValueError(f"metadata has {len(metadata)} entries for {len(prompts)} prompts")
    responses: list[list[str]] = [[] for _ in prompts]
    origin: list[list[str]] = [[] for _ in prompts]
    for name, fn in _policies(sample_fn):
        sampled = _per_prompt(fn(prompts, cfg.samples_per_prompt), len(prompts),
                              f"sample_fn {name!r}")
        for i, texts in enumerate(sampled):
            if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
                raise ValueError(f"sample_fn {name!r}: prompt {i}: expected a list of "
                                 "strings")
            responses[i].extend(texts)
            origin[i].extend([name] * len(texts))
    scores1 = _per_prompt(rm1_fn(prompts, responses), len(prompts), "rm1_fn")
    scores2 = _per_prompt(rm2_fn(prompts, responses), len(prompts), "rm2_fn") \
        if rm2_fn is not None else [None] * len(prompts)

    records: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    taus, gaps, orders = [], [], []
    chosen_by: Counter[str] = Counter()
    rejected_by: Counter[str] = Counter()
    for i, prompt in enumerate(prompts):
        decision = choose_pair(responses[i], scores1[i], scores2[i], cfg)
        reasons[decision.reason] += 1
        if decision.tau is not None:
            taus.append(decision.tau)
        if decision.rm2_orders_pair is not None:
            orders.append(decision.rm2_orders_pair)
        if not decision.kept:
            continue
        w, lo = decision.chosen_index, decision.rejected_index
        gaps.append(decision.gap)
        chosen_by[origin[i][w]] += 1
        rejected_by[origin[i][lo]] += 1
        record: dict[str, Any] = {
            "prompt": prompt, "chosen_response": responses[i][w],
            "rejected_response": responses[i][lo], "chosen_reward": decision.chosen_reward,
            "rejected_reward": decision.rejected_reward, "chosen_policy": origin[i][w],
            "rejected_policy": origin[i][lo], "num_responses": len(responses[i])}
        if scores2[i] is not None:
            record.update(chosen_rm2_reward=decision.rm2_chosen_reward,
                          rejected_rm2_reward=decision.rm2_rejected_reward,
                          rm2_kendall_tau=decision.tau)
        for key, value in (metadata[i] if metadata is not None else {}).items():
            record.setdefault(key, value)
        records.append(record)

    report = BuildReport(
        prompts=len(prompts), responses=sum(len(r) for r in responses), kept=reasons[KEPT],
        dropped={r: reasons[r] for r in DROP_REASONS if reasons[r]},
        mean_tau=sum(taus) / len(taus) if taus else None, tau_defined=len(taus),
        rm2_order_rate=sum(orders) / len(orders) if orders else None,
        mean_gap=sum(gaps) / len(gaps) if gaps else None,
        chosen_by_policy=dict(chosen_by), rejected_by_policy=dict(rejected_by),
        settings={**asdict(cfg), "rm2": rm2_fn is not None})
    return records, report


# ------------------------------------------------------------------ in-memory models
def _messages(prompt: Prompt) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def make_sample_fn(model_chunks: list, tokenizer, cfg: PreferenceBuildConfig, *,
                   policy_index: int = 0, max_batch_size: int | None = None,
                   max_position_embeddings: int | None = None,
                   eos_token_id: int | Sequence[int] | None = None,
                   chat_format: str = "exaone3") -> SampleFn:
    """A ``sample_fn`` that samples from model chunks held in memory (a loaded checkpoint or
    the policy being trained): prompts rendered in ``chat_format`` (the policy family's,
    ``chat_format_for(arch.model_type)``) with the generation prompt, each repeated n times
    in one :func:`~nemo_exaone.inference.generate` call, stopping at ``[|endofturn|]`` (and
    ``eos_token_id``). Collective under tensor parallelism."""
    from nemo_exaone.data.chat_format import encode_chat
    from nemo_exaone.inference import default_stop_ids, generate

    if tokenizer is None:
        raise ValueError("sampling text responses needs the policy's tokenizer")
    config = cfg.generation_config(policy_index, default_stop_ids(tokenizer, eos_token_id))

    def sample(prompts: list[Prompt], n: int) -> list[list[str]]:
        ids = [encode_chat(tokenizer, _messages(p), add_generation_prompt=True,
                           chat_format=chat_format).ids for p in prompts]
        repeated = [prompt_ids for prompt_ids in ids for _ in range(n)]
        results = generate(model_chunks, repeated, config, tokenizer=tokenizer,
                           max_batch_size=max_batch_size,
                           max_position_embeddings=max_position_embeddings)
        texts = [r.text or "" for r in results]
        return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]

    return sample


def make_reward_fn(model_chunks: list, tokenizer, *, chat_format: str, batch_size: int = 8,
                   max_length: int | None = None) -> RewardFn:
    """A ``rm_fn`` scoring with a reward model held in memory
    (:func:`~nemo_exaone.alignment.reward_model.score`, all responses in one flat batch
    stream), rendering in ``chat_format``: the reward model's family
    (``chat_format_for(arch.model_type)``), which may differ from the policies'."""
    from nemo_exaone.alignment.reward_model import score

    def rewards(prompts: list[Prompt], responses: list[list[str]]) -> list[list[float]]:
        pairs = [(p, r) for p, rs in zip(prompts, responses) for r in rs]
        flat = score(model_chunks, tokenizer, pairs, batch_size=batch_size,
                     max_length=max_length, chat_format=chat_format) if pairs else []
        out, start = [], 0
        for rs in responses:
            out.append(flat[start:start + len(rs)])
            start += len(rs)
        return out

    return rewards
