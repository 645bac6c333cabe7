"""Peak memory and throughput of HF <-> Megatron checkpoint conversion: streaming vs naive.

Builds a synthetic EXAONE checkpoint (random bf16, several layers of the 7.8B shape, >= 4 GB,
written streaming, sharded), then converts it both ways with the streaming converter and with
the naive approach (load the whole state dict, convert, save it in one call), each run in a
fresh subprocess. Peak is the larger of the child's ru_maxrss and the sampled memory of its
process tree (PSS, so that pages shared with a forked writer count once). Target for
streaming: peak <= 0.5 x checkpoint size + 1 GiB.

Prints a table and a final JSON line. Usage:
    python benchmarks/convert_memory.py [--layers 6] [--skip-naive] [--workdir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

GIB = 2**30
MIB = 2**20


# ----------------------------------------------------------------------------- children
def _arch(layers: int):
    from nemo_exaone.config.presets import get_preset

    return get_preset("exaone3.5-7.8b").replace(num_layers=layers, tie_word_embeddings=False,
                                                 name="bench")


def _chunk_view(chunk, full: dict):
    """The slice of the full parameter tensor that one checkpoint chunk holds."""
    prepend = len(chunk.shape) - len(chunk.param_shape)
    data = full[chunk.param]
    for dim, (start, size) in enumerate(zip(chunk.param_offset, chunk.shape[prepend:])):
        data = data.narrow(dim, start, size)
    return data, prepend


def _sharded_views(layout, full: dict) -> dict:
    """ShardedTensors over views of ``full``, one per chunk of Megatron's checkpoint layout."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    sharded = {}
    for k, chunk in enumerate(layout.chunks):
        data, prepend = _chunk_view(chunk, full)
        offsets = [(axis, off // size, whole // size) for axis, (off, size, whole) in
                   enumerate(zip(chunk.offset, chunk.shape, chunk.global_shape)) if size != whole]
        sharded[f"t{k}"] = ShardedTensor.from_rank_offsets(
            chunk.key, data, *offsets, replica_id=0, prepend_axis_num=prepend)
    return sharded


def naive_hf_to_mcore(src: Path, dst: Path) -> None:
    """Load every HF tensor, convert all, save all with one dist_checkpointing.save call."""
    from megatron.core import dist_checkpointing
    from safetensors.torch import load_file

    from nemo_exaone.checkpoint.exaone_hf import EXAONE_HF_TABLE, exaone_dims
    from nemo_exaone.checkpoint.hf_source import read_hf_arch
    from nemo_exaone.checkpoint.mcore_layout import megatron_layout, single_process_megatron

    arch = read_hf_arch(src)
    hf = {}
    for file in sorted(src.glob("*.safetensors")):
        hf.update(load_file(file))
    dims = exaone_dims(arch)
    full = {b.megatron: b.to_megatron([hf[n] for n in b.targets], dims)
            for b in EXAONE_HF_TABLE.bind(dims)}
    layout = megatron_layout(arch, EXAONE_HF_TABLE)
    sharded = _sharded_views(layout, full)
    dst.mkdir(parents=True)
    with single_process_megatron():
        dist_checkpointing.save(sharded, str(dst))


def naive_mcore_to_hf(src: Path, dst: Path) -> None:
    """Load the whole dist checkpoint, convert all, save_file each shard."""
    import torch
    from megatron.core import dist_checkpointing
    from safetensors.torch import save_file

    from nemo_exaone.checkpoint.exaone_hf import EXAONE_HF_TABLE, exaone_dims
    from nemo_exaone.checkpoint.mcore_layout import megatron_layout, single_process_megatron
    from nemo_exaone.checkpoint.metadata import read_checkpoint_arch
    from nemo_exaone.checkpoint.safetensors_io import TensorEntry, plan_shards, shard_file_names

    arch = read_checkpoint_arch(src)
    dims = exaone_dims(arch)
    layout = megatron_layout(arch, EXAONE_HF_TABLE)
    full = {p: torch.empty(chunks[0].param_shape, dtype=torch.bfloat16)
            for p, chunks in layout.params().items()}
    sharded = _sharded_views(layout, full)
    with single_process_megatron():
        loaded = dist_checkpointing.load(sharded, str(src))
    for k, chunk in enumerate(layout.chunks):  # load returns new tensors: place them back
        _chunk_view(chunk, full)[0].copy_(loaded[f"t{k}"])
    del loaded
    hf = {}
    for b in EXAONE_HF_TABLE.bind(dims):
        hf.update(zip(b.targets, b.from_megatron(full[b.megatron], dims)))
    entries = [TensorEntry(n, t.dtype, tuple(t.shape)) for n, t in hf.items()]
    shards = plan_shards(entries, 2 * 10**9)
    dst.mkdir(parents=True)
    for name, shard in zip(shard_file_names(len(shards)), shards):
        save_file({e.name: hf[e.name] for e in shard}, str(dst / name), metadata={"format": "pt"})


def child_main(mode: str, src: str, dst: str) -> None:
    import torch  # noqa: F401  (imports count in the baseline, as for every method)

    import nemo_exaone.checkpoint.hf_to_mcore  # noqa: F401
    import nemo_exaone.checkpoint.mcore_to_hf  # noqa: F401

    baseline = psutil.Process().memory_info().rss
    start = time.perf_counter()
    if mode == "stream-hf-to-mcore":
        from nemo_exaone.checkpoint.hf_to_mcore import convert_hf_to_mcore

        convert_hf_to_mcore(src, dst, progress=False)
    elif mode == "stream-mcore-to-hf":
        from nemo_exaone.checkpoint.mcore_to_hf import convert_mcore_to_hf

        convert_mcore_to_hf(src, dst, max_shard_size=2 * 10**9, progress=False)
    elif mode == "naive-hf-to-mcore":
        naive_hf_to_mcore(Path(src), Path(dst))
    elif mode == "naive-mcore-to-hf":
        naive_mcore_to_hf(Path(src), Path(dst))
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds = time.perf_counter() - start
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "ru_maxrss": maxrss, "baseline_rss": baseline}))


