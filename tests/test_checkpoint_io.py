"""Streaming safetensors and DCP readers/writers (atomic outputs: tests/test_outputs.py)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from nemo_exaone.checkpoint.dcp_io import ChunkSpec, DistCheckpointReader, write_dcp
from nemo_exaone.checkpoint.errors import CheckpointError
from nemo_exaone.checkpoint.safetensors_io import (
    INDEX_NAME,
    SafetensorsSource,
    SafetensorsStreamWriter,
    ShardedSafetensorsWriter,
    TensorEntry,
    parse_size,
)


def test_stream_writer_output_is_standard_safetensors(tmp_path):
    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7).to(torch.bfloat16),
               "c": torch.arange(6, dtype=torch.int64).reshape(2, 3),
               "d": torch.randn(1).half()}
    entries = [TensorEntry(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
    writer = SafetensorsStreamWriter(tmp_path / "x.safetensors", entries)
    for name, tensor in tensors.items():
        writer.write(name, tensor)
    writer.close()
    loaded = load_file(tmp_path / "x.safetensors")
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)


def test_stream_writer_rejects_out_of_plan_tensor(tmp_path):
    writer = SafetensorsStreamWriter(tmp_path / "x.safetensors",
                                     [TensorEntry("a", torch.float32, (2,))])
    with pytest.raises(RuntimeError, match="expected a"):
        writer.write("b", torch.zeros(2))
    with pytest.raises(RuntimeError, match="closed after 0 of 1"):
        writer.close()


def test_sharded_writer_plans_shards_and_index(tmp_path):
    tensors = {f"t{i}": torch.full((100,), float(i)) for i in range(5)}  # 400 bytes each
    entries = [TensorEntry(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
    writer = ShardedSafetensorsWriter(tmp_path, entries, max_shard_bytes=900)
    for name, tensor in tensors.items():
        writer.write(name, tensor)
    writer.close()
    index = json.loads((tmp_path / INDEX_NAME).read_text())
    assert index["metadata"]["total_size"] == 2000
    assert sorted(set(index["weight_map"].values())) == [
        "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors"]
    source = SafetensorsSource(tmp_path)
    got = source.read(tensors)
    assert all(torch.equal(got[n], t) for n, t in tensors.items())


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("500MB") == 5 * 10**8
    assert parse_size("1024") == 1024
    with pytest.raises(ValueError, match="cannot parse"):
        parse_size("lots")


def test_dcp_chunks_written_lazily_and_read_by_region(tmp_path):
    full = torch.randn(3, 10, 4)
    chunks = [ChunkSpec("w", (3, 10, 4), (layer, rows, 0), (1, n, 4), torch.float32)
              for layer in range(3) for rows, n in ((0, 6), (6, 4))]
    produced = []

    def produce(spec):
        produced.append(spec.offset)
        layer, rows, _ = spec.offset
        return full[layer:layer + 1, rows:rows + spec.shape[1]].clone()

    write_dcp(tmp_path, chunks, {"obj/shard_0_1": {"x": 1}}, produce)
    assert produced == [c.offset for c in chunks]  # in plan order, once each
    reader = DistCheckpointReader(tmp_path)
    assert torch.equal(reader.read("w", (0, 0, 0), (3, 10, 4)), full)
    assert torch.equal(reader.read("w", (1, 4, 1), (2, 5, 2)), full[1:3, 4:9, 1:3])
    with pytest.raises(CheckpointError, match="outside the stored global shape"):
        reader.read("w", (0, 0, 0), (4, 10, 4))
    with pytest.raises(CheckpointError, match="no tensor 'nope'"):
        reader.read("nope", (0,), (1,))


def test_dcp_reader_reports_missing_coverage(tmp_path):
    chunks = [ChunkSpec("w", (4, 2), (0, 0), (2, 2), torch.float32)]  # rows 2..3 never stored
    write_dcp(tmp_path, chunks, {}, lambda spec: torch.zeros(2, 2))
    with pytest.raises(CheckpointError, match="stores only 4 of the 8 elements"):
        DistCheckpointReader(tmp_path).read("w", (0, 0), (4, 2))
