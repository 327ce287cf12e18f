"""Benchmark: the cost of ``faithfulness`` against the IG pass it evaluates, and how well its levels separate maps.

Cost (default): EEG-shaped data (129 channels x 200 samples), an EEGNeX-sized conv model (cerebro.demo.eegnex, random
weights), IG (fixed steps, or auto) and Grad-CAM, then ``faithfulness`` with ``steps: auto``. Prints the seconds of
each, the forward points of the curves, the steps chosen and the measured ratios (curves alone, and with Captum's
metrics).

Separation (``--planted``): planted-signal models where the right map is known: two images classifiers (a bright
blob on noise: 2 x 6 x 6 with 36 pixel units, 3 x 32 x 32 with 256 patches of 2 x 2) and cerebro.demo's EEG
regressor trained with Lightning on its planted burst (120 blocks). IG and saliency maps, ``steps: auto`` (the same
forward passes for every spacing), each ``spacing`` in turn; prints every deletion/insertion AUC against random
order and the gap in standard errors of the per-sample difference (> 0 = the map beats random order).

    python scripts/bench_faithfulness.py              # 64 samples, IG n_steps=50
    python scripts/bench_faithfulness.py --quick      # 16 samples
    python scripts/bench_faithfulness.py --n-steps auto --device cuda
    python scripts/bench_faithfulness.py --planted    # uniform (the old levels) vs quadratic vs geometric
    python scripts/bench_faithfulness.py --planted --case eeg
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cerebro import run_autopsy
from cerebro.demo.eegnex import EEGNeX


def cost(args: argparse.Namespace) -> None:
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
        "samples": n, "ig_seconds": d["integrated_gradients"]["seconds"],
        "gradcam_seconds": d["layer_gradcam"]["seconds"], "faithfulness_seconds": d["faithfulness"]["seconds"],
        "steps": f.get("steps"), "steps_rule": f.get("steps_rule"), "spacing": f.get("spacing"),
        "forward_points": f.get("forward_points"), "seconds_curves": f.get("seconds_curves"),
        "seconds_captum_metrics": f.get("seconds_captum_metrics"), "cost_ratio_vs_ig": f.get("cost_ratio_vs_ig"),
        "cost_ratio_vs_ig_total": f.get("cost_ratio_vs_ig_total"), "recommended": f.get("recommended"),
        "scores": {m: r.get("score") for m, r in (f.get("methods") or {}).items()}}, indent=1))


class _CNN(nn.Module):
    def __init__(self, chans: int, side: int, width: int, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(chans, width, 3, padding=1)
        self.pool = pool
        self.head = nn.Linear(width * (side // (2 if pool else 1)) ** 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        return self.head((nn.functional.max_pool2d(h, 2) if self.pool else h).flatten(1))


def _blobs(n: int, chans: int, side: int, rows: slice, cols: slice, amp: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, chans, side, side, generator=g) * 0.5
    y = torch.arange(n) % 2
    x[y == 1, :1 if chans == 2 else chans, rows, cols] += amp
    return x, y


def _image_case(chans: int, side: int, rows: slice, cols: slice, amp: float, width: int, pool: bool):
    torch.manual_seed(0)
    model = _CNN(chans, side, width, pool)
    x, y = _blobs(256, chans, side, rows, cols, amp, 0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(80):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), _blobs(32, chans, side, rows, cols, amp, 1), "classification"


def _eeg_case():
    import lightning.pytorch as pl

    from cerebro.demo.data import make_eeg_dataset
    from cerebro.demo.model import EEGRegressor

    pl.seed_everything(0, verbose=False)
    x, y, _ = make_eeg_dataset(160, n_chans=6, n_times=120, seed=0)
    model = EEGRegressor(n_chans=6, n_times=120, filters=4, lr=0.01)
    with tempfile.TemporaryDirectory() as root:
        pl.Trainer(max_epochs=6, default_root_dir=root, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False).fit(
            model, DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))
    xv, yv, _ = make_eeg_dataset(32, n_chans=6, n_times=120, seed=1)
    return model.eval(), (xv, yv), None


def _separation(out: Path, method: str, kind: str) -> tuple[float, float]:
    """Per-sample AUC gap over random order (deletion: random - method; insertion: method - random), as fractions
    of the unperturbed score: mean and standard error."""
    a = out / "arrays" / "faithfulness"
    frac = np.load(a / "fraction_perturbed.npy")
    s0 = np.load(a / "random_deletion.npy")[:, :1]
    area = {k: np.trapezoid(np.load(a / f"{k}_{kind}.npy") / s0, frac, axis=1) for k in (method, "random")}
    gap = (area["random"] - area[method]) if kind == "deletion" else (area[method] - area["random"])
    return float(gap.mean()), float(gap.std(ddof=1) / np.sqrt(len(gap)))


def planted(args: argparse.Namespace) -> None:
    cases = {"image 2x6x6 (36 pixels)": lambda: _image_case(2, 6, slice(1, 3), slice(3, 5), 1.5, 6, False),
             "image 3x32x32 (256 patches)": lambda: _image_case(3, 32, slice(10, 14), slice(18, 22), 1.0, 8, True),
             "eeg 6x120 (120 blocks)": _eeg_case}
    rows = []
    for case, make in cases.items():
        if args.case and args.case not in case:
            continue
        model, (x, y), target = make()
        for spacing in ("uniform", "quadratic", "geometric"):
            with tempfile.TemporaryDirectory() as d:
                s = run_autopsy(model, DataLoader(TensorDataset(x, y), batch_size=16), output_dir=d, max_samples=len(x),
                                device=args.device, **({"target": target} if target else {}), diagnostics=[
                                    {"integrated_gradients": {"n_steps": 16}}, "saliency",
                                    {"faithfulness": {"metric_samples": 0, "spacing": spacing}}])
                f = s["diagnostics"]["faithfulness"]["metrics"]
                for m in ("integrated_gradients", "saliency"):
                    r = f["methods"][m]
                    (dg, dse), (ig, ise) = _separation(Path(d), m, "deletion"), _separation(Path(d), m, "insertion")
                    rows.append({"case": case, "spacing": spacing, "levels": f["steps"],
                                 "fractions": [round(v, 3) for v in np.load(
                                     Path(d) / "arrays/faithfulness/fraction_perturbed.npy").tolist()],
                                 "forward_points": f["forward_points"], "method": m,
                                 "deletion_auc": round(r["deletion_auc"], 3),
                                 "random_deletion_auc": round(r["random_deletion_auc"], 3),
                                 "insertion_auc": round(r["insertion_auc"], 3),
                                 "random_insertion_auc": round(r["random_insertion_auc"], 3),
                                 "deletion_gap": round(dg, 3), "deletion_gap_in_se": round(dg / dse, 1),
                                 "insertion_gap": round(ig, 3), "insertion_gap_in_se": round(ig / ise, 1),
                                 "score": round(r["score"], 3), "verdict": r["verdict"]})
                print(json.dumps(rows[-2]), json.dumps(rows[-1]), sep="\n", flush=True)
    print("| case | levels (fractions) | method | deletion AUC / random | insertion AUC / random | gaps in SE |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['spacing']} {r['fractions']} | {r['method']} | {r['deletion_auc']} / "
              f"{r['random_deletion_auc']} | {r['insertion_auc']} / {r['random_insertion_auc']} | "
              f"{r['deletion_gap_in_se']} / {r['insertion_gap_in_se']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 samples instead of 64")
    parser.add_argument("--n-steps", default="50", help="IG steps (an int or auto)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--planted", action="store_true", help="separation of planted maps from random order")
    parser.add_argument("--case", default="", help="with --planted: only the cases whose name contains this")
    args = parser.parse_args()
    planted(args) if args.planted else cost(args)


if __name__ == "__main__":
    main()
