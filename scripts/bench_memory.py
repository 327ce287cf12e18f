"""Benchmark: peak resident memory of a whole autopsy at 256 vs 4096 samples of 129 x 200 (flat memory).

Each run is a fresh subprocess whose data set synthesises windows on the fly (like a disk-backed EEG data set),
so the only thing that grows with the sample count is what the autopsy itself keeps. At 4096 samples the
Integrated Gradients array alone is 4096 x 129 x 200 x 4 B = 423 MB; cerebro streams it to disk.
Model: the demo EEG regressor sized for 129 channels (memory does not depend on its depth); IG n_steps=4 keeps
the run short, the arrays have the same size at any n_steps.

    python scripts/bench_memory.py            # 256 and 4096 samples (about 3 minutes on 2 CPU cores)
    python scripts/bench_memory.py --sizes 256 1024 4096
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time

TARGET_MB = 300


def child(n: int) -> None:
    import torch
    from torch.utils.data import DataLoader, Dataset

    from cerebro import run_autopsy
    from cerebro.demo import EEGRegressor

    class Windows(Dataset):
        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int):  # noqa: ANN204
            g = torch.Generator().manual_seed(i)
            return torch.randn(129, 200, generator=g), torch.rand(1, generator=g), i % 8

    torch.manual_seed(0)
    model = EEGRegressor(n_chans=129, n_times=200, filters=4)
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_autopsy(model, DataLoader(Windows(), batch_size=64), output_dir=tmp, max_samples=n,
                              diagnostics=["predictions", "gradients", "activations", "failure_modes",
                                           {"integrated_gradients": {"n_steps": 4}}, "layer_gradcam"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": n, "status": summary["status"], "peak_mb": peak, "start_mb": start,
                      "seconds": time.perf_counter() - t0}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 4096])
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    rows = []
    for n in args.sizes:
        done = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    ig_mb = {r["n"]: r["n"] * 129 * 200 * 4 / 2**20 for r in rows}
    print(f"{'samples':>8s} {'status':>8s} {'peak RSS MB':>12s} {'after import':>13s} {'IG array MB':>12s} "
          f"{'seconds':>8s}")
    for r in rows:
        print(f"{r['n']:8d} {r['status']:>8s} {r['peak_mb']:12.0f} {r['start_mb']:13.0f} {ig_mb[r['n']]:12.0f} "
              f"{r['seconds']:8.1f}")
    growth = rows[-1]["peak_mb"] - rows[0]["peak_mb"]
    print(f"\npeak RSS growth {rows[0]['n']} -> {rows[-1]['n']} samples: {growth:.0f} MB (target <= {TARGET_MB} MB; "
          f"the IG array alone grows by {ig_mb[rows[-1]['n']] - ig_mb[rows[0]['n']]:.0f} MB)")


if __name__ == "__main__":
    main()
