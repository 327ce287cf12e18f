"""Benchmark: Integrated Gradients on a ReLU network against Captum at equal accuracy (issue 20, item 5).

A torchvision resnet18 (ReLU: IG's integrand jumps wherever a unit switches) trained on planted 3 x 32 x 32 images
(10 classes, each brightens a patch at its own place), 8 held-out samples, the predicted class. Every variant is
compared with a fine reference (the nested rule at ``--reference`` points); a variant is *accurate* when every
sample's completeness error ``|sum(attr) - (f(x) - f(b))| / |f(x) - f(b)|`` is within 1% and its map within 2%
(relative L2) of the reference. Captum's ``IntegratedGradients`` (Gauss-Legendre) runs at a ladder of step counts;
the smallest accurate one is what a user who knew the answer would pick. cerebro's default chooses per sample.

    python scripts/bench_relu_equal_accuracy.py             # about 5 minutes on 2 CPU cores (training included)
    python scripts/bench_relu_equal_accuracy.py --cache /tmp/benchcache   # keep the trained weights
    python scripts/bench_relu_equal_accuracy.py --random-init   # also random-init MLPs, mobilenet, vgg, resnet18 (+10-15 min)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from captum.attr import IntegratedGradients as CaptumIG
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_accuracy_speed import hardware, timed  # noqa: E402

from cerebro.engine.chunking import ChunkPolicy  # noqa: E402
from cerebro.engine.integrated import NESTED, integrated_gradients  # noqa: E402
from cerebro.engine.precision import PrecisionPlan  # noqa: E402
from cerebro.targets import ClassificationTarget, ScalarForward  # noqa: E402


def planted_classes(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` noisy images; class ``c`` brightens a 6 x 5 patch at a class-specific place."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g) * 0.5
    y = torch.randint(0, 10, (n,), generator=g)
    for c in range(10):
        r, col = (c // 5) * 12 + 4, (c % 5) * 5 + 2
        x[y == c, :, r:r + 6, col:col + 5] += 1.5
    return x, y


def trained_resnet18(cache: Path | None, n_train: int = 320, epochs: int = 4) -> tuple[nn.Module, Tensor, float]:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=10)
    x, y = planted_classes(n_train + 64, seed=5)
    path = None if cache is None else cache / f"resnet18_cls_{n_train}_{epochs}.pt"
    if path is not None and path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        for ep in range(epochs):
            perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(ep))
            for i in range(0, n_train, 32):
                idx = perm[i:i + 32]
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), path)
    model.eval()
    with torch.no_grad():
        acc = float((model(x[n_train:]).argmax(1) == y[n_train:]).float().mean())
    return model, x[n_train:], acc


def accuracy(attr: Tensor, delta: Tensor, ref: Tensor, gap: Tensor) -> tuple[float, float, bool]:
    """Worst completeness error, worst map error against the flattened reference maps ``ref``, and whether both are
    within this benchmark's criteria (1% and 2%)."""
    err = float(((attr.reshape(ref.shape[0], -1) - ref).norm(dim=1) / ref.norm(dim=1)).max())
    comp = float((delta.abs() / gap.abs()).max())
    return comp, err, comp <= 0.01 and err <= 0.02


