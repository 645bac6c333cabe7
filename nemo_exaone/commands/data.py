"""``nemo-exaone data ...``: tokenizer training, preprocessing, blends, decontamination.

Handlers import their heavy modules lazily so that ``nemo-exaone --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register"]


def _print_json(payload: dict) -> None:
    print(json.dumps(payload, ensure_ascii=False, indent=2))


def _train_tokenizer(args: argparse.Namespace) -> int:
    from nemo_exaone.data.tokenizer_training import TokenizerTrainingConfig, train_tokenizer

    report = train_tokenizer(TokenizerTrainingConfig(
        inputs=args.input, output_dir=args.output, text_key=args.text_key,
        vocab_size=args.vocab_size, min_frequency=args.min_frequency,
        morph_analyzer=args.morph, model_max_length=args.model_max_length,
        skip_bad=args.skip_bad, show_progress=not args.quiet, overwrite=args.overwrite,
    ))
    _print_json(report)
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    from nemo_exaone.data.preprocess import PreprocessConfig, preprocess

    append_eod = {"auto": None, "yes": True, "no": False}[args.append_eod]
    result = preprocess(PreprocessConfig(
        inputs=args.input, output_prefix=args.output_prefix, tokenizer_dir=args.tokenizer,
        mode=args.mode, text_key=args.text_key, messages_key=args.messages_key,
        append_eod=append_eod, workers=args.workers, chunk_bytes=args.chunk_kb * 1024,
        skip_bad=args.skip_bad, show_progress=not args.quiet, overwrite=args.overwrite,
    ))
    _print_json(result.as_dict())
    return 0


def _decontaminate(args: argparse.Namespace) -> int:
    from nemo_exaone.data.decontamination import DecontaminationConfig, decontaminate

    report = decontaminate(DecontaminationConfig(
        train=args.train, tests=args.test, out=args.out, report=args.report,
        text_key=args.text_key, test_keys=args.test_key or None, id_key=args.id_key,
        window=args.window, samples=args.samples, seed=args.seed, workers=args.workers,
        min_item_chars=0 if args.strict_published else args.min_item_chars,
        chunk_bytes=args.chunk_kb * 1024, skip_bad=args.skip_bad, show_progress=not args.quiet,
        overwrite=args.overwrite,
    ))
    summary = {k: report[k] for k in ("removed", "removed_by_window", "removed_by_whole_item",
                                      "kept", "kept_shorter_than_window", "skipped_bad_lines")}
    summary["removed_per_test_set"] = {k: v["removed"] for k, v in report["test_sets"].items()}
    summary["method"] = report["params"]["method"]
    summary["report"] = args.report
    _print_json(summary)
    return 0


def _blend(args: argparse.Namespace) -> int:
    from nemo_exaone.data.blends import BlendConfig, resolve_blend

    blend = resolve_blend(BlendConfig(
        prefixes=args.data, weights=args.weights, replay_prefixes=args.replay or [],
        replay_weights=args.replay_weights, replay_fraction=args.replay_fraction,
    ))
    _print_json({
        "prefixes": blend.prefixes, "weights": blend.weights,
        "token_counts": blend.token_counts,
        "megatron_data_path": [x for pair in zip(blend.weights, blend.prefixes) for x in pair],
    })
    return 0


def _tiny_tokenizer(args: argparse.Namespace) -> int:
    from nemo_exaone.data.assets import build_tiny_tokenizer

    path = build_tiny_tokenizer(args.cache_dir, vocab_size=args.vocab_size)
    print(path)
    return 0


def _assets(args: argparse.Namespace) -> int:
    from nemo_exaone.data.assets import asset_paths

    _print_json({name: str(path) for name, path in asset_paths().items()})
    return 0


def _render_chat(args: argparse.Namespace) -> int:
    from nemo_exaone.data.chat_format import render_chat

    payload = json.load(sys.stdin if args.messages == "-" else open(args.messages, encoding="utf-8"))
    messages = payload["messages"] if isinstance(payload, dict) else payload
    sys.stdout.write(render_chat(messages, add_generation_prompt=args.generation_prompt,
                                 chat_format=args.chat_format,
                                 enable_thinking=args.enable_thinking))
    return 0


def _add_common(parser: argparse.ArgumentParser, workers: int = 1) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing outputs (never an input: an output that is an "
                        "input, or a folder holding one, is always refused)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip malformed/empty/non-UTF-8 lines, lines missing the key and "
                        "texts that are not text (an unpaired surrogate such as \"\\ud800\"), "
                        "counted in the report, instead of stopping at the first one")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    if workers:
        parser.add_argument("--workers", type=int, default=workers,
                            help="worker processes (0: work in this process; default "
                            f"{workers})")
        parser.add_argument("--chunk-kb", type=int, default=1024,
                            help="KiB of JSONL handed to a worker at a time (default 1024)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command group to the top-level CLI."""
    data = subparsers.add_parser(
        "data", help="tokenizer, preprocessing, blends, decontamination",
        description="Data pipeline: train a tokenizer, tokenize JSONL into Megatron indexed "
        "datasets, compute blend weights, remove benchmark contamination.")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    sub.required = True

    p = sub.add_parser(
        "train-tokenizer", help="train an EXAONE-style byte-level BPE tokenizer",
        description="Train a byte-level BPE (HF tokenizers) with EXAONE's special tokens and "
        "chat template; the output directory loads with transformers.AutoTokenizer.")
    p.add_argument("--input", action="append", required=True,
                   help="training corpus: JSONL (text under --text-key) or .txt (one text per "
                   "line); repeat for several files")
    p.add_argument("--output", required=True,
                   help="tokenizer directory to write (appears only when complete; refused if "
                   "it is, or holds, an --input)")
    p.add_argument("--text-key", default="text", help="JSON key of the text (default: text)")
    p.add_argument("--vocab-size", type=int, default=102_400,
                   help="vocabulary size incl. special tokens (default 102400, EXAONE's)")
    p.add_argument("--min-frequency", type=int, default=2,
                   help="minimum pair frequency for a merge (default 2)")
    p.add_argument("--morph", choices=("none", "mecab", "kiwi"), default="none",
                   help="split Korean words at morpheme boundaries while learning merges "
                   "(mecab: pip install python-mecab-ko; kiwi: pip install kiwipiepy). Only "
                   "affects which merges are learned; decoding stays byte-exact")
    p.add_argument("--model-max-length", type=int, default=32_768,
                   help="model_max_length written to tokenizer_config.json")
    _add_common(p, workers=0)
    p.set_defaults(func=_train_tokenizer)

    p = sub.add_parser(
        "preprocess", help="JSONL -> Megatron indexed dataset (.bin/.idx)",
        description="Tokenize JSONL into a Megatron-Core indexed dataset: one document per "
        "line, EOD appended to text documents, document boundaries kept. Chat mode also "
        "writes PREFIX_assistant_mask.bin/.idx (1 = assistant token) for SFT. Outputs "
        "appear only when the whole input was processed.")
    p.add_argument("--input", action="append", required=True, help="JSONL file (repeatable)")
    p.add_argument("--output-prefix", required=True,
                   help="writes PREFIX.bin, PREFIX.idx and PREFIX.stats.json")
    p.add_argument("--tokenizer", required=True, help="tokenizer directory (HF layout)")
    p.add_argument("--mode", choices=("text", "chat"), default="text",
                   help="text: {TEXT_KEY: str} records; chat: {MESSAGES_KEY: [{role, "
                   "content}, ...]} records rendered in the EXAONE chat format")
    p.add_argument("--text-key", default="text", help="JSON key of the text (default: text)")
    p.add_argument("--messages-key", default="messages",
                   help="JSON key of the messages in chat mode (default: messages)")
    p.add_argument("--append-eod", choices=("auto", "yes", "no"), default="auto",
                   help="append [|endofturn|] to each document (auto: yes for text, no for "
                   "chat, whose last turn already ends with it)")
    _add_common(p, workers=1)
    p.set_defaults(func=_preprocess)

    p = sub.add_parser(
        "decontaminate", help="remove training examples that overlap benchmark test sets",
        description="EXAONE 3.5 decontamination: normalize test sets to letters/digits "
        "(NFKC, case-folded), pool every S-character window, sample N windows per "
        "normalized training example and drop it if any is in the pool (hash hits are "
        "confirmed character by character). Also, unless --strict-published: test fields "
        "of --min-item-chars to S-1 characters (no window of their own) are matched whole "
        "anywhere in a training example, reported separately.")
    p.add_argument("--train", required=True, help="training JSONL to clean")
    p.add_argument("--test", action="append", required=True,
                   help="benchmark test-set JSONL (repeatable)")
    p.add_argument("--out", required=True, help="clean JSONL to write (kept lines, verbatim)")
    p.add_argument("--report", required=True, help="JSON report to write")
    p.add_argument("--text-key", default="text", help="JSON key of training text (default: text)")
    p.add_argument("--test-key", action="append",
                   help="JSON key(s) of test-set text; a list of strings is also accepted "
                   "(repeatable; default: --text-key)")
    p.add_argument("--id-key", default="id",
                   help="JSON key used to name removed examples (default: id; else line:N)")
    p.add_argument("--window", type=int, default=50, help="S, window length (default 50)")
    p.add_argument("--samples", type=int, default=10,
                   help="N, windows sampled per training example (default 10; 0 = check "
                   "every window)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--min-item-chars", type=int, default=20,
                   help="match test fields of this many to S-1 normalized characters whole "
                   "(default 20; a 43-syllable Korean question has no 50-character window)")
    p.add_argument("--strict-published", action="store_true",
                   help="the published EXAONE 3.5 method exactly: windows only, no whole-item "
                   "matching (same as --min-item-chars 0)")
    _add_common(p, workers=1)
    p.set_defaults(func=_decontaminate)

    p = sub.add_parser(
        "blend", help="blend weights from token counts, with stage-1 replay",
        description="Print Megatron blend weights: new data shares 1-p of the tokens, the "
        "stage-1 mixture (--replay) shares p. Missing weights come from token counts.")
    p.add_argument("--data", nargs="+", required=True, help="dataset prefixes of this stage")
    p.add_argument("--weights", nargs="+", type=float, help="weights of --data (default: tokens)")
    p.add_argument("--replay", nargs="+", help="dataset prefixes of the stage-1 mixture")
    p.add_argument("--replay-weights", nargs="+", type=float,
                   help="stage-1 weights of --replay (default: token counts)")
    p.add_argument("--replay-fraction", type=float, default=0.0,
                   help="p, the share of tokens drawn from the stage-1 mixture (default 0)")
    p.set_defaults(func=_blend)

    p = sub.add_parser(
        "tiny-tokenizer", help="build the tiny demo tokenizer from the shipped corpus",
        description="Train (once, cached) a small EXAONE-style tokenizer on the shipped "
        "bilingual corpus for tests and the CPU demo; prints its directory.")
    p.add_argument("--cache-dir", required=True, help="where to cache the tokenizer")
    p.add_argument("--vocab-size", type=int, default=1024, help="vocabulary size (default 1024)")
    p.set_defaults(func=_tiny_tokenizer)

    p = sub.add_parser("assets", help="print the paths of the shipped demo data",
                       description="Print the paths of the data files shipped with the package.")
    p.set_defaults(func=_assets)

    p = sub.add_parser(
        "render-chat", help="render a conversation in the EXAONE chat format",
        description="Read a JSON list of {role, content} (or {\"messages\": [...]}) and print "
        "its rendering in the EXAONE 3.x (default) or 4.0 chat format.")
    p.add_argument("messages", help="JSON file, or - for standard input")
    p.add_argument("--generation-prompt", action="store_true",
                   help="end with the [|assistant|] generation prompt")
    p.add_argument("--chat-format", choices=("exaone3", "exaone4"), default="exaone3",
                   help="EXAONE 3.x or 4.0 layout (4.0: [|user|]\\n..., <think> blocks)")
    p.add_argument("--enable-thinking", action="store_true",
                   help="4.0: open a reasoning block (<think>) in the generation prompt")
    p.set_defaults(func=_render_chat)
