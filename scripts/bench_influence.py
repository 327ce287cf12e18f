"""Benchmark: training_influence (TracIn, last_layer mode) over 10^5 training windows on the CPU.

The training set synthesises its windows on the fly (like a disk-backed EEG data set), so the only memory that grows
with the number of training windows is what TracIn keeps: one self-influence value, one label and the metadata per
window, and the streaming top-k per studied sample; never N_train x parameters. Model: the demo EEG regressor
(conv features -> final nn.Linear), snapshots of its final layer at 5 epochs (as the callback keeps them), 256
studied samples, k=10. Prints seconds, windows per second and peak resident memory, as JSON.

    python scripts/bench_influence.py                      # 100000 windows of 16 x 128 (a few minutes on 2 cores)
    python scripts/bench_influence.py --n-train 20000 --mode projected --projection-dim 128
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

import torch
from torch.utils.data import DataLoader, Dataset


class Windows(Dataset):
    """``(x (C, T), y (1,), subject)`` synthesised from the index (seeded): no data set in memory."""

    def __init__(self, n: int, chans: int, times: int) -> None:
        self.n, self.chans, self.times = n, chans, times

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):  # noqa: ANN204
        g = torch.Generator().manual_seed(i)
        return torch.randn(self.chans, self.times, generator=g), torch.rand(1, generator=g), i % 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=100_000)
    parser.add_argument("--chans", type=int, default=16)
    parser.add_argument("--times", type=int, default=128)
    parser.add_argument("--snapshots", type=int, default=5)
    parser.add_argument("--studied", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--mode", default="last_layer", choices=["last_layer", "projected", "exact"])
    parser.add_argument("--projection-dim", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from cerebro.demo import EEGRegressor
    from cerebro.engine.influence import Snapshot
    from cerebro.engine.influence_data import training_extras
    from cerebro.runner import build_config, execute

    torch.manual_seed(0)
    model = EEGRegressor(n_chans=args.chans, n_times=args.times).eval()
    diag = build_config([{"training_influence": {"mode": args.mode, "projection_dim": args.projection_dim}}]).diagnostics[0]
    names = diag.tracked(model)
    params = dict(model.named_parameters())
    snaps = [Snapshot({n: params[n].detach() + 0.01 * s * torch.randn_like(params[n]) for n in names}, 1e-3, f"s{s}")
             for s in range(args.snapshots)]
    train = DataLoader(Windows(args.n_train, args.chans, args.times), batch_size=args.batch_size, shuffle=True)
    studied = DataLoader(Windows(args.studied, args.chans, args.times), batch_size=64)
    config = build_config(["predictions", {"training_influence": {"mode": args.mode, "projection_dim": args.projection_dim}}],
                          "regression", max_samples=args.studied, batch_size=args.batch_size)
    extras = training_extras(train, config.batch, "bench", snaps)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        summary = execute(model, studied, config, out, device=torch.device(args.device), extras=extras)
        seconds = time.perf_counter() - t0
    rec = summary["diagnostics"]["training_influence"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"status": rec["status"], "reason": rec["reason"], "mode": args.mode, "n_train": args.n_train,
                      "input": [args.chans, args.times], "snapshots": args.snapshots, "studied": args.studied,
                      "params": sum(p.numel() for p in model.parameters()), "tracked_params": len(names),
                      "autopsy_seconds": round(seconds, 1), "training_influence_seconds": rec["seconds"],
                      "windows_per_s": round(args.n_train / rec["seconds"]), "peak_rss_mb": round(peak_mb),
                      "torch_threads": torch.get_num_threads(), "device": args.device}, indent=1))


if __name__ == "__main__":
    main()
