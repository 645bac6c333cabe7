"""A tiny tokenizer and checkpoint for the serving tests, and the ``nemo-exaone serve``
process they talk to (shared by their modules)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SPECIALS = ["[PAD]", "[BOS]", "[UNK]", "[|endofturn|]", "[|system|]", "[|user|]",
            "[|assistant|]"]
EOT = 3


def write_tokenizer(directory: Path):
    """A byte-level BPE tokenizer trained here with EXAONE's special tokens (HF files)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from nemo_exaone.data.chat_format import CHAT_TEMPLATE

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["hello world, the model speaks Korean: 안녕하세요. The quick brown "
                             "fox jumps over the lazy dog."] * 20,
                            trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    assert tok.token_to_id("[|endofturn|]") == EOT
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]",
                                   unk_token="[UNK]", eos_token="[|endofturn|]")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)
    return tok


def tiny_checkpoint(root: Path) -> Path:
    """A tiny random EXAONE checkpoint (Megatron format) carrying that tokenizer."""
    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
    from nemo_exaone.config.presets import get_preset

    tok = write_tokenizer(root / "tokenizer")
    arch = get_preset("tiny").replace(name="tiny-serve", vocab_size=-(-tok.get_vocab_size() // 64)
                                      * 64, eos_token_id=EOT)
    hf = write_random_hf_checkpoint(root / "hf", arch, seed=1, std=0.2)
    for path in (root / "tokenizer").iterdir():
        (hf / path.name).write_bytes(path.read_bytes())
    convert_hf_to_mcore(hf, root / "ckpt", progress=False)
    return root / "ckpt"


def start_serve(root: Path, ckpt: Path, *flags: str) -> dict:
    """A ``nemo-exaone serve`` process on free loopback ports (its log and the launcher's
    stderr under ``root``); returns at once: :func:`wait_ready` waits for it."""
    from nemo_exaone.runtime.distributed import free_port

    http, grpc = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    log = root / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nemo_exaone.cli", "serve", "--ckpt", str(ckpt), "--http-port",
         str(http), "--grpc-port", str(grpc), "--log-file", str(log), *flags], env=env,
        stdout=subprocess.DEVNULL, stderr=open(root / "launcher.log", "wb"))  # noqa: SIM115
    return {"proc": proc, "http": http, "grpc": grpc, "log": log, "root": root, "env": env}


def wait_ready(server: dict, timeout: float = 240.0) -> None:
    """Until ``/v2/health/ready`` answers; fails the test (with the logs) if the server exits
    or is not ready in time."""
    proc, root = server["proc"], server["root"]
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"nemo-exaone serve exited with {proc.returncode}:\n"
                        + (root / "launcher.log").read_text()[-3000:]
                        + (server["log"].read_text()[-3000:] if server["log"].exists() else ""))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server['http']}/v2/health/ready",
                                        timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"server not ready after {timeout:.0f} s")
            time.sleep(0.3)