def report(cache: Path | None, samples: int = 8, reference: int = 2047, steps: tuple[int, ...] = (32, 48, 64, 96, 128),
           repeats: int = 3) -> list[str]:
    """The table of this benchmark (markdown lines); ``scripts/bench_accuracy_speed.py`` prints it too."""
    device = torch.device("cpu")
    model, pool, acc = trained_resnet18(cache)
    x = pool[:samples]
    n = x.shape[0]
    base = torch.zeros_like(x)
    with torch.no_grad():
        target = model(x).argmax(1)
    fwd = ScalarForward(model, ClassificationTarget())
    policy = ChunkPolicy(64, None, device, 64)
    ref = integrated_gradients(fwd, x, base, target, reference, NESTED, policy)
    r = ref.attributions.reshape(n, -1)

    def ours() -> tuple[Tensor, Tensor, int, list[int]]:
        res = integrated_gradients(fwd, x, base, target, None, NESTED, policy, tolerance=0.01, max_steps=1024,
                                   plan=PrecisionPlan("auto", device))
        return res.attributions, res.delta, res.evaluations, res.steps.tolist()

    def captum(n_steps: int) -> tuple[Tensor, Tensor, int, None]:
        attr, delta = CaptumIG(model).attribute(x, target=target, n_steps=n_steps, internal_batch_size=64,
                                                return_convergence_delta=True)
        return attr.detach(), delta.detach(), n * n_steps, None

    rows = [("cerebro default (nested auto)", ours)] + [(f"captum GL {s} steps", lambda s=s: captum(s))
                                                       for s in steps]
    seconds: dict[str, list[float]] = {name: [] for name, _ in rows}
    results = {}
    for rep in range(repeats):  # interleaved, in reverse order every other repeat
        for name, fn in (rows if rep % 2 == 0 else rows[::-1]):
            t, out = timed(fn, device)
            seconds[name].append(t)
            results[name] = out
    lines = [f"### ReLU at equal accuracy: torchvision resnet18 3x32x32, trained on planted classes (held-out accuracy "
             f"{acc:.2f}), {n} samples, predicted class; reference: nested {reference} points", "",
             "| variant | seconds | evaluations | worst completeness | worst map error | accurate |",
             "|---|---|---|---|---|---|"]
    smallest = None
    for name, _ in rows:
        attr, delta, evals, _ = results[name]
        comp, err, ok = accuracy(attr, delta, r, ref.gap)
        if ok and name.startswith("captum") and smallest is None:
            smallest = name
        lines.append(f"| {name} | {statistics.median(seconds[name]):.2f} | {evals} | {comp:.2%} | {err:.2%} | "
                     f"{'yes' if ok else 'no'} |")
    default = rows[0][0]
    lines += ["", f"default's points per sample: {results[default][3]}"]
    if smallest is None:
        return [*lines, "no Captum step count of the ladder is accurate on every sample", ""]
    ratio_e = results[default][2] / results[smallest][2]
    ratio_t = statistics.median(seconds[default]) / statistics.median(seconds[smallest])
    lines.append(f"smallest accurate Captum count: {smallest}; the default costs {ratio_e:.2f}x its evaluations "
                 f"and {ratio_t:.2f}x its seconds (target <= 1x)")
    oracle = per_sample_smallest(model, x, target, r, ref.gap)
    if None not in oracle:
        total = sum(oracle)  # type: ignore[arg-type]
        lines.append(f"an oracle that knew each sample's smallest accurate Gauss-Legendre count (steps of 8): {oracle} "
                     f"= {total} evaluations, {results[smallest][2] / total:.2f}x fewer than {smallest}: the most "
                     f"any per-sample choice of uniform steps saves here")
    return [*lines, ""]


def per_sample_smallest(model: nn.Module, x: Tensor, target: Tensor | None, ref: Tensor, gap: Tensor,
                        step: int = 8, most: int = 256) -> list[int | None]:
    """Per sample, the smallest Gauss-Legendre step count (multiples of ``step``) at which Captum's map of that sample
    is accurate (the criteria of :func:`accuracy`); ``None`` where none up to ``most`` is."""
    found: list[int | None] = [None] * x.shape[0]
    for steps in range(step, most + 1, step):
        attr, delta = CaptumIG(model).attribute(x, target=target, n_steps=steps, internal_batch_size=256,
                                                return_convergence_delta=True)
        for i in range(x.shape[0]):
            if found[i] is None and accuracy(attr[i:i + 1].detach(), delta[i:i + 1].detach(), ref[i:i + 1],
                                             gap[i:i + 1])[2]:
                found[i] = steps
        if None not in found:
            break
    return found


