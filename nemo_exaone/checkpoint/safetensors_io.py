"""Read and write (sharded) safetensors a few tensors at a time.

Reading: headers are parsed up front (cheap, no tensor data), so a missing, truncated or
mislabelled shard is reported before anything is written. Tensor data come from
``safe_open`` memory maps, opened per read so that the pages of tensors already converted
are unmapped (a long-lived map keeps every page it touched resident).

Writing: a safetensors header lists every tensor's offset, so a file can be streamed when
all names, dtypes and shapes are known in advance (they are: they follow from the
architecture). :class:`ShardedSafetensorsWriter` plans the shards, writes each header, then
appends tensor bytes as they arrive; memory stays at one tensor.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from nemo_exaone.checkpoint.errors import CheckpointError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


def dtype_from_safetensors(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise CheckpointError(f"unsupported safetensors dtype {name!r}")
    return _DTYPES[name]


def safetensors_dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES[dtype]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    file: str  # file name inside the checkpoint directory
    dtype: torch.dtype
    shape: tuple[int, ...]
    nbytes: int


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor metadata of one safetensors file; checks that every tensor's bytes exist."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path.name}: file is truncated ({size} bytes, no header)")
        (header_len,) = struct.unpack("<Q", head)
        if 8 + header_len > size:
            raise CheckpointError(f"{path.name}: file is truncated inside its header "
                                  f"(header needs {8 + header_len} bytes, file has {size})")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path.name}: invalid safetensors header ({exc})") from exc
    data_size = size - 8 - header_len
    infos = {}
    for name, entry in sorted(header.items(), key=lambda kv: str(kv[0])):
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        if end > data_size:
            raise CheckpointError(
                f"{path.name} is truncated: tensor {name!r} needs bytes up to {end} of the "
                f"data section but the file holds {data_size}")
        infos[name] = TensorInfo(name, path.name, dtype_from_safetensors(entry["dtype"]),
                                 tuple(entry["shape"]), end - start)
    return infos


class SafetensorsSource:
    """An HF weights directory: ``model.safetensors`` or shards + ``model.safetensors.index.json``."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        index_path = self.directory / INDEX_NAME
        if index_path.exists():
            weight_map = self._read_index(index_path)
            files = sorted(set(weight_map.values()))
        elif (self.directory / SINGLE_NAME).exists():
            weight_map, files = None, [SINGLE_NAME]
        else:
            raise FileNotFoundError(f"{self.directory}: no {SINGLE_NAME} or {INDEX_NAME}")
        self.tensors: dict[str, TensorInfo] = {}
        for file in files:
            path = self.directory / file
            if not path.exists():
                named = sorted(n for n, f in (weight_map or {}).items() if f == file)
                raise FileNotFoundError(
                    f"{INDEX_NAME} names shard {file!r} (for tensor {named[0]!r}"
                    f"{f' and {len(named) - 1} more' if len(named) > 1 else ''}) but "
                    f"{path} does not exist")
            for name, info in read_header(path).items():
                if weight_map is not None and weight_map.get(name) != file:
                    where = weight_map.get(name)
                    raise CheckpointError(
                        f"tensor {name!r} is in {file} but {INDEX_NAME} "
                        + (f"places it in {where}" if where else "does not list it"))
                self.tensors[name] = info
        for name, file in (weight_map or {}).items():
            if name not in self.tensors:
                raise CheckpointError(f"{INDEX_NAME} places tensor {name!r} in {file}, "
                                      f"but {file} does not contain it")

    @staticmethod
    def _read_index(path: Path) -> dict[str, str]:
        try:
            index = json.loads(path.read_text())
            weight_map = index["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path.name}: not a valid safetensors index ({exc})") from exc
        return {str(k): str(v) for k, v in weight_map.items()}

    def total_bytes(self, names: Iterable[str] | None = None) -> int:
        names = self.tensors if names is None else names
        return sum(self.tensors[n].nbytes for n in names)

    def read(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """Load the named tensors (maps opened only for this call)."""
        from safetensors import safe_open

        by_file: dict[str, list[str]] = {}
        for name in names:
            by_file.setdefault(self.tensors[name].file, []).append(name)
        out = {}
        for file, file_names in by_file.items():
            try:
                with safe_open(self.directory / file, framework="pt") as handle:
                    for name in file_names:
                        out[name] = handle.get_tensor(name)
            except Exception as exc:  # safetensors raises its own error types
                raise CheckpointError(f"{file}: cannot read tensor(s) "
                                      f"{', '.join(map(repr, file_names))}: {exc}") from exc
        return out


# ---------------------------------------------------------------------------------- writing
@dataclass(frozen=True)
class TensorEntry:
    """A tensor to be written: known before its data exists."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        numel = 1
        for dim in self.shape:
            numel *= dim
        return numel * torch.empty((), dtype=self.dtype).element_size()


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a CPU tensor, without a copy when contiguous."""
    if sys.byteorder != "little":  # safetensors is little-endian by definition
        raise RuntimeError("writing safetensors needs a little-endian machine")
    flat = tensor.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


class SafetensorsStreamWriter:
    """One safetensors file whose header is written first; tensors follow in ``entries`` order."""

    def __init__(self, path: Path, entries: list[TensorEntry],
                 metadata: dict[str, str] | None = None) -> None:
        self.path = path
        self.entries = entries
        header: dict[str, object] = {"__metadata__": {"format": "pt", **(metadata or {})}}
        offset = 0
        for entry in entries:
            header[entry.name] = {"dtype": safetensors_dtype_name(entry.dtype),
                                  "shape": list(entry.shape),
                                  "data_offsets": [offset, offset + entry.nbytes]}
            offset += entry.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # data section starts 8-byte aligned
        self._file = open(path, "wb")
        self._file.write(struct.pack("<Q", len(raw)))
        self._file.write(raw)
        self._next = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self._next >= len(self.entries):
            raise RuntimeError(f"{self.path.name}: unexpected extra tensor {name!r}")
        entry = self.entries[self._next]
        if (name, tensor.dtype, tuple(tensor.shape)) != (entry.name, entry.dtype, entry.shape):
            raise RuntimeError(
                f"{self.path.name}: expected {entry.name} {entry.dtype} {entry.shape}, got "
                f"{name} {tensor.dtype} {tuple(tensor.shape)}")
        self._file.write(tensor_bytes(tensor))
        self._next += 1

    @property
    def complete(self) -> bool:
        return self._next == len(self.entries)

    def close(self) -> None:
        if self._file.closed:
            return
        if not self.complete:
            self._file.close()
            raise RuntimeError(f"{self.path.name}: closed after {self._next} of "
                               f"{len(self.entries)} tensors")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def shard_file_names(count: int) -> list[str]:
    if count == 1:
        return [SINGLE_NAME]
    return [f"model-{k + 1:05d}-of-{count:05d}.safetensors" for k in range(count)]


def plan_shards(entries: list[TensorEntry], max_shard_bytes: int) -> list[list[TensorEntry]]:
    """Consecutive groups of at most ``max_shard_bytes`` (a bigger tensor gets its own shard)."""
    shards: list[list[TensorEntry]] = [[]]
    size = 0
    for entry in entries:
        if shards[-1] and size + entry.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += entry.nbytes
    return shards


class ShardedSafetensorsWriter:
    """HF-style weights: ``model.safetensors``, or numbered shards plus the index file."""

    def __init__(self, directory: Path, entries: list[TensorEntry], max_shard_bytes: int) -> None:
        self.directory = directory
        self.shards = plan_shards(entries, max_shard_bytes)
        self.files = shard_file_names(len(self.shards))
        self.weight_map = {e.name: f for f, shard in zip(self.files, self.shards) for e in shard}
        self.total_size = sum(e.nbytes for e in entries)
        self._shard = -1
        self._writer: SafetensorsStreamWriter | None = None

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self._writer is None or self._writer.complete:
            if self._writer is not None:
                self._writer.close()
            self._shard += 1
            if self._shard >= len(self.shards):
                raise RuntimeError(f"unexpected extra tensor {name!r}")
            self._writer = SafetensorsStreamWriter(
                self.directory / self.files[self._shard], self.shards[self._shard])
        self._writer.write(name, tensor)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._shard != len(self.shards) - 1:
            raise RuntimeError(f"wrote {self._shard + 1} of {len(self.shards)} shards")
        if len(self.files) > 1:
            index = {"metadata": {"total_size": self.total_size}, "weight_map": self.weight_map}
            (self.directory / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")


def parse_size(text: str) -> int:
    """'5GB', '500MB', '2GiB', '1024' -> bytes (decimal units as HF uses, binary with 'i')."""
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    value = text.strip().upper()
    number = value.rstrip("KMGTIB")
    unit = value[len(number):]
    try:
        return int(float(number) * units[unit])
    except (ValueError, KeyError) as exc:
        raise ValueError(f"cannot parse size {text!r}; use e.g. 5GB, 500MB, 2GiB") from exc
