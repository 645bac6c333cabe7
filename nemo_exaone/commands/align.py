"""`nemo-exaone align ...`: post-training alignment tools.

- ``align score``: score (prompt, response) JSONL with a trained reward model, in batches.
  Input lines: ``{"prompt": str | [{"role", "content"}, ...], "response": str, ...}``;
  output: the same records, in order, each with ``"score"`` added. The output is written
  atomically (a killed run leaves no partial file), never over the input, and an existing
  output needs ``--overwrite``. Under ``torchrun`` (``--tensor-parallel N``) every rank
  scores and rank 0 writes.
- ``align build-preferences``: prompts JSONL -> N sampled responses per prompt from each
  ``--policy`` -> RM1 picks best and worst -> RM2 must agree -> DPO JSONL plus a report
  (:mod:`nemo_exaone.alignment.preference_builder`). One model is in memory at a time: each
  policy samples every prompt and is freed before the next model loads. Single process.
- ``align average``: weighted average ("model soup") of checkpoints of one architecture
  (:mod:`nemo_exaone.checkpoint.averaging`), streamed tensor by tensor.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "align", help="alignment tools: reward scoring, preference data, checkpoint averaging",
        description="Post-training alignment tools (reward models, preference data).")
    sub = parser.add_subparsers(dest="align_command", metavar="ALIGN_COMMAND")
    sub.required = True
    score = sub.add_parser(
        "score", help="score (prompt, response) JSONL with a reward model",
        description="Score each {prompt, response} line of --input with the reward model "
        "in --ckpt (a run directory, its checkpoints/ folder or an iter_N); write the "
        "records with 'score' added to --out.")
    score.add_argument("--ckpt", required=True, help="reward-model checkpoint or run dir")
    score.add_argument("--input", required=True, help="JSONL of {prompt, response}")
    score.add_argument("--out", required=True, help="output JSONL (written atomically)")
    score.add_argument("--batch-size", type=int, default=8,
                       help="sequences per forward pass (default: 8)")
    score.add_argument("--max-length", type=int, default=None,
                       help="refuse longer prompt+response (default: the model's context)")
    score.add_argument("--tokenizer", default=None,
                       help="tokenizer directory (default: the one the checkpoint carries)")
    score.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    score.add_argument("--tensor-parallel", type=int, default=1,
                       help="TP size (launch with torchrun --nproc-per-node N)")
    score.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    score.set_defaults(func=run_score)
    _register_build_preferences(sub)
    _register_average(sub)


def _tau(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'none'") from None


def _register_build_preferences(sub) -> None:
    build = sub.add_parser(
        "build-preferences", help="sample, score and filter preference pairs (DPO JSONL)",
        description="For each prompt of --prompts, sample --samples-per-prompt responses from "
        "every --policy, keep RM1's best and worst, drop the pair unless --rm2 agrees "
        "(scores y_w above y_l and Kendall tau-b >= --min-tau), and write DPO JSONL "
        "(prompt, chosen_response, rejected_response, rewards, provenance) plus a report.")
    build.add_argument("--prompts", required=True,
                       help='JSONL of {"prompt": str | [{"role", "content"}, ...], ...}')
    build.add_argument("--policy", action="append", required=True, metavar="CKPT",
                       help="policy checkpoint or run dir (repeat for several policies)")
    build.add_argument("--rm1", required=True, help="reward model that picks the pair")
    build.add_argument("--rm2", default=None, help="reward model that must agree (optional)")
    build.add_argument("--samples-per-prompt", type=int, default=4,
                       help="responses per prompt from each policy (default: 4)")
    build.add_argument("--out", required=True, help="output DPO JSONL (written atomically)")
    build.add_argument("--report", default=None,
                       help="report JSON (default: OUT with .report.json)")
    build.add_argument("--max-new-tokens", type=int, default=128)
    build.add_argument("--temperature", type=float, default=1.0)
    build.add_argument("--top-p", type=float, default=0.0, help="0: off (default)")
    build.add_argument("--top-k", type=int, default=0, help="0: off (default)")
    build.add_argument("--seed", type=int, default=1234,
                       help="sampling seed; policy k uses seed + k (default: 1234)")
    build.add_argument("--min-gap", type=float, default=0.0,
                       help="minimum RM1(y_w) - RM1(y_l) (default: 0, any strict gap)")
    build.add_argument("--min-tau", type=_tau, default=0.0,
                       help="minimum Kendall tau-b of RM2 vs RM1 over the responses, or "
                       "'none' (default: 0.0)")
    build.add_argument("--no-rm2-order", action="store_true",
                       help="do not require RM2 to score y_w above y_l")
    build.add_argument("--batch-size", type=int, default=8,
                       help="sequences per generation batch and per scoring forward")
    build.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    build.add_argument("--overwrite", action="store_true",
                       help="replace an existing --out / --report")
    build.set_defaults(func=run_build_preferences)


def _register_average(sub) -> None:
    average = sub.add_parser(
        "average", help="weighted average of checkpoints ('model soup')",
        description="Average the weights of checkpoints of one architecture (uniform, or "
        "--weights), in fp32, one tensor chunk at a time. The result carries the first "
        "checkpoint's architecture record and tokenizer and loads in training and generate.")
    average.add_argument("--ckpt", action="append", required=True, metavar="CKPT",
                         help="checkpoint or run dir (repeat, at least twice)")
    average.add_argument("--weights", default=None,
                         help="comma-separated weights, one per --ckpt, summing to 1 "
                         "(default: uniform)")
    average.add_argument("--normalize", action="store_true",
                         help="divide --weights by their sum instead of requiring 1")
    average.add_argument("--out", required=True, help="output checkpoint directory")
    average.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    average.set_defaults(func=run_average)


def read_scoring_input(path: str | Path) -> list[dict]:
    """Records of a scoring JSONL; a bad line raises ``file:line: reason``."""
    from nemo_exaone.alignment.preference_data import prompt_messages
    from nemo_exaone.config.errors import InputError
    from nemo_exaone.data.jsonl import BadRecordError, get_text, iter_records, require_file

    require_file(path, "--input")
    records = []
    try:
        for line_no, record in iter_records(path, what="records"):
            if "prompt" not in record:
                raise BadRecordError(path, line_no, "missing key 'prompt'")
            prompt_messages(record["prompt"], path, line_no)
            get_text(record, "response", path, line_no)
            records.append(record)
    except BadRecordError as exc:
        raise InputError(str(exc)) from None
    return records


def run_score(args: argparse.Namespace) -> int:
    import torch

    from nemo_exaone.alignment.reward_model import checkpoint_tokenizer, load_reward_model, score
    from nemo_exaone.config.errors import InputError
    from nemo_exaone.data.chat_format import chat_format_for
    from nemo_exaone.runtime.outputs import atomic_files, check_output, refuse_overlap

    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size} must be >= 1")
    # Refuse a bad --out before loading anything.
    refuse_overlap(args.out, [args.input, args.ckpt], output_flag="--out",
                   input_flags=["--input", "--ckpt"])
    check_output(args.out, args.overwrite, flag="--out")
    records = read_scoring_input(args.input)
    chunks, arch, path = load_reward_model(args.ckpt, tensor_parallel=args.tensor_parallel,
                                           precision=args.precision)
    tokenizer = checkpoint_tokenizer(path, args.tokenizer)
    max_length = args.max_length or arch.max_position_embeddings
    pairs = [(r["prompt"], r["response"]) for r in records]
    try:
        values = score(chunks, tokenizer, pairs, batch_size=args.batch_size,
                       max_length=max_length, chat_format=chat_format_for(arch.model_type))
    except ValueError as exc:
        raise InputError(f"--input {args.input}: {exc}") from None
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        with atomic_files([args.out], overwrite=args.overwrite, inputs=[args.input, args.ckpt],
                          input_flags=["--input", "--ckpt"], flags=["--out"]) as (tmp,):
            with open(tmp, "w", encoding="utf-8") as handle:
                for record, value in zip(records, values):
                    handle.write(json.dumps({**record, "score": value}, ensure_ascii=False)
                                 + "\n")
        print(f"scored {len(records)} responses with {path} -> {args.out}")
    return 0


def read_prompts(path: str | Path) -> tuple[list, list[dict]]:
    """(prompts, other fields of each line) of a prompts JSONL; bad lines name file:line."""
    from nemo_exaone.alignment.preference_data import prompt_messages
    from nemo_exaone.config.errors import InputError
    from nemo_exaone.data.jsonl import BadRecordError, iter_records, require_file

    require_file(path, "--prompts")
    prompts, extra = [], []
    try:
        for line_no, record in iter_records(path, what="prompts"):
            if "prompt" not in record:
                raise BadRecordError(path, line_no, "missing key 'prompt'")
            prompt_messages(record["prompt"], path, line_no)  # validates either form
            prompts.append(record["prompt"])
            extra.append({k: v for k, v in record.items() if k != "prompt"})
    except BadRecordError as exc:
        raise InputError(str(exc)) from None
    return prompts, extra


def _free_models() -> None:
    import gc

    import torch

    from nemo_exaone.runtime.distributed import destroy_distributed

    destroy_distributed()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _note(text: str) -> None:
    import sys

    print(f"[build-preferences] {text}", file=sys.stderr, flush=True)


def run_build_preferences(args: argparse.Namespace) -> int:
    import os
    import time

    from nemo_exaone.alignment.preference_builder import (
        PreferenceBuildConfig,
        build_preferences,
        make_reward_fn,
        make_sample_fn,
    )
    from nemo_exaone.alignment.reward_model import (
        checkpoint_has_reward_head,
        checkpoint_tokenizer,
        load_reward_model,
    )
    from nemo_exaone.checkpoint.errors import CheckpointError
    from nemo_exaone.checkpoint.locate import locate_checkpoint
    from nemo_exaone.config.errors import ConfigError, InputError
    from nemo_exaone.data.chat_format import chat_format_for
    from nemo_exaone.inference.loading import checkpoint_tokenizer_dir, load_for_generation
    from nemo_exaone.runtime.outputs import atomic_files, check_output, refuse_overlap

    if int(os.environ.get("WORLD_SIZE", "1")) != 1:
        raise ConfigError("align build-preferences runs in one process (it loads one model at "
                          "a time); run it without torchrun")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be >= 1")
    cfg = PreferenceBuildConfig(
        samples_per_prompt=args.samples_per_prompt, min_score_gap=args.min_gap,
        min_tau=args.min_tau, require_rm2_order=not args.no_rm2_order, seed=args.seed,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p)
    cfg.generation_config()  # sampling settings checked before any model loads
    report_path = args.report or str(Path(args.out).with_suffix(".report.json"))
    inputs = [args.prompts, *args.policy, args.rm1, args.rm2]
    flags = ["--prompts", *["--policy"] * len(args.policy), "--rm1", "--rm2"]
    for output, flag in ((args.out, "--out"), (report_path, "--report")):
        refuse_overlap(output, inputs, output_flag=flag, input_flags=flags)
        check_output(output, args.overwrite, flag=flag)
    prompts, extra = read_prompts(args.prompts)
    # Every checkpoint is checked before the first one loads.
    policies = [locate_checkpoint(p).path for p in args.policy]
    for given, path in zip(args.policy, policies):
        if checkpoint_tokenizer_dir(path) is None:
            raise InputError(f"--policy {given}: checkpoint {path} carries no tokenizer, so "
                             "its responses cannot be decoded")
    judges = {"rm1": args.rm1, "rm2": args.rm2}
    for flag, given in judges.items():
        if given is not None and not checkpoint_has_reward_head(locate_checkpoint(given).path):
            raise CheckpointError(f"--{flag} {given}: not a reward model (no reward_head)")

    names = [p if args.policy.count(p) == 1 else f"{p}#{k}" for k, p in enumerate(args.policy)]

    def sampler(k: int):
        def sample(batch: list, n: int) -> list[list[str]]:
            start = time.perf_counter()
            _note(f"policy {k + 1}/{len(policies)} {policies[k]}: sampling {n} responses for "
                  f"each of {len(batch)} prompts")
            loaded = load_for_generation(policies[k], precision=args.precision,
                                         seed=args.seed + k)
            try:
                fn = make_sample_fn(loaded.chunks, loaded.tokenizer, cfg, policy_index=k,
                                    max_batch_size=args.batch_size,
                                    max_position_embeddings=loaded.arch.max_position_embeddings,
                                    eos_token_id=loaded.arch.eos_token_id,
                                    chat_format=chat_format_for(loaded.arch.model_type))
                out = fn(batch, n)
            finally:
                del loaded
                _free_models()
            _note(f"policy {k + 1}/{len(policies)} done in {time.perf_counter() - start:.1f} s")
            return out
        return sample

    def judge(flag: str):
        def rewards(batch: list, responses: list[list[str]]) -> list[list[float]]:
            start = time.perf_counter()
            count = sum(len(r) for r in responses)
            _note(f"{flag} {judges[flag]}: scoring {count} responses")
            chunks, arch, path = load_reward_model(judges[flag], precision=args.precision)
            try:
                fn = make_reward_fn(chunks, checkpoint_tokenizer(path),
                                    chat_format=chat_format_for(arch.model_type),
                                    batch_size=args.batch_size,
                                    max_length=arch.max_position_embeddings)
                try:
                    out = fn(batch, responses)
                except ValueError as exc:  # a pair longer than the reward model's context
                    raise InputError(f"--{flag} {judges[flag]}: {exc}") from None
            finally:
                del chunks
                _free_models()
            _note(f"{flag} done in {time.perf_counter() - start:.1f} s")
            return out
        return rewards

    records, report = build_preferences(
        prompts, {name: sampler(k) for k, name in enumerate(names)}, judge("rm1"),
        judge("rm2") if args.rm2 is not None else None, cfg, metadata=extra)
    report.settings.update(prompts_file=str(args.prompts), policies=list(args.policy),
                           rm1=args.rm1, rm2=args.rm2)
    with atomic_files([args.out, report_path], overwrite=args.overwrite, inputs=inputs,
                      input_flags=flags, flags=["--out", "--report"]) as (tmp_out, tmp_report):
        with open(tmp_out, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        Path(tmp_report).write_text(report.to_json(), encoding="utf-8")
    print(report.summary())
    print(f"wrote {len(records)} pairs to {args.out}; report {report_path}")
    return 0


def run_average(args: argparse.Namespace) -> int:
    from nemo_exaone.alignment.reward_model import HEAD_KEY
    from nemo_exaone.checkpoint.averaging import average_checkpoints, parse_weights

    weights = parse_weights(args.weights) if args.weights is not None else None
    report = average_checkpoints(args.ckpt, args.out, weights=weights,
                                 normalize=args.normalize, overwrite=args.overwrite,
                                 extra_tensor_keys=(HEAD_KEY,))
    print(report.summary())
    return 0
