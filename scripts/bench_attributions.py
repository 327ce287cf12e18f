"""Benchmark: cerebro's Integrated Gradients vs plain Captum, the seed project's loop and the hardware floor.

EEG-shaped data (129 channels x 200 samples), an EEGNeX-sized conv model (cerebro.demo.eegnex, random weights),
64 samples, IG n_steps=50. Prints one table of times and ratios, the attribution agreement with Captum, the whole
default autopsy against its own IG + GradCAM + one forward/backward pass, and adaptive IG on the trained demo model.

    python scripts/bench_attributions.py            # the issue's setting (about 10 minutes on 2 CPU cores)
    python scripts/bench_attributions.py --quick    # 16 samples, for a smoke run
    python scripts/bench_attributions.py --device cuda --autocast bf16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from captum.attr import IntegratedGradients as CaptumIG
from torch.utils.data import DataLoader, TensorDataset

from cerebro import run_autopsy
from cerebro.demo.eegnex import EEGNeX
from cerebro.engine.chunking import clear_cache


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[float, object]:  # noqa: ANN001
    sync(device)
    t0 = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - t0, result


def captum_per_batch(model, x, n_steps: int, batch: int, internal: int) -> torch.Tensor:  # noqa: ANN001
    ig = CaptumIG(lambda inp: model(inp)[:, 0])
    return torch.cat([ig.attribute(x[i : i + batch], n_steps=n_steps, internal_batch_size=internal)
                      for i in range(0, x.shape[0], batch)])


def floor(model, x, n_steps: int, chunk: int) -> None:  # noqa: ANN001
    """Plain torch: forward+backward over the same interpolation points (alpha * x), ``chunk`` points at a time."""
    alphas = torch.linspace(0, 1, n_steps, device=x.device)
    points = (alphas.view(-1, 1, 1, 1) * x.unsqueeze(0)).reshape(-1, *x.shape[1:])
    for i in range(0, points.shape[0], chunk):
        p = points[i : i + chunk].clone().requires_grad_(True)
        torch.autograd.grad(model(p)[:, 0].sum(), p)


def best_floor(model, x, n_steps: int, device: torch.device) -> tuple[float, int]:  # noqa: ANN001
    """The floor at its best chunk size (sizes tried on a tenth of the points, the best one run on all of them)."""
    trial = x[: max(1, x.shape[0] // 10)]
    times = {c: timed(lambda c=c: floor(model, trial, n_steps, c), device)[0] for c in (4, 8, 16, 32, 64, 128)}
    best = min(times, key=times.__getitem__)
    return timed(lambda: floor(model, x, n_steps, best), device)[0], best


def cerebro_ig(model, x, n_steps: int, out: Path, device: torch.device, autocast: str | None) -> tuple[float, dict]:  # noqa: ANN001
    clear_cache()
    loader = DataLoader(TensorDataset(x.cpu()), batch_size=32)
    summary = run_autopsy(model, loader, diagnostics=[{"integrated_gradients": {"n_steps": n_steps,
                                                                                 "autocast": autocast}}],
                          output_dir=out, max_samples=x.shape[0], device=device)
    rec = summary["diagnostics"]["integrated_gradients"]
    assert rec["status"] == "ok", rec["reason"]
    return rec["seconds"], rec["metrics"]


def variant(name: str, n: int, steps: int, device_name: str, out: str) -> dict:
    """One variant in this (fresh) process: seconds, peak RSS, and the attributions saved to ``out``."""
    device = torch.device(device_name)
    torch.manual_seed(0)
    model = EEGNeX().eval().to(device)
    x = torch.randn(n, 129, 200, device=device)
    extra = {}
    if name == "a":
        with tempfile.TemporaryDirectory() as tmp:
            seconds, metrics = cerebro_ig(model, x, steps, Path(tmp), device, None)
            attr = np.load(Path(tmp) / "arrays/integrated_gradients/attributions.npy")
        extra["chunk"] = metrics["chunk_points"]
    elif name in ("b", "c"):
        batch, internal = (32, 32 * steps) if name == "b" else (4, 4)
        seconds, ref = timed(lambda: captum_per_batch(model, x, steps, batch, internal), device)
        attr = ref.detach().cpu().numpy()
    else:
        seconds, extra["chunk"] = best_floor(model, x, steps, device)
        attr = None
    if attr is not None:
        np.save(out, attr)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    return {"seconds": seconds, "peak_mb": peak, **extra}


VARIANTS = {"a": "a cerebro", "b": "b captum, per batch of 32", "c": "c seed loop (batch 4, ibs 4)",
            "d": "d floor: torch fwd+bwd"}


def run_variant(name: str, n: int, steps: int, device: str, out: str, limit_gb: float) -> dict:
    """Run a variant in a subprocess capped at ``limit_gb`` of address space (on CPU), so that a variant that
    needs more memory than the machine has is reported as out of memory instead of taking the machine down."""
    cmd = [sys.executable, __file__, "--variant", name, "--samples", str(n), "--n-steps", str(steps), "--device",
           device, "--out", out, "--limit-gb", str(limit_gb)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": "out of memory" if "memory" in done.stderr.lower() or done.returncode < 0 else tail}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--n-steps", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="16 samples")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--autocast", choices=["bf16", "fp16"], default=None, help="on CUDA: only this mode (default both)")
    ap.add_argument("--limit-gb", type=float, default=16.0, help="address-space cap of each CPU variant")
    ap.add_argument("--skip-autopsy", action="store_true")
    ap.add_argument("--skip-adaptive", action="store_true")
    ap.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        if args.device == "cpu":
            cap = int(args.limit_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        print(json.dumps(variant(args.variant, args.samples, args.n_steps, args.device, args.out)))
        return
    n = 16 if args.quick else args.samples
    steps = args.n_steps
    device = torch.device(args.device)
    print(f"device {device} ({torch.get_num_threads()} threads), {n} samples of 129 x 200, EEGNeX, IG n_steps={steps}, "
          f"{n * steps} interpolation points; each variant in a fresh process capped at {args.limit_gb:g} GB\n")
    print(f"{'variant':32s} {'seconds':>9s} {'x / a':>7s} {'peak MB':>9s}", flush=True)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, label in VARIANTS.items():
            rows[key] = r = run_variant(key, n, steps, args.device, f"{tmp}/{key}.npy", args.limit_gb)
            a = rows["a"].get("seconds", float("nan"))
            if "error" in r:
                print(f"{label:32s} {r['error']}", flush=True)
            else:
                print(f"{label:32s} {r['seconds']:9.2f} {r['seconds'] / a:7.2f} {r['peak_mb']:9.0f}", flush=True)
        ours = np.load(f"{tmp}/a.npy")
        refs = {k: np.load(f"{tmp}/{k}.npy") for k in ("b", "c") if "error" not in rows[k]}
    a, d = rows["a"]["seconds"], rows["d"]["seconds"]
    print(f"\na/d = {a / d:.3f} (target <= 1.10); cerebro chunk {rows['a']['chunk']} points, floor's best chunk "
          f"{rows['d']['chunk']}")
    for k in ("b", "c"):
        if "error" in rows[k]:
            print(f"{k}/a: {VARIANTS[k]} did not finish: {rows[k]['error']} (cerebro's peak: {rows['a']['peak_mb']:.0f} MB)")
        else:
            print(f"{k}/a = {rows[k]['seconds'] / a:.3f}" + (" (target >= 1.3)" if k == "b" else ""))
    for k, ref in refs.items():
        print(f"max |cerebro - {VARIANTS[k].split(',')[0][2:]}| = {float(np.abs(ours - ref).max()):.2e} (target <= 1e-5)")
    if device.type == "cuda":
        torch.manual_seed(0)
        model = EEGNeX().eval().to(device)
        x = torch.randn(n, 129, 200, device=device)
        for mode in [args.autocast] if args.autocast else ["bf16", "fp16"]:
            with tempfile.TemporaryDirectory() as tmp:
                t_amp, _ = cerebro_ig(model, x, steps, Path(tmp) / "amp", device, mode)
                amp = np.load(Path(tmp) / "amp/arrays/integrated_gradients/attributions.npy")
            rel = float(np.linalg.norm(amp - ours) / np.linalg.norm(ours))
            print(f"a cerebro, autocast {mode}: {t_amp:.2f} s ({a / t_amp:.2f}x faster than float32), "
                  f"relative L2 error of the attributions {rel:.2e}")
    if not args.skip_autopsy or not args.skip_adaptive:
        torch.manual_seed(0)
        model = EEGNeX().eval().to(device)
        x = torch.randn(n, 129, 200, device=device)
        if not args.skip_autopsy:
            whole_autopsy(model, x, steps, device)
        if not args.skip_adaptive:
            adaptive(device)


def whole_autopsy(model, x, steps: int, device: torch.device) -> None:  # noqa: ANN001
    """The default six-diagnostic autopsy vs its own IG + GradCAM passes + one forward/backward over the samples."""
    y = torch.randn(x.shape[0], 1, device=device)
    clear_cache()
    with tempfile.TemporaryDirectory() as tmp:
        loader = DataLoader(TensorDataset(x.cpu(), y.cpu()), batch_size=32)
        total, summary = timed(lambda: run_autopsy(
            model, loader, output_dir=tmp, max_samples=x.shape[0], device=device,
            diagnostics=["predictions", "gradients", "activations", "failure_modes",
                         {"integrated_gradients": {"n_steps": steps}}, "layer_gradcam"]), device)
    d = summary["diagnostics"]
    assert summary["status"] == "ok", summary["reason"]

    def fwd_bwd() -> None:
        for i in range(0, x.shape[0], 32):
            p = x[i : i + 32].clone().requires_grad_(True)
            torch.autograd.grad(model(p)[:, 0].sum(), p)

    one, _ = timed(fwd_bwd, device)
    budget = d["integrated_gradients"]["seconds"] + d["layer_gradcam"]["seconds"] + one
    print(f"\nwhole default autopsy {total:.2f} s vs IG {d['integrated_gradients']['seconds']:.2f} + GradCAM "
          f"{d['layer_gradcam']['seconds']:.2f} + one fwd+bwd {one:.2f} = {budget:.2f} s: ratio {total / budget:.3f} "
          "(target <= 1.15)")
    print("per diagnostic seconds: " + json.dumps({k: v["seconds"] for k, v in d.items()}))


def adaptive(device: torch.device) -> None:
    """Adaptive IG at tolerance 1% on the trained demo model, vs Captum's default 50 steps."""
    import lightning.pytorch as pl

    from cerebro.demo import EEGRegressor, SyntheticEEGDataModule

    pl.seed_everything(0, verbose=False)
    dm = SyntheticEEGDataModule(n_train=768, n_val=128)
    model = EEGRegressor()
    pl.Trainer(max_epochs=12, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False).fit(model, datamodule=dm)
    dm.setup("validate")
    res = {}
    for label, ig in (("fixed 50", {"n_steps": 50}), ("auto tol 1%", {"n_steps": "auto", "delta_tolerance": 0.01})):
        with tempfile.TemporaryDirectory() as tmp:
            s = run_autopsy(model, dm.val_dataloader(), diagnostics=[{"integrated_gradients": ig}], output_dir=tmp,
                            max_samples=128, device=device)
        res[label] = s["diagnostics"]["integrated_gradients"]
    f, a = res["fixed 50"]["metrics"], res["auto tol 1%"]["metrics"]
    print(f"\nadaptive IG on the trained demo model (128 samples): auto used {a['evaluations']} evaluations "
          f"(mean {a['steps_mean']:.1f} steps, max {a['steps_max']}) vs {f['evaluations']} at 50 steps "
          f"= {a['evaluations'] / f['evaluations']:.2f}x; median relative delta auto {a['median_relative_delta']:.2e}"
          f" vs fixed {f['median_relative_delta']:.2e}; not converged auto {a['not_converged']}, fixed "
          f"{f['not_converged']} (at 1% tolerance: fixed flags at 5%)")


if __name__ == "__main__":
    main()
