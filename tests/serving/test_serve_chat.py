"""``nemo-exaone serve --chat`` through the real Triton server: a request's ``text_input`` is
rendered as a user turn in the checkpoint family's chat format (here an EXAONE 4.0 model), so
the answer equals ``nemo-exaone generate --chat`` on the same checkpoint, run as another
process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from tiny import EOT, start_serve, wait_ready, write_tokenizer

PROMPT = "hello world, the model speaks"
NEW = 8


def tiny4_checkpoint(root: Path) -> Path:
    """A tiny random EXAONE 4.0 checkpoint (preset tiny4) carrying the serving tokenizer."""
    from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore
    from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint
    from nemo_exaone.config.presets import get_preset

    tok = write_tokenizer(root / "tokenizer")
    arch = get_preset("tiny4").replace(
        name="tiny4-serve", vocab_size=-(-tok.get_vocab_size() // 64) * 64, eos_token_id=EOT)
    hf = write_random_hf_checkpoint(root / "hf", arch, seed=3, std=0.2)
    for path in (root / "tokenizer").iterdir():
        (hf / path.name).write_bytes(path.read_bytes())
    convert_hf_to_mcore(hf, root / "ckpt4", progress=False)
    return root / "ckpt4"


def _generate_json(env: dict, ckpt: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nemo_exaone.cli", "generate", "--ckpt", str(ckpt), "--prompt",
         PROMPT, "--max-new-tokens", str(NEW), "--json", *flags], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _reference(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_chat")
    ckpt = tiny4_checkpoint(root)
    info = start_serve(root, ckpt, "--chat", "--max-tokens-limit", "16")
    proc = info["proc"]
    # The references run one after the other while the server loads (two cores).
    info.update(chat=_reference(_generate_json(info["env"], ckpt, "--chat")),
                plain=_reference(_generate_json(info["env"], ckpt)), ckpt=ckpt)
    wait_ready(info)
    yield info
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_chat_request_is_rendered_in_the_checkpoint_family_chat_format(chat_server):
    # The two references differ, so the answer says which rendering the server used.
    assert chat_server["chat"]["token_ids"] != chat_server["plain"]["token_ids"]
    request = urllib.request.Request(
        f"http://127.0.0.1:{chat_server['http']}/v2/models/ensemble/generate",
        data=json.dumps({"text_input": PROMPT, "max_tokens": NEW}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    assert answer["text_output"] == chat_server["chat"]["text"]


def test_chat_encoding_of_a_4_0_checkpoint_is_the_4_0_rendering(chat_server):
    """In-process: the served model's prompt ids are the EXAONE 4.0 rendering of one user
    turn with the generation prompt (the empty think block), not 3.x's."""
    from nemo_exaone.data.chat_format import render_chat
    from nemo_exaone.runtime.distributed import destroy_distributed
    from nemo_exaone.serving.backend import ServingModel

    try:
        model = ServingModel(str(chat_server["ckpt"]), chat=True)
        ids = model.encode("Hi there.")
    finally:
        destroy_distributed()
    user = [{"role": "user", "content": "Hi there."}]
    assert model.tokenizer.decode(ids) == render_chat(user, add_generation_prompt=True,
                                                      chat_format="exaone4")
    assert model.tokenizer.decode(ids) != render_chat(user, add_generation_prompt=True,
                                                      chat_format="exaone3")
