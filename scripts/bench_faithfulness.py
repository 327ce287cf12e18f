"""Benchmark: the cost of ``faithfulness`` against the IG pass it evaluates.

EEG-shaped data (129 channels x 200 samples), an EEGNeX-sized conv model (cerebro.demo.eegnex, random weights), IG
(fixed steps, or auto) and Grad-CAM, then ``faithfulness`` with ``steps: auto``. Prints the seconds of each, the
forward points of the curves, the steps chosen and the measured ratios (curves alone, and with Captum's metrics).

    python scripts/bench_faithfulness.py              # 64 samples, IG n_steps=50
    python scripts/bench_faithfulness.py --quick      # 16 samples
    python scripts/bench_faithfulness.py --n-steps auto --device cuda
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch
from torch.utils.data import DataLoader, TensorDataset

from cerebro import run_autopsy
from cerebro.demo.eegnex import EEGNeX


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 samples instead of 64")
    parser.add_argument("--n-steps", default="50", help="IG steps (an int or auto)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    n = 16 if args.quick else 64
    torch.manual_seed(0)
    model = EEGNeX(n_chans=129, n_outputs=1, n_times=200).eval()
    x = torch.randn(n, 129, 200)
    steps = args.n_steps if args.n_steps == "auto" else int(args.n_steps)
    with tempfile.TemporaryDirectory() as out:
        summary = run_autopsy(model, DataLoader(TensorDataset(x), batch_size=32), output_dir=out, max_samples=n,
                              device=args.device, diagnostics=[
                                  {"integrated_gradients": {"n_steps": steps}}, "layer_gradcam", "faithfulness"])
    d = summary["diagnostics"]
    f = d["faithfulness"]["metrics"]
    print(json.dumps({
        "samples": n, "ig_seconds": d["integrated_gradients"]["seconds"], "gradcam_seconds": d["layer_gradcam"]["seconds"],
        "faithfulness_seconds": d["faithfulness"]["seconds"], "steps": f.get("steps"), "steps_rule": f.get("steps_rule"),
        "forward_points": f.get("forward_points"), "seconds_curves": f.get("seconds_curves"),
        "seconds_captum_metrics": f.get("seconds_captum_metrics"), "cost_ratio_vs_ig": f.get("cost_ratio_vs_ig"),
        "cost_ratio_vs_ig_total": f.get("cost_ratio_vs_ig_total"), "recommended": f.get("recommended"),
        "scores": {m: r.get("score") for m, r in (f.get("methods") or {}).items()}}, indent=1))


if __name__ == "__main__":
    main()