def smallest_accurate(model: nn.Module, x: Tensor, target: Tensor | None, ref: Tensor, gap: Tensor,
                      step: int = 8, most: int = 512) -> int | None:
    """The smallest Gauss-Legendre step count (1, 2, 4, then multiples of ``step``) at which Captum is accurate on
    every sample."""
    for steps in [1, 2, 4, *range(step, most + 1, step)]:
        attr, delta = CaptumIG(model).attribute(x, target=target, n_steps=steps, internal_batch_size=256,
                                                return_convergence_delta=True)
        if accuracy(attr.detach(), delta.detach(), ref, gap)[2]:
            return steps
    return None


def random_init_report(reference: int = 4095) -> list[str]:
    """Random-init ReLU networks: the default's evaluations against Captum's smallest accurate step count (1, 2, 4,
    then steps of 8), same criteria as :func:`report`. vgg11_bn and resnet18 at their initialisation have no biases
    before the classifier, so from the zero baseline their gradient is constant along the path (1 point is exact)."""
    from torchvision.models import mobilenet_v3_small, resnet18, vgg11_bn

    from cerebro.targets import RegressionTarget

    cases = []
    for seed in (0, 1, 2):
        for scale in (2.0, 4.0):
            torch.manual_seed(seed)
            mlp = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))
            x = torch.randn(16, 32, generator=torch.Generator().manual_seed(11)) * scale
            cases.append((f"ReLU MLP 32-256-256-1, seed {seed}, inputs x{scale:g} (16)", mlp, x, False))
    for name, build in (("mobilenet_v3_small", mobilenet_v3_small), ("vgg11_bn", vgg11_bn), ("resnet18", resnet18)):
        torch.manual_seed(0)
        cases.append((f"torchvision {name}, random init, 3 x 32 x 32 (8)", build(num_classes=10),
                      torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(3)), True))
    lines = [f"### ReLU at equal accuracy, random init (reference: nested {reference} points)", "",
             "| model (samples) | default: evaluations, worst map error | Captum's smallest accurate | default / Captum |",
             "|---|---|---|---|"]
    policy = ChunkPolicy(256, None, torch.device("cpu"), 256)
    for name, model, x, classes in cases:
        model.eval()
        base = torch.zeros_like(x)
        with torch.no_grad():
            target = model(x).argmax(1) if classes else None
        fwd = ScalarForward(model, ClassificationTarget() if classes else RegressionTarget())
        ref = integrated_gradients(fwd, x, base, target, reference, NESTED, policy)
        r = ref.attributions.reshape(x.shape[0], -1)
        res = integrated_gradients(fwd, x, base, target, None, NESTED, policy, max_steps=1024)
        err = accuracy(res.attributions, res.delta, r, ref.gap)[1]
        steps = smallest_accurate(model, x, target, r, ref.gap)
        captum = "none up to 512 steps" if steps is None else f"{steps} steps = {steps * x.shape[0]}"
        ratio = "" if steps is None else f"{res.evaluations / (steps * x.shape[0]):.2f}x"
        lines.append(f"| {name} | {res.evaluations}, {err:.2%} | {captum} | {ratio} |")
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--reference", type=int, default=2047, help="points of the nested reference (2**k - 1)")
    ap.add_argument("--steps", type=int, nargs="+", default=[32, 48, 64, 96, 128], help="Captum's step ladder")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    ap.add_argument("--cache", type=Path, default=None, help="folder keeping the trained weights between runs")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--random-init", action="store_true", help="also the random-init MLP, mobilenet, vgg and resnet18 table")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; hardware: {hardware(torch.device('cpu'))}")
    print("\n".join(report(args.cache, args.samples, args.reference, tuple(args.steps), args.repeats)))
    if args.random_init:
        print("\n".join(random_init_report()))


if __name__ == "__main__":
    main()
