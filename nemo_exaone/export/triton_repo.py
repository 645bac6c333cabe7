"""Triton model repositories for TensorRT-LLM deployments of our exports.

Two kinds, both written from this project's own templates (``nemo_exaone/assets/triton/``)
with every ``${name}`` parameter filled (an unfilled or unknown one is an error):

* ``inflight_batcher_llm`` (TensorRT-LLM engine flow, 1.2.x): ``preprocessing`` (text -> ids),
  ``tensorrt_llm`` (the engine, Triton's ``tensorrtllm`` C++ backend), ``postprocessing``
  (ids -> text), ``ensemble`` (the three chained: ``text_input`` STRING + ``max_tokens`` INT32
  + optional sampling inputs -> ``text_output`` STRING) and optionally ``tensorrt_llm_bls``
  (the same chain as one Python model; streams when decoupled). The Python models are ours.
* ``llmapi``: one ``tensorrt_llm`` model for Triton's LLM-API (PyTorch-flow) backend over the
  Llama-compatible HF export: ``config.pbtxt`` + ``1/model.yaml`` (``model``, ``backend:
  pytorch``, parallel sizes, ``triton_config``). That backend's ``1/model.py`` and
  ``helpers.py`` belong to the TensorRT-LLM release: ``backend_source`` copies them in from a
  container's ``triton_backend/all_models/llmapi/tensorrt_llm/1/``; without it the repository
  says where they go (``NEXT_STEPS.txt``).

Formats verified against NVIDIA/TensorRT-LLM ``triton_backend/all_models/`` (the templates
moved there from triton-inference-server/tensorrtllm_backend, whose main branch,
0b9d7d5a195820d53abadfcf7208d0ccdbfd5332 of 2026-07-14, pins TensorRT-LLM 1.2.1 on
``tritonserver:25.12-py3-min`` and documents the LLM-API flow in ``docs/llmapi.md``), as
stored at these commits: ``inflight_batcher_llm/ensemble/config.pbtxt`` 2a9abd95,
``preprocessing/config.pbtxt`` 08dc37e3, ``postprocessing/config.pbtxt`` 89fd9b74,
``tensorrt_llm/config.pbtxt`` 0c8de69a, ``llmapi/tensorrt_llm/config.pbtxt`` 0a710573,
``llmapi/tensorrt_llm/1/model.yaml`` 0ebb1536. Our templates keep the decoder-only text
subset of the inputs (no multimodal, LoRA, encoder or speculative-decoding tensors).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from nemo_exaone.config.errors import ConfigError, InputError

TEMPLATES = Path(__file__).resolve().parent.parent / "assets" / "triton"
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
IFB_MODELS = ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble")
BLS_MODEL = "tensorrt_llm_bls"
LLMAPI_BACKEND_FILES = ("model.py", "helpers.py")


def fill_template(text: str, values: dict[str, str], *, source: str) -> str:
    """Replace every ``${name}`` in ``text``; a name without a value is an error naming
    ``source`` and the line (nothing may reach Triton half-filled)."""
    missing = []
    for number, line in enumerate(text.splitlines(), 1):
        missing += [(number, m) for m in PLACEHOLDER.findall(line) if m not in values]
    if missing:
        where = ", ".join(f"line {n}: ${{{name}}}" for n, name in missing)
        raise ConfigError(f"{source}: template parameters without a value ({where})")
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


def _bool(value: bool) -> str:
    return "true" if value else "false"


@dataclass(frozen=True)
class InflightBatcherOptions:
    """The filled parameters of the engine-flow repository (names as TensorRT-LLM's)."""

    max_batch_size: int = 8
    decoupled: bool = False
    bls: bool = False
    max_queue_delay_microseconds: int = 0
    max_queue_size: int = 0
    max_beam_width: int = 1
    batching_strategy: str = "inflight_fused_batching"
    batch_scheduler_policy: str = "guaranteed_no_evict"
    kv_cache_free_gpu_mem_fraction: float = 0.9
    exclude_input_in_output: bool = True
    enable_kv_cache_reuse: bool = False
    enable_chunked_context: bool = False
    logits_datatype: str = "TYPE_FP32"
    add_special_tokens: bool = False
    skip_special_tokens: bool = True
    accumulate_tokens: bool = False
    instance_count: int = 1
    #: Triton backend of the tensorrt_llm model: "tensorrtllm" (the C++ backend) or "python"
    #: (TensorRT-LLM's Python-backend variant; its model.py then goes into tensorrt_llm/1/).
    triton_backend: str = "tensorrtllm"

    def validate(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size={self.max_batch_size} must be >= 1")
        if self.batching_strategy not in ("inflight_fused_batching", "V1"):
            raise ConfigError(f"batching_strategy={self.batching_strategy!r}: "
                              "inflight_fused_batching or V1")
        if self.batch_scheduler_policy not in ("guaranteed_no_evict", "max_utilization"):
            raise ConfigError(f"batch_scheduler_policy={self.batch_scheduler_policy!r}: "
                              "guaranteed_no_evict or max_utilization")
        if not 0.0 < self.kv_cache_free_gpu_mem_fraction <= 1.0:
            raise ConfigError("kv_cache_free_gpu_mem_fraction="
                              f"{self.kv_cache_free_gpu_mem_fraction} must be in (0, 1]")
        if self.logits_datatype not in ("TYPE_FP32", "TYPE_FP16", "TYPE_BF16"):
            raise ConfigError(f"logits_datatype={self.logits_datatype!r}: TYPE_FP32, "
                              "TYPE_FP16 or TYPE_BF16")
        if self.triton_backend not in ("tensorrtllm", "python"):
            raise ConfigError(f"triton_backend={self.triton_backend!r}: tensorrtllm or python")
        if self.max_beam_width < 1 or self.instance_count < 1:
            raise ConfigError("max_beam_width and instance_count must be >= 1")

    def values(self, engine_dir: str, tokenizer_dir: str) -> dict[str, str]:
        return {
            "triton_backend": self.triton_backend,
            "triton_max_batch_size": str(self.max_batch_size),
            "decoupled_mode": _bool(self.decoupled),
            "max_queue_delay_microseconds": str(self.max_queue_delay_microseconds),
            "max_queue_size": str(self.max_queue_size),
            "max_beam_width": str(self.max_beam_width),
            "batching_strategy": self.batching_strategy,
            "batch_scheduler_policy": self.batch_scheduler_policy,
            "kv_cache_free_gpu_mem_fraction": str(self.kv_cache_free_gpu_mem_fraction),
            "exclude_input_in_output": _bool(self.exclude_input_in_output),
            "enable_kv_cache_reuse": _bool(self.enable_kv_cache_reuse),
            "enable_chunked_context": _bool(self.enable_chunked_context),
            "logits_datatype": self.logits_datatype,
            "engine_dir": engine_dir,
            "tokenizer_dir": tokenizer_dir,
            "add_special_tokens": _bool(self.add_special_tokens),
            "skip_special_tokens": _bool(self.skip_special_tokens),
            "accumulate_tokens": _bool(self.accumulate_tokens),
            "preprocessing_instance_count": str(self.instance_count),
            "postprocessing_instance_count": str(self.instance_count),
            "bls_instance_count": str(self.instance_count),
        }


def _pbtxt_string(value: str) -> str:
    """A path as the inside of a protobuf text-format string (our templates quote it)."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def check_engine_dir(engine: Path) -> dict:
    """The engine directory's ``config.json`` (written by ``trtllm-build``), read; refuses a
    directory without one or without ``rank0.engine``."""
    config = engine / "config.json"
    if not config.is_file():
        raise InputError(f"--engine {engine}: no config.json (not a trtllm-build output "
                         "directory; build the engine first, or pass --unchecked-paths when "
                         "the path only exists inside the serving container)")
    if not (engine / "rank0.engine").is_file():
        raise InputError(f"--engine {engine}: config.json but no rank0.engine")
    try:
        return json.loads(config.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{config}: not JSON ({exc})") from None


def check_tokenizer_dir(tokenizer: Path) -> None:
    """Our pre/postprocessing models read ``tokenizer.json`` + ``tokenizer_config.json``."""
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (tokenizer / name).is_file():
            raise InputError(f"--tokenizer {tokenizer}: {name} is missing (the repository's "
                             "pre/postprocessing models read it)")


def verify_filled(repo: Path) -> None:
    """Refuse a repository with any ``${...}`` left in a file (checked before publication)."""
    for path in sorted(Path(repo).rglob("*")):
        if path.is_file() and path.suffix in (".pbtxt", ".yaml"):
            left = PLACEHOLDER.findall(path.read_text(encoding="utf-8"))
            if left:
                raise ConfigError(f"{path}: unfilled template parameters {sorted(set(left))}")


def _write_model(src: Path, dst: Path, values: dict[str, str]) -> None:
    dst.mkdir(parents=True)
    for path in sorted(src.rglob("*")):
        if "__pycache__" in path.parts or path.is_dir():
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text(encoding="utf-8")
        if path.name in ("config.pbtxt", "model.yaml"):
            text = fill_template(text, values, source=str(path.relative_to(TEMPLATES)))
        target.write_text(text, encoding="utf-8")


def write_inflight_batcher_repo(out: str | Path, *, engine: str | Path, tokenizer: str | Path,
                                options: InflightBatcherOptions | None = None,
                                overwrite: bool = False, check_paths: bool = True) -> Path:
    """Write the engine-flow repository to ``out`` (atomically: complete or absent).

    ``engine``/``tokenizer`` are written as given (absolute paths as the server will see
    them); with ``check_paths`` they must exist here too.
    """
    from nemo_exaone.runtime.outputs import atomic_directory

    options = options or InflightBatcherOptions()
    options.validate()
    engine, tokenizer = Path(engine), Path(tokenizer)
    if check_paths:
        engine_config = check_engine_dir(engine)
        check_tokenizer_dir(tokenizer)
        built = (engine_config.get("build_config") or {}).get("max_batch_size")
        if isinstance(built, int) and options.max_batch_size > built:
            raise ConfigError(f"--max-batch-size {options.max_batch_size} exceeds the engine's "
                              f"build_config.max_batch_size={built} ({engine}/config.json)")
        engine, tokenizer = engine.resolve(), tokenizer.resolve()
    values = {k: _pbtxt_string(v) for k, v in options.values(str(engine),
                                                             str(tokenizer)).items()}
    models = IFB_MODELS + ((BLS_MODEL,) if options.bls else ())
    with atomic_directory(out, overwrite=overwrite, inputs=[engine, tokenizer],
                          input_flags=["--engine", "--tokenizer"], flag="--out",
                          verify=verify_filled) as tmp:
        for model in models:
            _write_model(TEMPLATES / "inflight_batcher_llm" / model, Path(tmp) / model, values)
            (Path(tmp) / model / "1").mkdir(exist_ok=True)  # tensorrt_llm: an empty version
    return Path(out)


def write_llmapi_repo(out: str | Path, *, hf: str | Path, tensor_parallel_size: int = 1,
                      pipeline_parallel_size: int = 1, decoupled: bool = False,
                      backend_source: str | Path | None = None, overwrite: bool = False,
                      check_paths: bool = True) -> Path:
    """Write a repository for Triton's LLM-API backend serving the HF directory ``hf``."""
    from nemo_exaone.runtime.outputs import atomic_directory

    if tensor_parallel_size < 1 or pipeline_parallel_size < 1:
        raise ConfigError("tensor_parallel_size and pipeline_parallel_size must be >= 1")
    hf = Path(hf)
    if check_paths:
        config = hf / "config.json"
        if not config.is_file():
            raise InputError(f"--hf {hf}: no config.json (write the Llama-compatible export "
                             "with `nemo-exaone convert mcore-to-hf --arch llama`)")
        archs = json.loads(config.read_text()).get("architectures") or []
        if "ExaoneForCausalLM" in archs:
            raise InputError(f"--hf {hf}: architectures {archs}: TensorRT-LLM's PyTorch flow "
                             "does not load EXAONE 3.x's ExaoneForCausalLM; export with "
                             "`convert mcore-to-hf --arch llama` (LlamaForCausalLM)")
        hf = hf.resolve()
    sources = []
    if backend_source is not None:
        backend_source = Path(backend_source)
        sources = [backend_source / name for name in LLMAPI_BACKEND_FILES]
        absent = [str(p) for p in sources if not p.is_file()]
        if absent:
            raise InputError(f"--backend-source {backend_source}: missing {', '.join(absent)} "
                             "(the directory triton_backend/all_models/llmapi/tensorrt_llm/1/ "
                             "of a TensorRT-LLM release)")
    values = {"hf_model_dir": str(hf).replace("\\", "\\\\").replace('"', '\\"'),
              "tensor_parallel_size": str(tensor_parallel_size),
              "pipeline_parallel_size": str(pipeline_parallel_size),
              "decoupled_mode": "True" if decoupled else "False"}
    with atomic_directory(out, overwrite=overwrite, inputs=[hf], input_flags=["--hf"],
                          flag="--out", verify=verify_filled) as tmp:
        model = Path(tmp) / "tensorrt_llm"
        _write_model(TEMPLATES / "llmapi" / "tensorrt_llm", model, values)
        for source in sources:
            shutil.copy(source, model / "1" / source.name)
        if not sources:
            (Path(tmp) / "NEXT_STEPS.txt").write_text(
                "Triton's LLM-API backend runs tensorrt_llm/1/model.py (+ helpers.py) from the "
                "TensorRT-LLM release.\nCopy them in from its "
                "triton_backend/all_models/llmapi/tensorrt_llm/1/ (in NVIDIA's Triton TRT-LLM "
                "container), or re-run with --backend-source DIR, then start the server on "
                "this directory.\n")
    return Path(out)
