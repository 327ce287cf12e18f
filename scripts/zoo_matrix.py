"""Run the model-zoo compatibility matrix and write ``docs/compatibility.md``.

The models, inputs, targets and diagnostic lists are the ones of ``tests/zoo/`` (shared through
``tests/zoo/models.py``): torchvision, timm and Hugging Face transformers models, and every braindecode model that
builds as a ``(B, 1)`` regressor on 129 x 200 windows at 100 Hz. Random weights, tiny sizes, nothing downloaded.
Each cell is ``ok``, ``flag`` (ok, with findings), ``failed``/``skipped`` (with the reason), or ``WRONG`` when a map
breaks the contract the tests check (status ok with a constant or non-finite map and no flag, wrong shape, or the
user's model changed).

Usage::

    python scripts/zoo_matrix.py                      # writes docs/compatibility.md
    python scripts/zoo_matrix.py --all                # also the braindecode models over ~2.5M parameters
    python scripts/zoo_matrix.py --only vit           # rerun the models matching "vit", keep the other rows

Next to the page, ``docs/compatibility.json`` keeps every row; ``--only`` reruns some models and keeps the others'
rows from it (the page says when each row ran).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.zoo.models import (  # noqa: E402
    BRAINDECODE_DOWNLOADS, BRAINDECODE_HEAVY, BRAINDECODE_REQUIRED, ZooCase, braindecode_case, braindecode_names, build_braindecode,
    hook_count, image_cases, matrix_row, use_torchaudio_standin, verdict, versions, weights_hash)

N = 4  # samples per model, as in the tests


def run(case: ZooCase, out: Path, model: Any = None) -> dict[str, Any]:
    """One case: ``{"seconds", "diagnostics": {name: (cell, note)}, "error"}``."""
    import cerebro
    from tests.autopsy_helpers import loader

    t0 = time.perf_counter()
    model = case.build() if model is None else model
    tensors = case.make_inputs(N)
    before = (weights_hash(model), hook_count(model), model.training)
    summary = cerebro.run_autopsy(model, loader(*tensors), diagnostics=case.diagnostics, target=case.target,
                                  output_dir=out, max_samples=N, progress=False, **case.kwargs)
    changed = [w for w, b, a in zip(("weights", "hooks", "mode"), before,
                                    (weights_hash(model), hook_count(model), model.training)) if a != b]
    return matrix_row(case, summary, out, N, changed, time.perf_counter() - t0)


def safe_run(case: ZooCase, tmp: Path, model: Any = None) -> dict[str, Any]:
    try:
        return run(case, tmp / case.name.replace("/", "_").replace(" ", "_"), model)
    except Exception as err:  # noqa: BLE001 - recorded in the table
        traceback.print_exc()
        return {"seconds": 0.0, "diagnostics": {}, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}


def table(rows: dict[str, dict[str, Any]], notes: list[str]) -> list[str]:
    """Markdown table model x diagnostic; long texts go to numbered notes."""
    diags: list[str] = []
    for r in rows.values():
        diags += [d for d in r["diagnostics"] if d not in diags]
    lines = ["| model | " + " | ".join(diags) + " | s |", "|---" * (len(diags) + 2) + "|"]
    for model, r in rows.items():
        if r["error"]:
            notes.append(r["error"])
            lines.append(f"| {model} | " + " | ".join([f"error [{len(notes)}]"] * len(diags)) + " | |")
            continue
        cells = []
        for d in diags:
            kind, note = r["diagnostics"].get(d, ("-", ""))
            if note:
                notes.append(f"{model}, {d}: {note}")
                cells.append(f"{kind} [{len(notes)}]")
            else:
                cells.append(kind)
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {r['seconds']:.1f} |")
    return lines


def write_page(args: argparse.Namespace, rows: dict[str, dict[str, Any]], eeg_rows: dict[str, dict[str, Any]],
               not_built: dict[str, str]) -> None:
    """Write ``docs/compatibility.json`` (every row) and the page (called after every model, so a long run that is
    stopped keeps what it did)."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for r in (*rows.values(), *eeg_rows.values()):
        r.setdefault("ran", now)
    store = args.out.with_suffix(".json")
    if args.only and store.is_file():  # keep the rows of the models not rerun
        old = json.loads(store.read_text())
        rows = {**old["rows"], **rows}
        eeg_rows = {**old["eeg_rows"], **eeg_rows}
        not_built = {**{k: v for k, v in old["not_built"].items() if k not in eeg_rows}, **not_built}
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text(json.dumps({"rows": rows, "eeg_rows": eeg_rows, "not_built": not_built,
                                 "versions": versions()}, indent=1))
    pending = [n for n in braindecode_names() if n not in eeg_rows and n not in not_built]
    notes: list[str] = []
    runs = sorted({r.get("ran", "?") for r in (*rows.values(), *eeg_rows.values())}) or ["-"]
    lines = [
        "# Compatibility matrix", "",
        f"Generated by `scripts/zoo_matrix.py` (rows run {runs[0]}{f' to {runs[-1]}' if len(runs) > 1 else ''}, "
        "CPU). Models are built "
        "by their own libraries with random weights at tiny sizes (see `tests/zoo/models.py`), "
        f"{N} samples each; the same cases run in `tests/zoo/`.", "",
        "Cells: **ok**; **flag** = ok, with findings (the note says which); **failed**/**skipped** = with the "
        "reason; **WRONG** = a map breaks the output contract (status ok with a constant or non-finite map and no "
        "flag, a wrong shape, or the user's model changed). `s` = seconds for the model on this machine (shared "
        "with other jobs: compare rows, not machines).", "",
        "Library versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()), "",
        "## torchvision, timm, transformers", "", *table(rows, notes), "",
        "## braindecode: (B, 1) regressors on 129 x 200 windows at 100 Hz", "",
        *table(eeg_rows, notes), "",
        f"### braindecode models not in the table ({len(not_built)})", "",
        "`Model(n_chans=129, n_outputs=1, n_times=200, sfreq=100)` did not build, or was not run:", "",
        *[f"- `{n}`: {why}" for n, why in sorted(not_built.items())], "",
        *([f"Not run yet (the matrix run was stopped before them): {', '.join(f'`{n}`' for n in pending)}", ""]
          if pending else []),
        "## Notes", "", *[f"{i}. {n}" for i, n in enumerate(notes, 1)], "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))


def picked(only: str, name: str) -> bool:
    return not only or any(p.strip().lower() in name.lower() for p in only.split(",") if p.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "compatibility.md")
    parser.add_argument("--records", type=Path, default=None,
                        help="also take the rows the tests wrote (CEREBRO_ZOO_RECORD=<file.jsonl> pytest tests/zoo)")
    parser.add_argument("--all", action="store_true", help="also the braindecode models over ~2.5M parameters")
    parser.add_argument("--only", default="", help="run only the models whose name contains one of these "
                        "comma-separated strings (e.g. torchvision,timm)")
    args = parser.parse_args()
    use_torchaudio_standin()
    from cerebro.diagnostics.attribution import AttributionDiagnostic

    AttributionDiagnostic.sample_figures = 1  # as in tests/zoo/conftest.py: the matrix checks arrays, not pictures
    tmp = Path(tempfile.mkdtemp(prefix="cerebro-zoo-"))
    rows: dict[str, dict[str, Any]] = {}
    eeg_rows: dict[str, dict[str, Any]] = {}
    not_built: dict[str, str] = {}
    if args.records is not None:
        for line in args.records.read_text().splitlines():
            rec = json.loads(line)
            (eeg_rows if rec["family"] == "braindecode" else rows)[rec["name"].split("/", 1)[1] if rec["family"] ==
                                                                   "braindecode" else rec["name"]] = rec["row"]
        args.only = args.only or "-none-"  # keep the stored rows of the models not in the records
    for case in image_cases():
        if picked(args.only, case.name):
            print(case.name, flush=True)
            rows[case.name] = safe_run(case, tmp)
            write_page(args, rows, eeg_rows, not_built)
    names = braindecode_names()
    for name in [*[n for n in BRAINDECODE_REQUIRED if n in names], *[n for n in names if n not in BRAINDECODE_REQUIRED]]:
        if not picked(args.only, f"braindecode/{name}"):
            continue
        if name in BRAINDECODE_HEAVY and not args.all:
            not_built[name] = f"not run: {BRAINDECODE_HEAVY[name]} (run with --all)"
            continue
        print(f"braindecode/{name}", flush=True)
        try:
            model = build_braindecode(name)
        except Exception as err:  # noqa: BLE001 - the reason it is not in the matrix
            not_built[name] = (BRAINDECODE_DOWNLOADS.get(name) or
                               f"{type(err).__name__}: {str(err).splitlines()[0][:240]}")
            continue
        eeg_rows[name] = safe_run(braindecode_case(name, model), tmp, model)
        write_page(args, rows, eeg_rows, not_built)
    write_page(args, rows, eeg_rows, not_built)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
