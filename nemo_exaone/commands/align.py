"""`nemo-exaone align ...`: post-training alignment tools.

- ``align score``: score (prompt, response) JSONL with a trained reward model, in batches.
  Input lines: ``{"prompt": str | [{"role", "content"}, ...], "response": str, ...}``;
  output: the same records, in order, each with ``"score"`` added. The output is written
  atomically (a killed run leaves no partial file), never over the input, and an existing
  output needs ``--overwrite``. Under ``torchrun`` (``--tensor-parallel N``) every rank
  scores and rank 0 writes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "align", help="alignment tools: score responses with a reward model",
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


def read_scoring_input(path: str | Path) -> list[dict]:
    """Records of a scoring JSONL; a bad line raises ``file:line: reason``."""
    from nemo_exaone.alignment.preference_data import prompt_messages
    from nemo_exaone.config.errors import InputError
    from nemo_exaone.data.jsonl import BadRecordError, get_text, iter_records

    if not Path(path).is_file():
        raise FileNotFoundError(f"--input {path}: no such file")
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
                       max_length=max_length)
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
