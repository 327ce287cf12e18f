"""Benchmark: accuracy per second of Integrated Gradients, cerebro's defaults against Captum (issue 13).

For each model (braindecode's EEGNeX trained for a few epochs on planted-signal EEG windows, cerebro's demo
regressor trained the same way, a timm ViT-tiny-style network on small images), every variant attributes the same
samples and is compared with a 256-step float32 Gauss-Legendre reference:

- Captum ``IntegratedGradients`` at 16/32/50/100 steps, textbook call (``internal_batch_size = N * n_steps``) and
  the best ``internal_batch_size`` (fastest of a short sweep);
- cerebro's default (nested adaptive rule, ``precision: auto``), ``precision: fp32`` (timed beside the default) and
  each forced reduced precision (bf16, fp16: most points reduced, fp32 corrections and fall-backs).

Models: EEGNeX trained and at random init, the demo regressor, torchvision resnet18 (ReLU), a ViT. Columns also give
the not-converged count and the largest map distance from cerebro's fp32 run; the first line names the hardware. Then
the ReLU case at equal accuracy (``scripts/bench_relu_equal_accuracy.py``: a trained resnet18 classifier against
Captum's smallest accurate step count).

Columns: seconds (median of ``--repeats`` interleaved runs for the timed rows), forward+backward evaluations,
relative L2 error and Spearman of |attr| against the reference (median over samples, and the worst sample's
Spearman), median and max completeness error ``|sum(attr) - (f(x) - f(b))| / |f(x) - f(b)|``.

    python scripts/bench_accuracy_speed.py                 # EEGNeX, demo, ViT (about 10 minutes on 2 CPU cores)
    python scripts/bench_accuracy_speed.py --quick         # smoke run: fewer samples and rows
    python scripts/bench_accuracy_speed.py --device cuda   # GPU: fp32/bf16/fp16 rows with peak memory
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from captum.attr import IntegratedGradients as CaptumIG
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "zoo" / "standins"))  # braindecode's torchaudio stand-in

from cerebro.demo.data import make_eeg_dataset  # noqa: E402
from cerebro.demo.model import EEGRegressor  # noqa: E402
from cerebro.engine.budget import points_per_pass  # noqa: E402
from cerebro.engine.chunking import ChunkPolicy, clear_cache  # noqa: E402
from cerebro.engine.integrated import NESTED, integrated_gradients  # noqa: E402
from cerebro.engine.precision import PrecisionPlan, reduced_candidate  # noqa: E402
from cerebro.engine.ranks import mean_abs_spearman  # noqa: E402
from cerebro.targets import RegressionTarget, ScalarForward  # noqa: E402


def hardware(device: torch.device) -> str:
    """The CPU model and its bf16 units (AMX, AVX512-BF16), or the CUDA device, and cerebro's reduced candidate."""
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        model = "unknown CPU"
        try:
            with open("/proc/cpuinfo") as f:
                model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
        except OSError:
            pass
        amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        what = (f"{model}, AMX {'yes' if amx else 'no'}, AVX512-BF16 {'yes' if bf16 else 'no'}, "
                f"capability {torch.backends.cpu.get_cpu_capability()}")
    cand, why = reduced_candidate(device)
    return f"{what}; precision auto tries {cand or 'nothing'} ({why})"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def train(model: nn.Module, x: Tensor, y: Tensor, epochs: int, lr: float = 3e-3, batch: int = 32) -> float:
    """A few epochs of Adam on MSE; returns the last epoch's mean loss."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    model.train()
    loss_sum = 0.0
    for _ in range(epochs):
        loss_sum, perm = 0.0, torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], batch):
            idx = perm[i : i + batch]
            loss = nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
    return loss_sum / x.shape[0]


CACHE: Path | None = None


def train_cached(name: str, model: nn.Module, x: Tensor, y: Tensor, epochs: int, lr: float = 3e-3) -> float:
    """:func:`train`, or the weights a previous run with the same settings saved under ``--cache``."""
    path = None if CACHE is None else CACHE / f"{name}_{x.shape[0]}_{epochs}.pt"
    if path is not None and path.is_file():
        state = torch.load(path, weights_only=True)
        model.load_state_dict(state["model"])
        return float(state["loss"])
    loss = train(model, x, y, epochs, lr)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "loss": loss}, path)
    return loss


def eegnex(n_train: int, epochs: int) -> tuple[nn.Module, Tensor, str]:
    from braindecode.models import EEGNeX

    torch.manual_seed(0)
    model = EEGNeX(n_chans=129, n_outputs=1, n_times=200, sfreq=100)
    x, y, _ = make_eeg_dataset(n_train + 64, n_chans=129, seed=1)
    loss = train_cached("eegnex", model, x[:n_train], y[:n_train], epochs)
    return model.eval(), x[n_train:], f"braindecode EEGNeX 129x200, trained {epochs} epochs (train MSE {loss:.3f})"


def eegnex_random(n_train: int, epochs: int) -> tuple[nn.Module, Tensor, str]:
    """EEGNeX at random init on N(0, 1) windows (the issue's set B)."""
    from braindecode.models import EEGNeX

    torch.manual_seed(0)
    model = EEGNeX(n_chans=129, n_outputs=1, n_times=200, sfreq=100)
    x = torch.randn(64, 129, 200, generator=torch.Generator().manual_seed(1))
    return model.eval(), x, "braindecode EEGNeX 129x200, random init, N(0, 1) windows"


def planted_square(n: int, seed: int, rows: slice, cols: slice) -> tuple[Tensor, Tensor]:
    """``n`` noisy 3x32x32 images whose square ``rows`` x ``cols`` is brightened by a random amount; the target is
    half that amount."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g) * 0.5
    amp = torch.rand(n, generator=g) * 2
    x[:, :, rows, cols] += amp.view(-1, 1, 1, 1)
    return x, (0.5 * amp).unsqueeze(1)


def resnet18(n_train: int, epochs: int) -> tuple[nn.Module, Tensor, str]:
    """torchvision resnet18 (ReLU: piecewise-linear, so IG's integrand jumps) on 3x32x32, trained to read a
    planted square's brightness."""
    from torchvision.models import resnet18 as tv_resnet18

    torch.manual_seed(0)
    model = tv_resnet18(num_classes=1)
    x, y = planted_square(n_train + 64, seed=5, rows=slice(4, 12), cols=slice(16, 24))
    loss = train_cached("resnet18", model, x[:n_train], y[:n_train], epochs, lr=1e-3)
    return model.eval(), x[n_train:], f"torchvision resnet18 3x32x32 (ReLU), trained {epochs} epochs (MSE {loss:.3f})"


def demo(n_train: int, epochs: int) -> tuple[nn.Module, Tensor, str]:
    torch.manual_seed(0)
    model = EEGRegressor(n_chans=16)
    x, y, _ = make_eeg_dataset(n_train + 64, n_chans=16, seed=2)
    loss = train_cached("demo", model, x[:n_train], y[:n_train], epochs)
    return model.eval(), x[n_train:], f"cerebro demo EEGRegressor 16x200, trained {epochs} epochs (MSE {loss:.3f})"


def vit(n_train: int, epochs: int) -> tuple[nn.Module, Tensor, str]:
    """ViT-tiny layout (12 blocks, dim 192, 3 heads) on 32x32 images, patch 4, trained to find a planted square."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3, num_classes=1)
    x, y = planted_square(n_train + 64, seed=3, rows=slice(8, 16), cols=slice(8, 16))
    loss = train_cached("vit", model, x[:n_train], y[:n_train], epochs, lr=5e-4)
    return model.eval(), x[n_train:], f"timm ViT-tiny layout (12 blocks) 3x32x32, trained {epochs} epochs (MSE {loss:.3f})"


MODELS = {"eegnex": eegnex, "eegnex_random": eegnex_random, "demo": demo, "resnet18": resnet18, "vit": vit}


class Row:
    """One variant: how to run it, and what it measured."""

    def __init__(self, name: str, fn: Callable[[], tuple[Tensor, Tensor, int]], timed_repeats: bool) -> None:
        self.name, self.fn, self.timed_repeats = name, fn, timed_repeats
        self.seconds: list[float] = []
        self.attr: Tensor | None = None
        self.delta: Tensor | None = None
        self.evaluations = 0
        self.peak_mb: float | None = None
        self.note = ""

    def run(self, device: torch.device) -> None:
        clear_cache()
        t, (attr, delta, evaluations) = timed(self.fn, device)  # type: ignore[misc]
        self.seconds.append(t)
        self.attr, self.delta, self.evaluations = attr.detach().float().cpu(), delta.detach().double().cpu(), evaluations
        if device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(device) / 2**20


def captum_row(model: nn.Module, x: Tensor, n_steps: int, internal: int) -> Callable[[], tuple[Tensor, Tensor, int]]:
    ig = CaptumIG(lambda inp: model(inp)[:, 0])

    def fn() -> tuple[Tensor, Tensor, int]:
        attr, delta = ig.attribute(x, n_steps=n_steps, internal_batch_size=internal, return_convergence_delta=True)
        return attr, delta, x.shape[0] * n_steps
    return fn


def cerebro_row(model: nn.Module, x: Tensor, precision: str, limit: int, n_steps: int | None = None,
                method: str = NESTED, info: dict | None = None) -> Callable[[], tuple[Tensor, Tensor, int]]:
    """What the ``integrated_gradients`` diagnostic does for one block: the run's precision plan, then the engine
    (one chunk policy per precision, as the diagnostic)."""
    fwd = ScalarForward(model, RegressionTarget())

    def fn() -> tuple[Tensor, Tensor, int]:
        base = torch.zeros_like(x)
        plan = PrecisionPlan(precision, x.device)
        policies: dict = {}
        res = integrated_gradients(fwd, x, base, None, n_steps, method,
                                   lambda d: policies.setdefault(d, ChunkPolicy(limit, None, x.device)),
                                   tolerance=0.01, max_steps=512, plan=plan)
        if info is not None:
            info["decision"], info["steps"] = plan.as_dict(), res.steps.tolist()
        return res.attributions, res.delta, res.evaluations
    return fn


def best_internal(model: nn.Module, x: Tensor, device: torch.device) -> int:
    """Fastest ``internal_batch_size`` of a short sweep (one Captum call of 32 points per size on one sample)."""
    times = {}
    for size in (4, 8, 16, 32):
        times[size] = timed(captum_row(model, x[:1], 32, size), device)[0]
    return min(times, key=times.__getitem__)


def accuracy(attr: Tensor, delta: Tensor, ref: Tensor, gap: Tensor) -> dict[str, float]:
    a, r = attr.reshape(attr.shape[0], -1).double(), ref.reshape(ref.shape[0], -1).double()
    rel = ((a - r).norm(dim=1) / r.norm(dim=1).clamp_min(1e-30)).numpy()
    rho = [mean_abs_spearman(a[i : i + 1].numpy(), r[i : i + 1].numpy()) for i in range(a.shape[0])]
    comp = (delta.abs() / gap.abs().clamp_min(1e-12)).numpy()
    return {"rel_l2": float(np.median(rel)), "spearman": float(np.median(rho)), "spearman_min": float(np.min(rho)),
            "comp_median": float(np.median(comp)), "comp_max": float(np.max(comp))}


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> list[str]:
    model, pool, desc = MODELS[name](args.train, args.epochs)
    model = model.to(device)
    x = pool[: args.samples].to(device)
    n = x.shape[0]
    fwd = ScalarForward(model, RegressionTarget())
    with torch.no_grad():
        gap = (fwd(x) - fwd(torch.zeros_like(x))).double().cpu()
    limit = points_per_pass(model, x[:1], 1 << 30)
    ref_steps = 128 if args.quick else 256
    ref = Row(f"reference: GL {ref_steps} steps fp32", cerebro_row(model, x, "fp32", limit, ref_steps,
                                                                    "gausslegendre"), False)
    ref.run(device)
    best = best_internal(model, x, device)
    steps = (16, 50) if args.quick else (16, 32, 50, 100)
    info: dict = {}
    rows = [Row("cerebro default (nested auto, precision auto)", cerebro_row(model, x, "auto", limit, info=info), True),
            Row("captum 50 steps, textbook ibs=N*50", captum_row(model, x, 50, n * 50), True),
            Row(f"captum 50 steps, best ibs={best}", captum_row(model, x, 50, best), True),
            Row("cerebro nested auto, precision fp32", cerebro_row(model, x, "fp32", limit), True)]
    for s in steps:
        if s != 50:
            rows.append(Row(f"captum {s} steps, textbook ibs=N*{s}", captum_row(model, x, s, n * s), False))
            rows.append(Row(f"captum {s} steps, best ibs={best}", captum_row(model, x, s, best), False))
    fast, why = reduced_candidate(device)
    precisions = ("fp32", "bf16", "fp16") if fast or args.all_precisions else ("fp32",)
    for p in precisions[1:]:
        rows.append(Row(f"cerebro nested auto, precision {p}", cerebro_row(model, x, p, limit), False))
    for rep in range(args.repeats):  # interleaved: the timed rows every repeat (in reverse order every other
        # repeat, so that no row always runs first), the others once
        for row in (rows if rep % 2 == 0 else rows[::-1]):
            if row.timed_repeats or rep == 0:
                row.run(device)
    lines = [f"### {desc}", f"{n} samples, device {device}, reference = Gauss-Legendre {ref_steps} steps fp32, "
             f"seconds = median of {args.repeats} interleaved runs (order reversed every other run) for the first "
             "four rows",
             "", "| variant | seconds | evaluations | rel L2 vs ref | Spearman med (min) | completeness med | max | "
             "not converged (>1%) | max map error vs cerebro fp32 |", "|---|---|---|---|---|---|---|---|---|"]
    fp32_row = next(r for r in rows if r.name.endswith("precision fp32"))
    for row in rows:
        acc = accuracy(row.attr, row.delta, ref.attr, gap)
        mem = f", peak {row.peak_mb:.0f} MB" if row.peak_mb is not None else ""
        comp = (row.delta.abs() / gap.abs().clamp_min(1e-12))
        a, r = row.attr.reshape(n, -1).double(), fp32_row.attr.reshape(n, -1).double()
        vs32 = float(((a - r).norm(dim=1) / r.norm(dim=1).clamp_min(1e-30)).max())
        lines.append(f"| {row.name} | {statistics.median(row.seconds):.2f}{mem} | {row.evaluations} | "
                     f"{acc['rel_l2']:.2e} | {acc['spearman']:.4f} ({acc['spearman_min']:.4f}) | "
                     f"{acc['comp_median']:.1e} | {acc['comp_max']:.1e} | {int((comp > 0.01).sum())} | {vs32:.1e} |")
    t = {r.name: statistics.median(r.seconds) for r in rows}
    d = t[rows[0].name]
    lines += ["", f"speed-up of cerebro's default: {t[rows[1].name] / d:.2f}x vs Captum 50 textbook, "
              f"{t[rows[2].name] / d:.2f}x vs Captum 50 best ibs (per repeat: "
              f"{', '.join(f'{a / b:.2f}' for a, b in zip(rows[1].seconds, rows[0].seconds))}); "
              f"{t[rows[3].name] / d:.2f}x vs precision fp32 (per repeat: "
              f"{', '.join(f'{a / b:.2f}' for a, b in zip(rows[3].seconds, rows[0].seconds))})",
              f"default's precision decision: {info.get('decision')}",
              *([] if len(precisions) > 1 else [f"bf16/fp16 rows skipped ({why}; --all-precisions runs them)"]),
              f"default's steps per sample: {info.get('steps')}", ""]
    return lines


def sanity_cost(args: argparse.Namespace, device: torch.device) -> list[str]:
    """Cost of ``sanity_checks`` (default: 3 group stages) against the IG passes it checks, on a 12-block ViT-tiny
    (random weights, as in the issue's measurement) through the real ``run_autopsy``; plus 6 per-layer stages."""
    import tempfile

    from timm.models.vision_transformer import VisionTransformer
    from torch.utils.data import DataLoader, TensorDataset

    from cerebro import run_autopsy

    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3, num_classes=1).eval()
    x = torch.randn(args.samples, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    lines = ["### sanity_checks cost on a 12-block ViT-tiny (3x32x32, random weights)", "",
             "| sanity mode | IG seconds | sanity seconds | ratio | stages |", "|---|---|---|---|---|"]
    for opts in ({"mode": "groups"}, {"mode": "layers", "layers": 6}):
        with tempfile.TemporaryDirectory() as tmp:
            summary = run_autopsy(model, DataLoader(TensorDataset(x), batch_size=8), output_dir=tmp,
                                  diagnostics=["integrated_gradients", {"sanity_checks": {"samples": x.shape[0],
                                                                                          **opts}}],
                                  max_samples=x.shape[0], device=str(device), progress=False)
        d = summary["diagnostics"]
        ig, sc = d["integrated_gradients"]["seconds"], d["sanity_checks"]["seconds"]
        stages = len(d["sanity_checks"]["metrics"].get("stages", []))
        lines.append(f"| {opts} | {ig:.2f} | {sc:.2f} | {sc / ig:.2f} | {stages} |")
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--samples", type=int, default=8, help="samples attributed (8-64)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the timed rows")
    ap.add_argument("--train", type=int, default=256, help="training windows")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--quick", action="store_true", help="4 samples, 1 repeat, fewer rows, 128-step reference")
    ap.add_argument("--no-sanity", action="store_true", help="skip the sanity_checks cost table")
    ap.add_argument("--no-relu", action="store_true", help="skip the ReLU equal-accuracy table "
                    "(scripts/bench_relu_equal_accuracy.py)")
    ap.add_argument("--all-precisions", action="store_true", help="bf16/fp16 rows even where the CPU emulates them")
    ap.add_argument("--cache", type=Path, default=None, help="folder keeping the trained weights between runs")
    args = ap.parse_args()
    global CACHE
    CACHE = args.cache
    if args.quick:
        args.samples, args.repeats = min(args.samples, 4), 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {' '.join(load)}")
    print(f"hardware: {hardware(device)}")
    for name in args.models:
        print("\n".join(bench_model(name, args, device)), flush=True)
    if not args.no_relu and device.type == "cpu":  # item 5's case: a ReLU network against Captum at equal accuracy
        from bench_relu_equal_accuracy import report

        print("\n".join(report(args.cache, repeats=args.repeats)), flush=True)
    if not args.no_sanity:
        print("\n".join(sanity_cost(args, device)), flush=True)


if __name__ == "__main__":
    main()