# ----------------------------------------------------------------------------- parent
def tree_pss(proc: psutil.Process) -> int:
    """Proportional set size of a process and its children: pages they share (a forked
    writer process) counted once, unlike a sum of RSS."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def run_child(mode: str, src: Path, dst: Path) -> dict:
    """Run one conversion in a fresh interpreter; sample its process tree's PSS meanwhile."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", mode, str(src), str(dst)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    watched = psutil.Process(proc.pid)

    def sample() -> None:
        while proc.poll() is None:
            try:
                peak[0] = max(peak[0], tree_pss(watched))
            except psutil.Error:
                break
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed ({proc.returncode}):\n{err[-4000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss"] = max(result["ru_maxrss"], peak[0])
    result["sampled_tree_peak"] = peak[0]
    return result


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def same_tensors(a: Path, b: Path) -> bool:
    """Every tensor bit-identical (read one pair at a time)."""
    import torch

    from nemo_exaone.checkpoint.safetensors_io import SafetensorsSource

    left, right = SafetensorsSource(a), SafetensorsSource(b)
    if set(left.tensors) != set(right.tensors):
        return False
    for name in left.tensors:
        x, y = left.read([name])[name], right.read([name])[name]
        if x.dtype != y.dtype or not torch.equal(x.view(torch.uint8), y.view(torch.uint8)):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6, help="7.8B-shaped layers (6: 4.3 GB)")
    parser.add_argument("--workdir", default="/tmp", help="parent of the temporary directory")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(*args.child)
        return

    import torch

    from nemo_exaone.checkpoint.synthetic import write_random_hf_checkpoint

    work = Path(tempfile.mkdtemp(prefix="nemo_exaone_convert_bench_", dir=args.workdir))
    try:
        arch = _arch(args.layers)
        hf = work / "hf"
        start = time.perf_counter()
        write_random_hf_checkpoint(hf, arch, torch.bfloat16, seed=0, max_shard_bytes=2 * 10**9)
        size = dir_bytes(hf)
        print(f"synthetic EXAONE checkpoint: {args.layers} layers of the 7.8B shape, bf16, "
              f"{size / 1e9:.2f} GB ({len(list(hf.glob('*.safetensors')))} shards), written in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        target = 0.5 * size + GIB
        runs = {}
        runs["stream hf-to-mcore"] = run_child("stream-hf-to-mcore", hf, work / "mcore")
        runs["stream mcore-to-hf"] = run_child("stream-mcore-to-hf", work / "mcore", work / "hf2")
        identical = same_tensors(hf, work / "hf2")
        shutil.rmtree(work / "hf2")
        if not args.skip_naive:
            runs["naive hf-to-mcore"] = run_child("naive-hf-to-mcore", hf, work / "mcore_naive")
            shutil.rmtree(work / "mcore_naive")
            runs["naive mcore-to-hf"] = run_child("naive-mcore-to-hf", work / "mcore",
                                                  work / "hf_naive")
            shutil.rmtree(work / "hf_naive")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\ncheckpoint {size / MIB:.0f} MiB; target peak RSS <= 0.5 x size + 1 GiB = "
          f"{target / MIB:.0f} MiB")
    print("peak = max(ru_maxrss of the converting process, sampled PSS of its process tree "
          "incl. writer\nsubprocesses); baseline = RSS after imports, before converting")
    print(f"{'run':22s} {'peak MiB':>9s} {'ru_maxrss':>9s} {'tree PSS':>8s} {'baseline':>9s} "
          f"{'x size':>7s} {'seconds':>8s} {'MB/s':>7s} {'target':>7s}")
    for name, r in runs.items():
        r["mb_per_s"] = size / 1e6 / r["seconds"]
        ok = "ok" if r["peak_rss"] <= target else "OVER"
        print(f"{name:22s} {r['peak_rss'] / MIB:9.0f} {r['ru_maxrss'] / MIB:9.0f} "
              f"{r['sampled_tree_peak'] / MIB:8.0f} {r['baseline_rss'] / MIB:9.0f} "
              f"{r['peak_rss'] / size:7.2f} {r['seconds']:8.1f} {r['mb_per_s']:7.0f} "
              f"{ok if name.startswith('stream') else '':>7s}")
    print(f"streaming round trip bit-identical: {identical}")
    summary = {
        "benchmark": "convert_memory", "checkpoint_bytes": size, "layers": args.layers,
        "target_peak_rss_bytes": int(target), "roundtrip_bit_identical": identical,
        "runs": {name.replace(" ", "_").replace("-", "_"): {
            "peak_rss_mib": round(r["peak_rss"] / MIB, 1),
            "ru_maxrss_mib": round(r["ru_maxrss"] / MIB, 1),
            "sampled_tree_pss_mib": round(r["sampled_tree_peak"] / MIB, 1),
            "baseline_rss_mib": round(r["baseline_rss"] / MIB, 1),
            "seconds": round(r["seconds"], 2), "mb_per_s": round(r["mb_per_s"], 1)}
            for name, r in runs.items()},
        "within_target": all(r["peak_rss"] <= target for n, r in runs.items()
                             if n.startswith("stream")),
    }
    if "naive hf-to-mcore" in runs:
        summary["naive_over_streaming_peak"] = {
            d: round(runs[f"naive {d}"]["peak_rss"] / runs[f"stream {d}"]["peak_rss"], 2)
            for d in ("hf-to-mcore", "mcore-to-hf")}
    print(json.dumps(summary))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
