"""cerebro used from a project of one's own, outside this repository, the way a new user meets it.

The user project (a temporary folder) holds its own LightningModule/DataModule (``my_pkg.py``) and its own Hydra
``conf/`` with the README's ``autopsy/my_run.yaml`` (``defaults: [default, _self_]``). It is run twice:

* against a non-editable install: the files a wheel holds (``[tool.hatch.build.targets.wheel]`` of pyproject.toml:
  the ``cerebro`` and ``hydra_plugins`` packages, ``configs/`` as ``cerebro/_configs``) copied into a site folder,
  with this repository removed from ``sys.path``, so nothing is found by being next to the sources;
* against the editable install of the test environment (``pip install -e``), where ``cerebro/_configs`` does not
  exist and the plugin finds the checkout's ``configs/``.

Hydra finds ``autopsy/default`` and the other sets through cerebro's SearchPathPlugin
(``hydra_plugins/cerebro_autopsy``), the callback prints where the report went, the files honour the umask, and
``cerebro-autopsy`` imports ``my_pkg`` from the folder it runs in.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

MY_PKG = '''
import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Net(pl.LightningModule):
    """(B, 4, 32) -> (B, 1); block_5.0 is a Conv1d, as the README's my_run.yaml names it."""

    def __init__(self, n_chans: int = 4, n_times: int = 32) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.block_5 = nn.Sequential(nn.Conv1d(n_chans, 6, 5, padding=2), nn.ELU())
        self.head = nn.Linear(6 * n_times, 1)

    def forward(self, x):
        return self.head(self.block_5(x).flatten(1))

    def training_step(self, batch, _i):
        return nn.functional.mse_loss(self(batch[0]), batch[1])

    def validation_step(self, batch, _i):
        self.log("val_loss", nn.functional.mse_loss(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class Data(pl.LightningDataModule):
    def __init__(self, n: int = 24, batch_size: int = 8) -> None:
        super().__init__()
        self.n, self.batch_size = n, batch_size

    def _loader(self, seed: int) -> DataLoader:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(self.n, 4, 32, generator=g)
        return DataLoader(TensorDataset(x, x[:, 1, 10:20].mean(1, keepdim=True)), batch_size=self.batch_size)

    def train_dataloader(self):
        return self._loader(0)

    def val_dataloader(self):
        return self._loader(1)
'''

# The README's example, verbatim (section "Toggle diagnostics in YAML").
MY_RUN = '''
defaults: [default, _self_]
max_samples: 128
diagnostics:
  gradients: false            # switched off
  integrated_gradients:
    n_steps: 32
    baseline: mean
  layer_gradcam:
    layer: block_5.0          # dotted name from model.named_modules(), or auto
'''

# The README's list form on top of one of cerebro's presets, verbatim: no extra line in the defaults list.
ONLY_IG = '''
defaults: [eeg_regression, _self_]   # or default, attribution_family, transformer
max_samples: 64
diagnostics: [predictions, {integrated_gradients: {n_steps: 32}}]
'''

# The two forms on `defaults: [default, _self_]` and on `[eeg_regression, _self_]` (README, verbatim).
MY_LIST = '''
defaults: [default, _self_]
diagnostics: [predictions, {integrated_gradients: {n_steps: 32}}]
'''
MY_MAP = '''
defaults: [default, _self_]
diagnostics: {integrated_gradients: {n_steps: 32}}
'''
#: conf/autopsy/<name>.yaml of the user project -> its text (the eeg_ ones: the same forms on eeg_regression).
USER_SETS = {"my_run": MY_RUN, "only_ig": ONLY_IG, "my_list": MY_LIST, "my_map": MY_MAP,
             "eeg_list": MY_LIST.replace("[default, _self_]", "[eeg_regression, _self_]"),
             "eeg_map": MY_MAP.replace("[default, _self_]", "[eeg_regression, _self_]")}

# The user's script: compose their conf/ with Hydra, fit with the callback, report what happened as JSON.
DRIVER = '''
import json, os, sys
from pathlib import Path
hide = os.environ.get("HIDE_REPO")
if hide:  # a non-editable install: the checkout must not be importable (the editable .pth puts it on sys.path)
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != Path(hide)]
import lightning.pytorch as pl
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf
import cerebro
from my_pkg import Data, Net

result = {"cerebro": cerebro.__file__}
with initialize_config_dir(config_dir=str(Path("conf").resolve()), version_base="1.3"):
    cfg = compose("config")
    result["sets"] = {name: list(compose("config", overrides=[f"autopsy={name}"]).autopsy.preset_diagnostics)
                      for name in ("default", "eeg_regression", "attribution_family", "transformer")}
    for name in ("my_run", "only_ig", "my_list", "my_map", "eeg_list", "eeg_map"):
        # each set as composed (the README's YAML) and as the callback runs it: names and options in run order
        composed = compose("config", overrides=[f"autopsy={name}"]).autopsy
        result[name] = {"diagnostics": OmegaConf.to_container(composed.diagnostics), "sfreq": composed.eeg.sfreq,
                        "max_samples": composed.max_samples, "checkpoint": composed.checkpoint,
                        "run": [d.config() for d in instantiate(composed, output_dir="unused").config.diagnostics]}
    # the README's command-line edits in a Hydra app of one's own (++: autopsy.diagnostics is null until set)
    edited = compose("config", overrides=["++autopsy.diagnostics.gradients=false",
                                          "++autopsy.diagnostics.integrated_gradients.n_steps=16",
                                          "autopsy/preset_diagnostics=attribution_family"]).autopsy
    result["edited"] = [d.config() for d in instantiate(edited, output_dir="unused").config.diagnostics]
    result["search_path"] = [(e.provider, e.path) for e in
                             GlobalHydra.instance().config_loader().get_sources()]
    autopsy = instantiate(cfg.autopsy, output_dir="autopsy_out")
os.umask(0o022)
pl.seed_everything(0)
trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     callbacks=[ModelCheckpoint(monitor="val_loss"), autopsy])
trainer.fit(Net(), datamodule=Data())
result["status"] = autopsy.last_summary["status"]
result["reason"] = autopsy.last_summary.get("reason")
result["checkpoint_file"] = trainer.checkpoint_callback.best_model_path
print("RESULT " + json.dumps(result))
'''


def _user_project(root: Path) -> Path:
    project = root / "my_project"
    (project / "conf" / "autopsy").mkdir(parents=True)
    (project / "my_pkg.py").write_text(MY_PKG)
    (project / "run.py").write_text(DRIVER)
    (project / "conf" / "config.yaml").write_text("defaults:\n  - autopsy: my_run\n  - _self_\n")
    for name, text in USER_SETS.items():
        (project / "conf" / "autopsy" / f"{name}.yaml").write_text(text)
    return project


def _install_like_a_wheel(site: Path) -> None:
    """What the wheel holds, per pyproject.toml's hatch wheel target (packages and force-include)."""
    wheel = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert "hydra_plugins" in wheel["packages"], "the Hydra plugin must ship in the wheel"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in wheel["packages"]:
        shutil.copytree(REPO / package, site / package, ignore=ignore)
    for source, target in wheel["force-include"].items():
        shutil.copytree(REPO / source, site / target, ignore=ignore)


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)


def _result(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _preset(name: str) -> dict:
    """A preset's diagnostics read from cerebro's YAML files alone: preset_diagnostics/default.yaml, then the
    preset's own file merged onto it key by key (what Hydra composes)."""
    def merged(base, change):
        if isinstance(base, dict) and isinstance(change, dict):
            return {**base, **{k: merged(base[k], v) if k in base else v for k, v in change.items()}}
        return change

    folder = REPO / "configs" / "autopsy" / "preset_diagnostics"
    out = yaml.safe_load((folder / "default.yaml").read_text())
    if name != "default":
        own = yaml.safe_load((folder / f"{name}.yaml").read_text())
        own.pop("defaults")
        out = merged(out, own)
    return out


def _runs(spec) -> list:
    """What the callback runs for a diagnostics spec, as the driver reports it (JSON: tuples become lists)."""
    from cerebro.config import parse_diagnostics

    return json.loads(json.dumps([d.config() for d in parse_diagnostics(spec)]))


def _check_composition(result: dict) -> None:
    default, eeg = _preset("default"), _preset("eeg_regression")
    ig = {**default["integrated_gradients"], "n_steps": 32}
    # the README's my_run.yaml (mapping form) on top of cerebro's default: gradients off, the rest kept, options
    # merged onto the preset's
    assert result["my_run"]["run"] == _runs({**default, "gradients": False,
                                             "integrated_gradients": {**ig, "baseline": "mean"},
                                             "layer_gradcam": {**default["layer_gradcam"], "layer": "block_5.0"}})
    assert result["my_run"]["max_samples"] == 128 and result["my_run"]["checkpoint"] == "best"
    assert "sanity_checks" in result["sets"]["attribution_family"]
    assert "attention_rollout" in result["sets"]["transformer"]
    assert result["sets"]["default"][:2] == ["predictions", "gradients"]
    # the two forms with no extra line, on default and on eeg_regression: the list runs exactly what it
    # lists (with the preset's options overlaid by its own), the mapping merges onto the preset's; eeg_regression's
    # other keys (its sfreq) are kept
    listed = ["predictions", {"integrated_gradients": {"n_steps": 32}}]
    for name, preset, sfreq in (("my", default, None), ("eeg", eeg, 100)):
        assert result[f"{name}_list"]["diagnostics"] == listed
        assert result[f"{name}_list"]["run"] == _runs([{"predictions": preset["predictions"]}, {
            "integrated_gradients": {**preset["integrated_gradients"], "n_steps": 32}}])
        assert result[f"{name}_map"]["diagnostics"] == {"integrated_gradients": {"n_steps": 32}}
        assert result[f"{name}_map"]["run"] == _runs(
            {**preset, "integrated_gradients": {**preset["integrated_gradients"], "n_steps": 32}})
        assert result[f"{name}_list"]["sfreq"] == result[f"{name}_map"]["sfreq"] == sfreq
    assert len(result["eeg_map"]["run"]) == len(eeg) == 8 and result["eeg_map"]["run"] != result["my_map"]["run"]
    assert result["only_ig"]["diagnostics"] == listed
    assert result["only_ig"]["max_samples"] == 64 and result["only_ig"]["sfreq"] == 100
    assert result["only_ig"]["run"] == result["eeg_list"]["run"]
    # the README's command-line edits on top of my_run.yaml, with the attribution family as the preset: the
    # command line wins over the YAML (n_steps 16), which wins over the preset (baseline mean)
    family = _preset("attribution_family")
    assert result["edited"] == _runs({**family, "gradients": False,
                                      "integrated_gradients": {**ig, "baseline": "mean", "n_steps": 16},
                                      "layer_gradcam": {**family["layer_gradcam"], "layer": "block_5.0"}})
    providers = [p for p, _ in result["search_path"]]
    assert "cerebro" in providers and providers.index("main") < providers.index("cerebro")  # the user's files win


def _check_report(project: Path, stdout: str) -> None:
    out = project / "autopsy_out"
    report = out / "report.html"
    lines = [ln for ln in stdout.splitlines() if ln.startswith("cerebro: autopsy")]
    assert lines == [f"cerebro: autopsy ok; report: {Path('autopsy_out') / 'report.html'}"], stdout[-2000:]
    files = [report, out / "summary.json", *out.glob("figures/*.png"), *out.glob("arrays/*/*.npy")]
    assert len(files) > 4
    modes = {str(f.relative_to(out)): oct(stat.S_IMODE(f.stat().st_mode)) for f in files}
    assert set(modes.values()) == {"0o644"}, modes  # umask 022, like any new file


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    _install_like_a_wheel(site)
    return site


def test_non_editable_install_from_a_project_of_ones_own(wheel_site: Path, tmp_path: Path) -> None:
    project = _user_project(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(wheel_site), "HIDE_REPO": str(REPO), "MPLBACKEND": "Agg"}
    done = _run([sys.executable, "run.py"], project, env)
    result = _result(done)
    assert Path(result["cerebro"]).resolve().is_relative_to(wheel_site.resolve()), result["cerebro"]
    assert (wheel_site / "cerebro" / "_configs" / "autopsy" / "default.yaml").is_file()
    _check_composition(result)
    # Hydra's sources report their path without the file:// scheme (and JSON turns the pairs into lists)
    assert [p for p in result["search_path"] if p[0] == "cerebro"] == [
        ["cerebro", (wheel_site / "cerebro" / "_configs").resolve().as_posix()]]
    assert result["status"] == "ok", result["reason"]
    _check_report(project, done.stdout)

    # cerebro-autopsy as the wheel's console script would run it: sys.path[0] is its bin folder, not the project;
    # my_pkg.Net and my_pkg.Data import from the folder it runs in.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cerebro-autopsy").write_text(textwrap.dedent(f"""\
        import sys
        from pathlib import Path
        sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != Path({str(REPO)!r})]
        from cerebro.cli import main
        sys.exit(main())
        """))
    ckpt = result["checkpoint_file"]
    cli = _run([sys.executable, str(bin_dir / "cerebro-autopsy"), f"checkpoint='{ckpt}'", "model=my_pkg.Net",
                "data={_target_: my_pkg.Data, n: 16}", "output_dir=cli_out", "device=cpu", "autopsy=default",
                "autopsy.max_samples=8", "autopsy.diagnostics.integrated_gradients.n_steps=4"], project, env)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert cli.stdout.strip().splitlines()[-1] == f"cerebro-autopsy: ok; report: {Path('cli_out') / 'report.html'}"
    assert json.loads((project / "cli_out" / "summary.json").read_text())["status"] == "ok"


def test_editable_install_from_a_project_of_ones_own(tmp_path: Path) -> None:
    """The test environment's own install is editable: there is no cerebro/_configs, the plugin finds configs/."""
    if (REPO / "cerebro" / "_configs").exists():
        pytest.skip("cerebro/_configs exists in the checkout: not the editable layout this test is about")
    project = _user_project(tmp_path)
    done = _run([sys.executable, "run.py"], project, {**os.environ, "MPLBACKEND": "Agg"})
    result = _result(done)
    assert Path(result["cerebro"]).resolve().is_relative_to(REPO), result["cerebro"]
    _check_composition(result)
    assert ["cerebro", (REPO / "configs").resolve().as_posix()] in result["search_path"]
    assert result["status"] == "ok", result["reason"]
    _check_report(project, done.stdout)


def test_console_script_explains_itself_from_any_folder(tmp_path: Path) -> None:
    """The installed ``cerebro-autopsy``: its own usage, and one line naming the fix (exit 2) for what is missing
    or malformed, never a traceback."""
    exe = Path(sys.executable).with_name("cerebro-autopsy")
    if not exe.exists():
        pytest.skip(f"no console script next to {sys.executable} (cerebro is not pip-installed here)")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    helped = _run([str(exe), "--help"], tmp_path, env)
    assert helped.returncode == 0
    for fragment in ("usage: cerebro-autopsy checkpoint=FILE", "cerebro-autopsy compare A B [--out DIR]",
                     "model=CLASS", "data=CONFIG", "examples:", "~autopsy.diagnostics.X", "current folder"):
        assert fragment in helped.stdout, fragment
    cases = {
        (): "missing checkpoint=, model=, data=",
        ("model=my_pkg.Net", "data={_target_: my_pkg.Data}"): "missing checkpoint=: add checkpoint=path/to/best.ckpt",
        ("checkpoint",): "argument 'checkpoint' has no value: write checkpoint=",
        ("checkpoint=x.ckpt", "model=a.B", "data={_target_: a.C}", "autopsy.max_sample=3"):
            "Could not override 'autopsy.max_sample'",
        ("checkpoint=x.ckpt", "model=a.B", "data={_target_: a.C}", "autopsy=nope"): "Could not find 'autopsy/nope'",
        ("checkpoint=x.ckpt", "model=a.B", "data={_target_: a.C}"): "checkpoint file 'x.ckpt' does not exist",
        ("--verbose",): "unknown option '--verbose'",
    }
    for args, expected in cases.items():
        done = _run([str(exe), *args], tmp_path, env)
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, (args, done.stderr[-2000:])
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cerebro-autopsy: error: "), (args, done.stderr)
        assert expected in lines[0], (args, lines[0])
