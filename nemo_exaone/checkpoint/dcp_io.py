"""Stream tensors into and out of a torch.distributed.checkpoint (DCP) directory.

Megatron-Core's ``torch_dist`` format *is* DCP: a ``.metadata`` file listing, for every key,
its global shape and the chunks that are stored, plus ``__<rank>_<n>.distcp`` data files.
``dist_checkpointing.save`` needs the whole state dict in memory (its writer resolves every
tensor before writing), so the converter drives DCP's own planner/storage API instead: the
planner declares all chunks up front (shapes only) and ``resolve_data`` produces each
chunk's data only when the storage writer asks for it, one chunk per file, in order. A checkpoint written this way is read by Megatron's loader like any other;
resharding to another TP/PP layout is DCP's overlap arithmetic on those chunks.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import (
    BytesIOWriteData,
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    ReadItem,
    SavePlan,
    TensorWriteData,
    WriteItem,
    WriteItemType,
)

from nemo_exaone.checkpoint.errors import CheckpointError


@dataclass(frozen=True)
class ChunkSpec:
    """One stored piece of a global tensor: ``key``[offset : offset + shape]."""

    key: str
    global_shape: tuple[int, ...]
    offset: tuple[int, ...]
    shape: tuple[int, ...]
    dtype: torch.dtype


class _StreamingSavePlanner(DefaultSavePlanner):
    """Plans the given chunks and objects; produces their data only when asked for it."""

    def __init__(self, chunks: list[ChunkSpec], objects: dict[str, Any],
                 produce: Callable[[ChunkSpec], torch.Tensor]) -> None:
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self._chunks = {(c.key, c.offset): c for c in chunks}
        self._objects = objects
        self._produce = produce
        items = []
        for name in objects:
            items.append(WriteItem(index=MetadataIndex(name), type=WriteItemType.BYTE_IO,
                                   bytes_io_data=BytesIOWriteData(nbytes=0)))
        for c in chunks:
            properties = TensorProperties(dtype=c.dtype)
            items.append(WriteItem(
                index=MetadataIndex(c.key, torch.Size(c.offset)), type=WriteItemType.SHARD,
                tensor_data=TensorWriteData(
                    chunk=ChunkStorageMetadata(offsets=torch.Size(c.offset),
                                               sizes=torch.Size(c.shape)),
                    properties=properties, size=torch.Size(c.global_shape))))
        self._items = items

    def create_local_plan(self) -> SavePlan:
        self.plan = SavePlan(self._items)
        return self.plan

    def resolve_data(self, write_item: WriteItem) -> torch.Tensor | io.BytesIO:
        if write_item.type == WriteItemType.BYTE_IO:
            buffer = io.BytesIO()
            # Megatron stores each sharded object as a one-element list (see its torch strategy).
            torch.save([self._objects[write_item.index.fqn]], buffer)
            buffer.seek(0)
            return buffer
        spec = self._chunks[(write_item.index.fqn, tuple(write_item.index.offset))]
        tensor = self._produce(spec)
        if tuple(tensor.shape) != spec.shape or tensor.dtype != spec.dtype:
            raise RuntimeError(f"{spec.key}@{spec.offset}: produced {tensor.dtype} "
                               f"{tuple(tensor.shape)}, planned {spec.dtype} {spec.shape}")
        return tensor


def write_dcp(directory: Path, chunks: list[ChunkSpec], objects: dict[str, Any],
              produce: Callable[[ChunkSpec], torch.Tensor]) -> None:
    """Write a DCP checkpoint whose chunk data come from ``produce``, in ``chunks`` order."""
    import torch.distributed.checkpoint as dcp

    # One file per chunk: DCP's writer keeps a reference to every tensor it wrote until
    # the file it wrote it to is closed, so a single file per rank would pin one chunk of
    # every key (embedding, output layer and a whole layer) until the end.
    writer = FileSystemWriter(str(directory), single_file_per_rank=False, sync_files=True,
                              thread_count=1)
    with warnings.catch_warnings():  # single process by design; DCP warns about that
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        dcp.save({}, storage_writer=writer,
                 planner=_StreamingSavePlanner(chunks, objects, produce), no_dist=True)


class _RegionLoadPlanner(LoadPlanner):
    """Receives stored chunks into one destination tensor (``dest`` covers ``offset``)."""

    def __init__(self, dest: torch.Tensor) -> None:
        self.dest = dest

    def set_up_planner(self, state_dict: Any, metadata: Any = None,
                       is_coordinator: bool = False) -> None:
        pass

    def create_local_plan(self) -> LoadPlan:
        raise NotImplementedError  # plans are built by DistCheckpointReader

    def create_global_plan(self, global_plan: list[LoadPlan]) -> list[LoadPlan]:
        return global_plan

    def finish_plan(self, central_plan: LoadPlan) -> LoadPlan:
        return central_plan

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        raise NotImplementedError

    def resolve_tensor(self, read_item: ReadItem) -> torch.Tensor:
        view = self.dest
        for dim, (start, length) in enumerate(zip(read_item.dest_offsets, read_item.lengths)):
            view = view.narrow(dim, start, length)
        return view

    def commit_tensor(self, read_item: ReadItem, tensor: torch.Tensor) -> None:
        pass  # the copy went into a view of dest


class DistCheckpointReader:
    """Read arbitrary regions of the tensors in a DCP directory, one region at a time."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        if not (self.directory / ".metadata").exists():
            raise FileNotFoundError(f"{self.directory}: not a torch_dist checkpoint "
                                    "(no .metadata file)")
        self._reader = FileSystemReader(str(self.directory))
        self.metadata = self._reader.read_metadata()
        self._reader.set_up_storage_reader(self.metadata, is_coordinator=True)

    def tensor_metadata(self, key: str) -> TensorStorageMetadata:
        md = self.metadata.state_dict_metadata.get(key)
        if not isinstance(md, TensorStorageMetadata):
            raise CheckpointError(f"checkpoint {self.directory} has no tensor {key!r}")
        return md

    def keys(self) -> list[str]:
        return list(self.metadata.state_dict_metadata)

    def read(self, key: str, offset: tuple[int, ...], shape: tuple[int, ...],
             out: torch.Tensor | None = None) -> torch.Tensor:
        """``key``[offset : offset + shape], assembled from whichever chunks overlap it."""
        md = self.tensor_metadata(key)
        if len(offset) != len(md.size) or any(
                o < 0 or o + s > g for o, s, g in zip(offset, shape, md.size)):
            raise CheckpointError(f"{key}: region {offset}+{shape} lies outside the stored "
                                  f"global shape {tuple(md.size)} ({self.directory})")
        dest = torch.empty(shape, dtype=md.properties.dtype) if out is None else out
        items, covered = [], 0
        for index, chunk in enumerate(md.chunks):
            lo = [max(o, c) for o, c in zip(offset, chunk.offsets)]
            hi = [min(o + s, c + z) for o, s, c, z in zip(offset, shape, chunk.offsets,
                                                          chunk.sizes)]
            if any(a >= b for a, b in zip(lo, hi)):
                continue
            lengths = [b - a for a, b in zip(lo, hi)]
            covered += math.prod(lengths)
            items.append(ReadItem(
                type=LoadItemType.TENSOR,
                dest_index=MetadataIndex(key, torch.Size(offset)),
                dest_offsets=torch.Size(a - o for a, o in zip(lo, offset)),
                storage_index=MetadataIndex(key, chunk.offsets, index),
                storage_offsets=torch.Size(a - c for a, c in zip(lo, chunk.offsets)),
                lengths=torch.Size(lengths)))
        if covered != math.prod(shape):
            raise CheckpointError(f"{key}: the checkpoint {self.directory} stores only "
                                  f"{covered} of the {math.prod(shape)} elements of region "
                                  f"{offset}+{shape}")
        self._reader.read_data(LoadPlan(items), _RegionLoadPlanner(dest)).wait()
        return dest
