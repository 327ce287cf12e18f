"""Every YAML composes and instantiates with real Hydra; overrides drop diagnostics and change options; typos fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import cerebro
from cerebro import CerebroConfigError, ModelAutopsy
from cerebro.config import DEFAULT_DIAGNOSTICS, parse_diagnostics
from cerebro.paths import config_dir

CONFIGS = config_dir()


def _compose(name: str, overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name=name, overrides=overrides or [])


@pytest.mark.parametrize("group_file", sorted(p.stem for p in (CONFIGS / "autopsy").glob("*.yaml")))
def test_every_autopsy_yaml_instantiates(group_file: str) -> None:
    cfg = _compose("demo", [f"autopsy={group_file}"])
    cb = instantiate(cfg.autopsy)
    assert isinstance(cb, ModelAutopsy)
    names = [d.name for d in cb.config.diagnostics]
    assert names[: len(DEFAULT_DIAGNOSTICS)] == list(DEFAULT_DIAGNOSTICS)  # every set builds on the core six
    listed = [k for k in cfg.autopsy.diagnostics if k not in DEFAULT_DIAGNOSTICS]
    # faithfulness reads every map of the run and the sanity checks' verdicts: it runs after them wherever listed
    assert names[len(DEFAULT_DIAGNOSTICS):] == [k for k in listed if k != "faithfulness"] + ["faithfulness"] * (
        "faithfulness" in listed)
    assert cb.checkpoint == "best" and cb.split == "val" and cb.run_on == ("fit",)


def test_eeg_config_resolves_options() -> None:
    cb = instantiate(_compose("demo").autopsy)
    ig = next(d for d in cb.config.diagnostics if d.name == "integrated_gradients")
    assert ig.options.n_steps == "auto" and ig.options.baseline == "zeros"
    assert cb.config.max_samples == 128  # demo.yaml overrides eeg_regression's 256


def test_overrides_drop_a_diagnostic_and_change_an_option() -> None:
    cfg = _compose("demo", ["~autopsy.diagnostics.gradients", "autopsy.diagnostics.integrated_gradients.n_steps=7",
                            "autopsy.diagnostics.activations=false"])
    cb = instantiate(cfg.autopsy)
    names = [d.name for d in cb.config.diagnostics]
    assert "gradients" not in names and "activations" not in names
    assert names == ["predictions", "failure_modes", "integrated_gradients", "layer_gradcam",
                     "spectral_integrated_gradients", "sanity_checks", "faithfulness"]
    assert next(d for d in cb.config.diagnostics if d.name == "integrated_gradients").options.n_steps == 7


def test_override_typo_fails_at_instantiation_naming_the_option() -> None:
    cfg = _compose("demo", ["+autopsy.diagnostics.integrated_gradients.n_step=7"])
    with pytest.raises(Exception, match="n_steps") as info:
        instantiate(cfg.autopsy)
    assert isinstance(info.value.__cause__ or info.value, CerebroConfigError) or "CerebroConfigError" in str(info.value)


def test_override_wrong_type_fails() -> None:
    cfg = _compose("demo", ["autopsy.diagnostics.integrated_gradients.n_steps=many"])
    with pytest.raises(Exception, match="n_steps"):
        instantiate(cfg.autopsy)


def test_every_config_key_is_commented() -> None:
    """Each key of every YAML has a comment on the line(s) just above it or at the end of its line."""
    for path in sorted(CONFIGS.rglob("*.yaml")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
                continue
            key = stripped.split(":", 1)[0]
            if key in ("defaults", "hydra", "run", "dir", "job", "chdir", "output_subdir", "diagnostics", "_target_") \
                    or key.startswith("override"):  # Hydra's own settings are explained in a block comment
                continue
            above = lines[i - 1].strip() if i else ""
            value = stripped.split(":", 1)[1].strip()
            is_block = value == "" and i + 1 < len(lines) and lines[i + 1].startswith(line[: len(line) - len(line.lstrip())] + "  ")
            documented = above.startswith("#") or "#" in value or is_block
            assert documented, f"{path.name}:{i + 1} key {key!r} has no comment"


def test_list_and_mapping_forms_are_equivalent() -> None:
    as_list = parse_diagnostics(["predictions", {"integrated_gradients": {"n_steps": 9}}])
    as_map = parse_diagnostics({"predictions": None, "integrated_gradients": {"n_steps": 9}, "gradients": False})
    assert [d.config() for d in as_list] == [d.config() for d in as_map]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (["predictons"], "Did you mean 'predictions'"),
        ([{"layer_gradcam": {"layr": "x"}}], "Did you mean 'layer'"),
        ([{"integrated_gradients": {"method": "riemann"}}], "riemann_right"),
        ([{"integrated_gradients": {"n_steps": 0}}], "positive int or .auto."),
        ([{"integrated_gradients": {"n_steps": "many"}}], "positive int or .auto."),
        ([{"integrated_gradients": {"n_steps": 2.5}}], "n_steps"),
        ([{"predictions": {"anything": 1}}], "takes no options"),
        (["predictions", "predictions"], "listed twice"),
        ([], "empty"),
        ([42], "one-key mapping"),
        ("integrated_gradients_typo", "Did you mean 'integrated_gradients'"),
    ],
)
def test_diagnostics_typos_raise_config_errors(spec, expected: str) -> None:
    with pytest.raises(CerebroConfigError, match=expected.replace("(", r"\(")):
        parse_diagnostics(spec)


def test_unknown_names_list_every_registered_diagnostic() -> None:
    with pytest.raises(CerebroConfigError) as info:
        ModelAutopsy(diagnostics=["nope_nope"])
    for name in cerebro.available_diagnostics():
        assert name in str(info.value)


def test_lightning_cli_configures_the_callback(tmp_path: Path) -> None:
    """The seed project configured its callback through LightningCLI: class_path + init_args."""
    from lightning.pytorch.cli import LightningCLI

    from cerebro.demo import EEGRegressor, SyntheticEEGDataModule

    config = {
        "trainer": {
            "max_epochs": 1, "logger": False, "enable_progress_bar": False, "default_root_dir": str(tmp_path),
            "callbacks": [{"class_path": "cerebro.ModelAutopsy", "init_args": {
                "checkpoint": "live", "max_samples": 8, "output_dir": str(tmp_path / "autopsy"),
                "diagnostics": ["predictions", {"integrated_gradients": {"n_steps": 4}}]}}],
        },
        "model": {"n_chans": 8, "n_times": 128},
        "data": {"n_train": 16, "n_val": 8, "n_test": 8, "n_chans": 8, "n_times": 128, "batch_size": 8},
    }
    cfg_file = tmp_path / "cli.yaml"
    cfg_file.write_text(yaml.safe_dump(config))
    cli = LightningCLI(EEGRegressor, SyntheticEEGDataModule, args=["fit", "--config", str(cfg_file)],
                       save_config_callback=None)
    cb = next(c for c in cli.trainer.callbacks if isinstance(c, ModelAutopsy))
    assert [d.name for d in cb.config.diagnostics] == ["predictions", "integrated_gradients"]
    summary = cb.last_summary
    assert summary is not None and summary["status"] == "ok", summary
    assert summary["n_samples"] == 8
    assert summary["config"][1] == {"integrated_gradients": {**summary["config"][1]["integrated_gradients"], "n_steps": 4}}


def test_lightning_cli_typo_fails_before_training(tmp_path: Path) -> None:
    from lightning.pytorch.cli import LightningCLI

    from cerebro.demo import EEGRegressor, SyntheticEEGDataModule

    config = {"trainer": {"max_epochs": 1, "logger": False, "default_root_dir": str(tmp_path), "callbacks": [
        {"class_path": "cerebro.ModelAutopsy", "init_args": {"diagnostics": ["integrated_gradiens"]}}]}}
    cfg_file = tmp_path / "cli.yaml"
    cfg_file.write_text(yaml.safe_dump(config))
    # jsonargparse wraps the callback's CerebroConfigError (a ValueError) and keeps its message.
    with pytest.raises(ValueError, match="Did you mean 'integrated_gradients'"):
        LightningCLI(EEGRegressor, SyntheticEEGDataModule, args=["fit", "--config", str(cfg_file)],
                     save_config_callback=None)
    assert not list(tmp_path.rglob("*.ckpt"))


def test_attribution_family_config_runs_end_to_end(tmp_path: Path) -> None:
    """Every method of the family YAML runs on an EEG model and produces a non-degenerate (N, ...) map."""
    from cerebro import run_autopsy
    from cerebro.demo import EEGRegressor, SyntheticEEGDataModule

    cfg = _compose("demo", ["autopsy=attribution_family", "autopsy.diagnostics.integrated_gradients.n_steps=4",
                            "autopsy.diagnostics.smoothgrad.nt_samples=2", "autopsy.diagnostics.gradient_shap.n_samples=2",
                            "autopsy.diagnostics.layer_integrated_gradients.n_steps=4",
                            "autopsy.diagnostics.layer_conductance.n_steps=4"])
    cb = instantiate(cfg.autopsy)
    dm = SyntheticEEGDataModule(n_train=8, n_val=6, n_test=4, n_chans=8, n_times=128, batch_size=3)
    dm.setup("validate")
    summary = run_autopsy(EEGRegressor(n_chans=8, n_times=128), dm.val_dataloader(), diagnostics=cb.config.diagnostics,
                          output_dir=tmp_path, max_samples=6)
    statuses = {n: (r["status"], r["reason"]) for n, r in summary["diagnostics"].items()}
    assert all(s == "ok" for s, _ in statuses.values()), statuses
    for name, rec in summary["diagnostics"].items():
        if any(a.endswith("attributions.npy") for a in rec["artifacts"]):
            maps = np.load(tmp_path / "arrays" / name / "attributions.npy")
            assert maps.shape[0] == 6 and np.isfinite(maps).all() and np.abs(maps).max() > 0, name
