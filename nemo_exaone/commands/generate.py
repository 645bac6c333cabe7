"""``nemo-exaone generate``: continue prompts with a checkpoint, on Megatron-Core's inference
stack (KV cache). Greedy unless a sampling flag (--temperature, --top-k, --top-p) is given.

Run it as a plain process, or under ``torchrun --nproc-per-node N ... --tp N`` for tensor
parallelism (rank 0 prints). Stops at ``[|endofturn|]`` and the checkpoint's eos token.
``--json`` prints one object per prompt, a line each: ``{"token_ids": [generated ids, the
stop token excluded], "text": ..., "finish_reason": "stop" | "length"}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from nemo_exaone.commands.arguments import add_checkpoint
from nemo_exaone.config.errors import ConfigError, InputError


def parse_prompt_ids(text: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``; anything else is an error naming the bad entry."""
    ids = []
    for index, part in enumerate(text.split(",")):
        part = part.strip()
        try:
            value = int(part)
        except ValueError:
            raise InputError(f"--prompt-ids {text!r}: entry {index} ({part!r}) is not an "
                             "integer token id") from None
        if value < 0:
            raise InputError(f"--prompt-ids {text!r}: entry {index} ({value}) is negative")
        ids.append(value)
    return ids


def _sampling(args: argparse.Namespace) -> dict:
    sampled = any(v is not None for v in (args.temperature, args.top_k, args.top_p))
    if not sampled:
        return {"greedy": True, "seed": args.seed}
    return {"greedy": False, "temperature": 1.0 if args.temperature is None else args.temperature,
            "top_k": args.top_k or 0, "top_p": args.top_p or 0.0, "seed": args.seed}


def _prompts(args: argparse.Namespace, tokenizer, ckpt_path,
             model_type: str = "exaone") -> list[list[int]]:
    if args.prompt_ids is not None:
        if args.chat:
            raise ConfigError("--chat renders a text prompt in the chat format; use --prompt")
        return [parse_prompt_ids(text) for text in args.prompt_ids]
    if tokenizer is None:
        raise InputError(f"checkpoint {ckpt_path} carries no tokenizer (no tokenizer files in "
                         "its hf_identity/), so --prompt cannot be tokenized: pass --tokenizer "
                         "DIR, or token ids with --prompt-ids")
    if args.chat:
        from nemo_exaone.data.chat_format import chat_format_for, encode_chat

        # The checkpoint's family decides the format (EXAONE 4.0: [|user|]\n... and an empty
        # <think> block opening the reply).
        return [encode_chat(tokenizer, [{"role": "user", "content": text}],
                            add_generation_prompt=True,
                            chat_format=chat_format_for(model_type)).ids
                for text in args.prompt]
    return [tokenizer.encode(text) for text in args.prompt]


def run(args: argparse.Namespace) -> int:
    import torch

    from nemo_exaone.checkpoint.locate import locate_checkpoint
    from nemo_exaone.checkpoint.metadata import read_checkpoint_arch
    from nemo_exaone.config.parallel import ParallelConfig, validate_parallel
    from nemo_exaone.inference import GenerationConfig, default_stop_ids, generate
    from nemo_exaone.inference.generation import check_prompts
    from nemo_exaone.inference.loading import load_for_generation, load_tokenizer_for
    from nemo_exaone.runtime.distributed import destroy_distributed

    config = GenerationConfig(max_new_tokens=args.max_new_tokens, **_sampling(args))
    # Everything a user can get wrong is checked before the model is built.
    found = locate_checkpoint(args.ckpt)
    arch = read_checkpoint_arch(found.path)
    tokenizer = load_tokenizer_for(found.path, args.tokenizer)
    prompts = check_prompts(_prompts(args, tokenizer, found.path, arch.model_type),
                            arch.vocab_size)
    config = dataclasses.replace(config, stop_ids=default_stop_ids(tokenizer, arch.eos_token_id))
    validate_parallel(arch, ParallelConfig(tensor_model_parallel_size=args.tp),
                      int(os.environ.get("WORLD_SIZE", "1")))  # --tp N needs N torchrun ranks
    loaded = load_for_generation(found.path, tensor_parallel=args.tp, tokenizer_dir=args.tokenizer)
    try:
        first = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
        if first:
            print(found.note, file=sys.stderr, flush=True)
        results = generate(loaded.chunks, prompts, config, tokenizer=loaded.tokenizer,
                           max_position_embeddings=arch.max_position_embeddings)
    finally:
        destroy_distributed()
    if not first:
        return 0
    for result in results:
        if args.json:
            print(json.dumps({"token_ids": result.token_ids, "text": result.text or "",
                              "finish_reason": result.finish_reason}, ensure_ascii=False))
        elif result.text is not None:
            print(result.text)
        else:
            print(" ".join(str(i) for i in result.token_ids))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate text from a checkpoint (Megatron-Core inference, KV cache)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkpoint(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", action="append", metavar="TEXT",
                        help="prompt text (repeat for a batch; needs the checkpoint's "
                             "tokenizer or --tokenizer)")
    source.add_argument("--prompt-ids", action="append", metavar="1,2,3",
                        help="prompt as comma-separated token ids (repeat for a batch)")
    parser.add_argument("--max-new-tokens", type=int, required=True,
                        help="largest number of tokens to generate per prompt")
    parser.add_argument("--chat", action="store_true",
                        help="wrap --prompt as a user turn in the EXAONE chat format and "
                             "generate the assistant reply")
    parser.add_argument("--json", action="store_true",
                        help='print {"token_ids": [...], "text": ...} per prompt, one a line')
    parser.add_argument("--temperature", type=float, default=None,
                        help="sample at this temperature (default: greedy)")
    parser.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass")
    parser.add_argument("--seed", type=int, default=1234, help="sampling seed (default 1234)")
    parser.add_argument("--tp", type=int, default=1,
                        help="tensor parallel size (run under torchrun with that many ranks)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer directory to use instead of the checkpoint's")
    parser.set_defaults(func=run, strict_errors=True)
