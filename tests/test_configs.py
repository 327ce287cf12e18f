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
from cerebro.config import DEFAULT_DIAGNOSTICS, diagnostics_overrides, parse_diagnostics
from cerebro.paths import config_dir

CONFIGS = config_dir()


def _compose(name: str, overrides: list[str] | None = None):
    """Compose as ``cerebro-autopsy`` and ``cerebro-demo`` do: their command-line shorthands spelled out."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name=name, overrides=diagnostics_overrides(overrides or []))


@pytest.mark.parametrize("group_file", sorted(p.stem for p in (CONFIGS / "autopsy").glob("*.yaml")))
def test_every_autopsy_yaml_instantiates(group_file: str) -> None:
    cfg = _compose("demo", [f"autopsy={group_file}"])
    cb = instantiate(cfg.autopsy)
    assert isinstance(cb, ModelAutopsy)
    names = [d.name for d in cb.config.diagnostics]
    assert names[: len(DEFAULT_DIAGNOSTICS)] == list(DEFAULT_DIAGNOSTICS)  # every set builds on the core six
    assert cfg.autopsy.diagnostics is None  # the preset's set as it is: autopsy.preset_diagnostics
    listed = [k for k in cfg.autopsy.preset_diagnostics if k not in DEFAULT_DIAGNOSTICS]
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


# -- the preset's diagnostics (autopsy.preset_diagnostics) and the user's (autopsy.diagnostics) ----------------------
PRESETS = ("default", "eeg_regression", "attribution_family", "transformer")


def _merged(base, change):
    """``change`` merged onto ``base`` key by key, as Hydra merges YAML mappings (anything else replaces)."""
    if isinstance(base, dict) and isinstance(change, dict):
        return {**base, **{k: _merged(base[k], v) if k in base else v for k, v in change.items()}}
    return change


def _preset(name: str) -> dict:
    """A preset's diagnostics read from the YAML files alone: preset_diagnostics/default.yaml, then its own file."""
    folder = CONFIGS / "autopsy" / "preset_diagnostics"
    out = yaml.safe_load((folder / "default.yaml").read_text())
    if name != "default":
        own = yaml.safe_load((folder / f"{name}.yaml").read_text())
        assert own.pop("defaults") == ["default", "_self_"]
        out = _merged(out, own)
    return out


def _runs(spec) -> list:
    return [d.config() for d in parse_diagnostics(spec)]


def _ran(cfg) -> list:
    return [d.config() for d in instantiate(cfg.autopsy, output_dir="unused").config.diagnostics]


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_demo_and_script_run_their_yaml_option_by_option(preset: str) -> None:
    """What each preset runs is exactly what its YAML files say, diagnostic by diagnostic, option by option; the demo
    adds sanity_checks (8 samples), the script runs the preset as it is."""
    assert _ran(_compose(f"autopsy/{preset}")) == _runs(_preset(preset))
    demo = _merged(_preset(preset), {"sanity_checks": {"samples": 8}})
    assert _ran(_compose("demo", [f"autopsy={preset}"])) == _runs(demo)
    script = ["checkpoint=x.ckpt", "model=a.B", "data={_target_: a.C}", f"autopsy={preset}"]
    assert _ran(_compose("autopsy_script", script)) == _runs(_preset(preset))


def _user_app(tmp_path: Path, preset: str, diagnostics: str) -> Path:
    """A Hydra app of one's own: conf/config.yaml selecting conf/autopsy/mine.yaml on top of one of cerebro's
    presets (found through cerebro's SearchPathPlugin)."""
    conf = tmp_path / "conf"
    (conf / "autopsy").mkdir(parents=True)
    (conf / "config.yaml").write_text("defaults:\n  - autopsy: mine\n  - _self_\n")
    (conf / "autopsy" / "mine.yaml").write_text(f"defaults: [{preset}, _self_]\ndiagnostics: {diagnostics}\n")
    return conf


def _app_compose(conf: Path, overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [])


@pytest.mark.parametrize("preset", PRESETS)
def test_both_yaml_forms_on_every_preset_with_no_extra_line(tmp_path: Path, preset: str) -> None:
    base = _preset(preset)
    ig = _merged(base["integrated_gradients"], {"n_steps": 32})
    as_list = _app_compose(_user_app(tmp_path / "list", preset,
                                     "[predictions, {integrated_gradients: {n_steps: 32}}, gradients]"))
    # exactly the listed diagnostics, in that order, each with the preset's options overlaid by the entry's own
    assert _ran(as_list) == _runs([{"predictions": base["predictions"]}, {"integrated_gradients": ig},
                                   {"gradients": base["gradients"]}])
    assert [d.name for d in instantiate(as_list.autopsy).config.diagnostics] == [
        "predictions", "integrated_gradients", "gradients"]
    as_map = _app_compose(_user_app(tmp_path / "map", preset,
                                    "{integrated_gradients: {n_steps: 32}, gradients: false}"))
    assert _ran(as_map) == _runs({**base, "integrated_gradients": ig, "gradients": False})
    # every other key of the preset is kept (eeg_regression's sfreq, transformer's target, ...)
    plain = _compose(f"autopsy/{preset}").autopsy
    for cfg in (as_list, as_map):
        for key in plain:
            if key not in ("diagnostics", "preset_diagnostics"):
                assert cfg.autopsy[key] == plain[key], key
    assert as_list.autopsy.eeg.sfreq == (100 if preset == "eeg_regression" else None)


