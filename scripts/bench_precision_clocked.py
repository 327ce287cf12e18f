"""Benchmark (cost model): the default IG against ``precision: fp32`` on bf16 hardware this machine may not have.

``precision: auto`` decides on measured seconds. Where bf16 has no fast units (this project's CPUs), that decision
cannot be observed; this script replays it with a clock instead of the wall: every float32 point costs 1 and every
bf16 point ``1 / speedup`` (the per-point speed-up bf16 hardware offers: 3.2-5.5x on a CPU with AMX, measured in
issue 20). The work itself is real (bf16 autocast emulated where the CPU lacks it), so evaluations, fall-backs,
convergence and maps are what bf16 hardware would give; only batching effects are left out. Per model and sample
count it prints the cost ratio ``float32 evaluations / auto's clocked cost`` (1.5x or more is the issue's target
where bf16 is 3x faster per point), the samples per precision, the not-converged count and the largest map distance
from the float32 run.

    python scripts/bench_precision_clocked.py                        # EEGNeX trained and random init, demo, ViT
    python scripts/bench_precision_clocked.py --speedups 3 4.3 --samples 8 32 --models eegnex_random
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import bench_accuracy_speed as bench  # noqa: E402  (its models, the torchaudio stand-in for braindecode)

import cerebro.engine.precision as precision  # noqa: E402
from cerebro.engine.chunking import ChunkPolicy  # noqa: E402
from cerebro.engine.integrated import integrated_gradients  # noqa: E402
from cerebro.targets import RegressionTarget, ScalarForward  # noqa: E402


class Clocked(precision.PrecisionPlan):
    """A plan whose passes cost a fixed price per point in each precision (the work itself is real)."""

    def __init__(self, requested: str, speedup: float) -> None:
        super().__init__(requested, torch.device("cpu"))
        self.price = {"fp32": 1.0, "bf16": 1.0 / speedup}

    def timed(self, dtype, points, fn):  # noqa: ANN001, ANN201
        out = fn()
        self.record(dtype, points, points * self.price["fp32" if dtype in (None, torch.float32) else "bf16"])
        return out

    def cost(self) -> float:
        return sum(self.points[k] * self.price[k] for k in self.points)

    def observe_rates(self, dtype, rates):  # noqa: ANN001, ANN201
        """The clock prices the passes; the chunk policies' wall-clock throughput is not a measure here."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["eegnex", "eegnex_random", "demo", "vit"],
                    choices=list(bench.MODELS))
    ap.add_argument("--samples", nargs="+", type=int, default=[8, 32], help="samples per run (one block each)")
    ap.add_argument("--speedups", nargs="+", type=float, default=[3.0, 4.3], help="bf16 speed per point vs fp32")
    ap.add_argument("--train", type=int, default=256, help="training windows of the trained models")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=None, help="folder keeping the trained weights between runs")
    args = ap.parse_args()
    bench.CACHE = args.cache
    torch.manual_seed(0)
    print(f"cost model: float32 point = 1, bf16 point = 1/speedup; the work ran on "
          f"{bench.hardware(torch.device('cpu'))}\n")
    precision.reduced_candidate = lambda device: ("bf16", "clocked bf16 hardware")  # what auto sees on AMX/CUDA
    print("| model | samples | bf16 speed-up per point | fp32 evaluations | auto's cost | fp32 / auto | "
          "samples reduced / fell back / fp32 | not converged (auto, fp32) | max map distance vs fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        model, pool, desc = bench.MODELS[name](args.train, args.epochs)
        fwd = ScalarForward(model, RegressionTarget())
        for n in args.samples:
            x = pool[:n]
            base = torch.zeros_like(x)

            def run(plan: precision.PrecisionPlan | None):  # noqa: ANN202
                return integrated_gradients(fwd, x, base, None, None, "nested",
                                            lambda d: ChunkPolicy(64, None, x.device, 64), tolerance=0.01,
                                            max_steps=512, plan=plan)

            ref = run(None)
            for speedup in args.speedups:
                plan = Clocked("auto", speedup)
                res = run(plan)
                a, r = res.attributions.flatten(1), ref.attributions.flatten(1)
                dist = float(((a - r).norm(dim=1) / r.norm(dim=1).clamp_min(1e-30)).max())
                bad = [int((v.delta.abs() > 0.01 * v.gap.abs()).sum()) for v in (res, ref)]
                s = plan.samples
                print(f"| {desc.split(',')[0]}{' (random init)' if 'random' in name else ''} | {n} | {speedup}x | "
                      f"{ref.evaluations} | {plan.cost():.1f} | {ref.evaluations / plan.cost():.2f}x | "
                      f"{s['reduced']} / {s['fell_back']} / {s['fp32']} | {bad[0]}, {bad[1]} | {dist:.4f} |",
                      flush=True)


if __name__ == "__main__":
    main()
