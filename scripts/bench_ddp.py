"""Benchmark: the same autopsy on 1 process and on 2 DDP processes (gloo, CPU): equal outputs, and the wall time.

Each rank uses ``cores / world`` threads, so both runs use the whole machine. On a 2-core machine the ratio shows
the cost of sharding, not a speed-up; with one GPU per rank the attribution time divides by the number of ranks.

    python scripts/bench_ddp.py                 # EEGNeX on 129 x 200, 32 samples, IG n_steps=50
    python scripts/bench_ddp.py --samples 8     # smoke run
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

from cerebro.demo.eegnex import EEGNeX
from cerebro.engine.distributed import Comm
from cerebro.runner import build_config, execute

DIAGNOSTICS = [{"integrated_gradients": {"n_steps": 50}}, "layer_gradcam"]


def data(n: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 129, 200, generator=g)), batch_size=32)


def autopsy(out: Path, n: int, comm: Comm) -> float:
    torch.manual_seed(0)
    model = EEGNeX().eval()
    t0 = time.perf_counter()
    summary = execute(model, data(n), build_config(DIAGNOSTICS, max_samples=n), out, comm=comm)
    assert summary["status"] == "ok", summary["reason"]
    return time.perf_counter() - t0


def worker(rank: int, world: int, out: str, n: int, port: int, threads: int) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    seconds = autopsy(Path(out), n, Comm.current())
    if rank == 0:
        Path(out, "seconds.txt").write_text(str(seconds))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--world", type=int, default=2)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        single = autopsy(Path(tmp) / "single", args.samples, Comm())
        mp.spawn(worker, args=(args.world, str(Path(tmp) / "ddp"), args.samples, 29517,
                               max(1, cores // args.world)), nprocs=args.world, join=True)
        multi = float((Path(tmp) / "ddp" / "seconds.txt").read_text())
        diffs = {k: float(np.abs(np.load(Path(tmp) / "single/arrays" / k) - np.load(Path(tmp) / "ddp/arrays" / k)).max())
                 for k in ("integrated_gradients/attributions.npy", "layer_gradcam/attributions.npy")}
    print(f"{args.samples} samples, EEGNeX 129 x 200, IG n_steps=50 + GradCAM, {cores} cores")
    print(f"{'run':12s} {'seconds':>8s}")
    print(f"{'1 process':12s} {single:8.2f}")
    print(f"{f'{args.world} ranks':12s} {multi:8.2f}   ratio 1/{args.world}: {single / multi:.2f}x")
    print("max |1 process - DDP|: " + ", ".join(f"{k.split('/')[0]} {v:.1e}" for k, v in diffs.items()))


if __name__ == "__main__":
    main()