def test_command_line_edits_in_a_hydra_app_of_ones_own(tmp_path: Path) -> None:
    """The README's command line in a plain Hydra app: ++ edits the user's diagnostics (null until set, so Hydra's
    struct mode wants ++), autopsy/preset_diagnostics=NAME swaps the preset, a list runs exactly what it lists."""
    conf = _user_app(tmp_path, "default", "{integrated_gradients: {n_steps: 32, baseline: mean}}")
    edited = _app_compose(conf, ["++autopsy.diagnostics.gradients=false",
                                 "++autopsy.diagnostics.integrated_gradients.n_steps=16",
                                 "autopsy/preset_diagnostics=attribution_family"])
    family = _preset("attribution_family")
    # the command line wins over the YAML (n_steps 16), which wins over the preset (baseline mean)
    assert _ran(edited) == _runs({**family, "gradients": False, "integrated_gradients": _merged(
        family["integrated_gradients"], {"n_steps": 16, "baseline": "mean"})})
    listed = _app_compose(_user_app(tmp_path / "plain", "eeg_regression", "null"),
                          ["autopsy.diagnostics=[predictions,{faithfulness:{steps:5}},integrated_gradients]"])
    eeg = _preset("eeg_regression")
    assert _ran(listed) == _runs([{"predictions": {}}, {"integrated_gradients": eeg["integrated_gradients"]},
                                  {"faithfulness": {**eeg["faithfulness"], "steps": 5}}])


def test_shorthands_of_the_script_and_the_demo_edit_the_users_layer() -> None:
    shorthand = ["~autopsy.diagnostics.gradients", "autopsy.diagnostics.integrated_gradients.n_steps=7",
                 "autopsy.diagnostics.activations=false", "autopsy/diagnostics=attribution_family"]
    assert diagnostics_overrides(shorthand) == [
        "++autopsy.diagnostics.gradients=false", "++autopsy.diagnostics.integrated_gradients.n_steps=7",
        "++autopsy.diagnostics.activations=false", "autopsy/preset_diagnostics=attribution_family"]
    untouched = ["autopsy.diagnostics=[predictions]", "+autopsy.diagnostics.x.y=1", "++autopsy.diagnostics.x=false",
                 "~autopsy/preset_diagnostics", "autopsy.max_samples=3", "autopsy=default", "~autopsy.diagnostics"]
    assert diagnostics_overrides(untouched) == untouched
    assert diagnostics_overrides(["~autopsy/diagnostics"]) == ["~autopsy/preset_diagnostics"]
    cfg = _compose("demo", shorthand)
    family = _merged(_preset("attribution_family"), {"sanity_checks": {"samples": 8}})
    assert _ran(cfg) == _runs({**family, "gradients": False, "activations": False, "integrated_gradients": _merged(
        family["integrated_gradients"], {"n_steps": 7})})


@pytest.mark.parametrize(
    ("diagnostics", "expected"),
    [
        # mapping: merged onto the preset; false drops, null resets to the diagnostic's own defaults, new names last
        ({"b": {"k": 9}, "a": False, "c": None}, {"a": False, "b": {"k": 9, "j": 2}, "c": None}),
        ({"b": {"k": 9}, "d": {"x": 1}}, {"a": {"k": 1}, "b": {"k": 9, "j": 2}, "c": False, "d": {"x": 1}}),
        # list: exactly these, in this order, each with the preset's options overlaid by its own
        (["b", "a"], [{"b": {"k": 3, "j": 2}}, {"a": {"k": 1}}]),
        ([{"b": {"k": 9}}, {"a": None}, {"c": True}, {"d": False}],
         [{"b": {"k": 9, "j": 2}}, {"a": {"k": 1}}, {"c": {}}, {"d": False}]),
        ("b", [{"b": {"k": 3, "j": 2}}]),
        (None, {"a": {"k": 1}, "b": {"k": 3, "j": 2}, "c": False}),
    ],
    ids=["mapping-drop-reset", "mapping-add", "list-names", "list-entries", "one-name", "none"],
)
def test_layer_diagnostics_rules(diagnostics, expected) -> None:
    from omegaconf import OmegaConf

    from cerebro.config import layer_diagnostics

    preset = {"a": {"k": 1}, "b": {"k": 3, "j": 2}, "c": False}
    assert layer_diagnostics(diagnostics, preset) == expected
    if isinstance(expected, dict):  # the mapping's order is the run order: the preset's, new names after
        assert list(layer_diagnostics(diagnostics, preset)) == list(expected)
    wrapped = None if diagnostics is None or isinstance(diagnostics, str) else OmegaConf.create(diagnostics)
    assert layer_diagnostics(wrapped if wrapped is not None else diagnostics, OmegaConf.create(preset)) == expected
    assert layer_diagnostics(diagnostics, None) == diagnostics  # without a preset: the Python API, unchanged


@pytest.mark.parametrize(
    ("diagnostics", "expected"),
    [
        ("[predictons]", "`diagnostics` can be one of"),
        ("{integrated_gradient: {n_steps: 3}}", "Did you mean 'integrated_gradients'"),
        ("[{integrated_gradients: {n_step: 3}}]", "`integrated_gradients option` can be one of ['n_steps'"),
        ("{integrated_gradients: {method: riemann}}", "`integrated_gradients.method` can be one of ['auto'"),
    ],
)
def test_typos_in_either_yaml_form_name_the_option_and_the_choices(tmp_path: Path, diagnostics: str,
                                                                  expected: str) -> None:
    cfg = _app_compose(_user_app(tmp_path, "eeg_regression", diagnostics))
    with pytest.raises(Exception) as info:
        instantiate(cfg.autopsy)
    assert expected in str(info.value)
    assert isinstance(info.value.__cause__ or info.value, CerebroConfigError) or "CerebroConfigError" in str(info.value)
    with pytest.raises(CerebroConfigError, match="`preset_diagnostics` must be a mapping"):
        ModelAutopsy(preset_diagnostics=["predictions"])
