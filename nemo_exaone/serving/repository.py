"""The model repository ``nemo-exaone serve`` runs: one Python-backend model named
``ensemble`` with TensorRT-LLM's ensemble request/response names (see
:mod:`nemo_exaone.serving.backend`), dynamically batched, over one of our checkpoints."""

from __future__ import annotations

import shutil
from pathlib import Path

from nemo_exaone.config.errors import ConfigError
from nemo_exaone.serving.backend import INPUTS, OUTPUTS

MODEL_NAME = "ensemble"


def _quote(value: str) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def serve_config(*, ckpt: Path, tokenizer: Path | None, package_root: Path, max_batch_size: int,
                 max_tokens_limit: int, chat: bool, queue_delay_us: int = 2000) -> str:
    """``config.pbtxt`` text of the served model (Triton's ModelConfig text format)."""
    if max_batch_size < 1:
        raise ConfigError(f"max_batch_size={max_batch_size} must be >= 1 (dynamic batching)")
    if max_tokens_limit < 1:
        raise ConfigError(f"max_tokens_limit={max_tokens_limit} must be >= 1")
    lines = [f"name: {_quote(MODEL_NAME)}", 'backend: "python"',
             f"max_batch_size: {max_batch_size}",
             "dynamic_batching {", f"  max_queue_delay_microseconds: {queue_delay_us}", "}",
             "input ["]
    entries = []
    for name, (dtype, required) in INPUTS.items():
        entries.append(f"  {{ name: {_quote(name)} data_type: {dtype} dims: [ 1 ]"
                       + ("" if required else " optional: true") + " }")
    lines.append(",\n".join(entries))
    lines += ["]", "output ["]
    lines.append(",\n".join(f"  {{ name: {_quote(n)} data_type: {t} dims: [ -1 ] }}"
                            for n, t in OUTPUTS.items()))
    lines += ["]", "instance_group [ { count: 1 kind: KIND_CPU } ]"]
    params = {"ckpt": str(ckpt), "tokenizer": str(tokenizer or ""),
              "package_root": str(package_root), "max_tokens_limit": str(max_tokens_limit),
              "chat": "true" if chat else "false"}
    for key, value in params.items():
        lines.append(f"parameters {{ key: {_quote(key)} value: {{ string_value: "
                     f"{_quote(value)} }} }}")
    return "\n".join(lines) + "\n"


def write_serve_repository(out: Path, *, ckpt: Path, tokenizer: Path | None = None,
                           max_batch_size: int = 8, max_tokens_limit: int = 256,
                           chat: bool = False, queue_delay_us: int = 2000) -> Path:
    """Write ``out/ensemble/{config.pbtxt,1/model.py}``; ``out`` must not exist yet."""
    import nemo_exaone

    package_root = Path(nemo_exaone.__file__).resolve().parent.parent
    text = serve_config(ckpt=Path(ckpt).resolve(),
                        tokenizer=Path(tokenizer).resolve() if tokenizer else None,
                        package_root=package_root, max_batch_size=max_batch_size,
                        max_tokens_limit=max_tokens_limit, chat=chat,
                        queue_delay_us=queue_delay_us)
    model = Path(out) / MODEL_NAME
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(text)
    shutil.copy(Path(__file__).with_name("model.py"), model / "1" / "model.py")
    return Path(out)
