"""Issue 6, "nothing lost, nothing leaked": bad inputs and faults, each with the exact message the user gets and a
check that nothing else broke (the user's model, the training run and its checkpoints, the report folder).

Rows already proven elsewhere are not repeated here; docs/reliability.md lists every row with its test.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

import cerebro
from cerebro import CerebroConfigError, ModelAutopsy
from cerebro.demo import EEGRegressor
from cerebro.targets import ClassificationTarget
from tests.autopsy_helpers import load_array, load_summary, loader
from tests.models import SmallResNet2d, TinyConv1d

N_CHANS, N_TIMES = 4, 32  # TinyConv1d's input
FAST = ["predictions", "gradients", "activations", "failure_modes", {"integrated_gradients": {"n_steps": 4}},
        "layer_gradcam"]
NAMES = ["predictions", "gradients", "activations", "failure_modes", "integrated_gradients", "layer_gradcam"]


def tiny() -> TinyConv1d:
    torch.manual_seed(0)
    return TinyConv1d(N_CHANS, N_TIMES)


def signals(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, N_CHANS, N_TIMES, generator=g), torch.randn(n, 1, generator=g)


def run(model: nn.Module, data: Any, out: Path, diagnostics: Any = ("predictions",), **kwargs: Any) -> dict[str, Any]:
    """``run_autopsy``, checking that it never raised, that the summary on disk is the returned one and that the
    report was written whatever happened."""
    summary = cerebro.run_autopsy(model, data, diagnostics=list(diagnostics), output_dir=out, **kwargs)
    on_disk = load_summary(out)
    assert (on_disk["status"], on_disk["reason"]) == (summary["status"], summary["reason"])
    assert (out / "report.html").is_file()
    return summary


def assert_failed(summary: dict[str, Any], *fragments: str) -> None:
    """The whole autopsy failed before any diagnostic ran, with a reason holding every fragment."""
    assert summary["status"] == "failed"
    assert summary["diagnostics"] == {}
    for frag in fragments:
        assert frag in summary["reason"], (frag, summary["reason"])


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_untouched(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], v) for k, v in before.items())


# =====================================================================================================================
# Configuration: wrong option types and values fail at construction (before training), naming option and value
# (typos of names with "Did you mean": tests/test_configs.py and tests/test_callback.py)
# =====================================================================================================================
@pytest.mark.parametrize(
    ("diagnostics", "expected"),
    [
        ([{"activations": {"dead_fraction": "high"}}],
         "activations.dead_fraction: Value 'high' of type 'str' could not be converted to Float"),
        ([{"activations": {"layers": "conv1"}}], "activations.layers: Invalid value assigned"),
        ([{"failure_modes": {"top_k": 0}}], "`failure_modes.top_k` must be >= 1, got 0"),
        ([{"neuron_integrated_gradients": {"layer": "conv1", "neuron": [1.5]}}],
         "neuron_integrated_gradients.neuron[0]: Value '1.5' of type 'float' could not be converted to Integer"),
        ([{"integrated_gradients": 5}], "options of diagnostic 'integrated_gradients' must be a mapping, got 5"),
        ([{"gradients": {"loss": "mse"}}], "`gradients.loss` can be one of ['auto', 'module', 'default', 'target'], "
                                           "got 'mse'"),
        ([{"layer_gradcam": {"grid": "14x14"}}], "layer_gradcam.grid: Invalid value assigned"),
        ([{"activations": {"saturation": float("nan")}}], "`activations.saturation` must be a number, got nan"),
    ],
    ids=["float_as_text", "list_as_text", "below_min", "float_in_int_list", "options_not_mapping", "bad_choice",
         "grid_as_text", "nan"],
)
def test_wrong_option_type_fails_at_construction(diagnostics: Any, expected: str) -> None:
    with pytest.raises(CerebroConfigError) as info:
        ModelAutopsy(diagnostics=diagnostics)
    assert expected in str(info.value)


def test_misspelled_target_option_suggests_the_nearest() -> None:
    with pytest.raises(CerebroConfigError) as info:
        ModelAutopsy(target={"kind": "classification", "scor": "probability"})
    assert "`target option for classification` can be one of ['class', 'score'], got 'scor'. Did you mean 'score'?" \
        == str(info.value)


# =====================================================================================================================
# Targets that do not match the model's output (tuple outputs, (B, 1) classification, multi-output regression, float
# labels with class: label: tests/test_targets.py)
# =====================================================================================================================
class Logits(nn.Module):
    """(B, C, T) -> (B, 3) logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(N_CHANS * N_TIMES, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_continuous_labels_used_as_class_indices(tmp_path: Path) -> None:
    # Before: float labels were truncated by .long() into classes and the autopsy reported accuracy against them.
    x, _ = signals()
    y = torch.linspace(0.1, 2.9, 8)
    summary = run(Logits(), loader(x, y), tmp_path, ["predictions", "failure_modes"], target="classification")
    assert_failed(summary, "classification target needs one class index per sample, got torch.float32 labels of "
                           "shape (2,) for output (2, 3) with non-integer values such as 0.1",
                  "or use target: regression for continuous labels")


def test_one_hot_labels_used_as_class_indices() -> None:
    one_hot = torch.eye(3)[[0, 2, 1, 1]]
    with pytest.raises(CerebroConfigError) as info:
        ClassificationTarget().preflight(torch.zeros(4, 3), one_hot)
    assert "got torch.float32 labels of shape (4, 3) for output (4, 3)" in str(info.value)
    assert "argmax of one-hot rows" in str(info.value)


def test_whole_number_float_labels_are_accepted_as_classes(tmp_path: Path) -> None:
    x, _ = signals()
    y = torch.tensor([0.0, 1.0, 2.0, 1.0, 0.0, 2.0, 2.0, 1.0])
    summary = run(Logits(), loader(x, y), tmp_path, ["predictions"], target="classification")
    assert summary["status"] == "ok"
    pred = Logits()(x).argmax(1)
    assert summary["diagnostics"]["predictions"]["metrics"]["accuracy"] == pytest.approx(
        float((pred == y.long()).float().mean()))


@dataclasses.dataclass
class Output:
    """What a Hugging Face-style model returns: an object with ``.logits`` (and more)."""

    logits: torch.Tensor
    hidden_states: torch.Tensor | None = None


class ModelOutput(OrderedDict):
    """transformers.utils.ModelOutput in miniature: a dict whose keys are also attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err


class Wrapped(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.inner = Logits()

    def forward(self, x: torch.Tensor) -> Any:
        logits = self.inner(x)
        if self.kind == "dict":
            return {"logits": logits, "features": x.flatten(1)}
        if self.kind == "dataclass":
            return Output(logits=logits, hidden_states=x)
        return ModelOutput(logits=logits)


@pytest.mark.parametrize(
    ("kind", "returned", "example"),
    [
        ("dict", "the model returned dict holding tensors out['logits'] (2, 3), out['features'] (2, 128)",
         "`return self.model(x)['logits']`"),
        ("dataclass", "the model returned Output holding tensors out.logits (2, 3), out.hidden_states (2, 4, 32)",
         "`return self.model(x).logits`"),
        ("model_output", "the model returned ModelOutput holding tensors out['logits'] (2, 3)",
         "`return self.model(x)['logits']`"),
    ],
)
def test_dict_and_object_outputs_say_what_was_returned_and_what_to_do(tmp_path: Path, kind: str, returned: str,
                                                                      example: str) -> None:
    model = Wrapped(kind)
    before = state(model)
    x, _ = signals()
    summary = run(model, loader(x, torch.randint(0, 3, (8,))), tmp_path, ["predictions", "integrated_gradients"],
                  target="classification")
    assert_failed(summary, returned, "cerebro needs its forward to return one tensor",
                  "wrap the model in an nn.Module whose forward(x) returns the prediction tensor, e.g. " + example)
    assert_untouched(model, before)


@pytest.mark.parametrize("kind", ["dict", "dataclass", "model_output"])
def test_output_key_selects_the_prediction(tmp_path: Path, kind: str) -> None:
    x, _ = signals()
    summary = run(Wrapped(kind), loader(x, torch.randint(0, 3, (8,))), tmp_path, ["predictions"],
                  target="classification", output_key="logits")
    assert summary["status"] == "ok"


# =====================================================================================================================
# Inputs: dict batches, several tensors per batch, models that need several inputs
# =====================================================================================================================
@pytest.mark.parametrize(
    ("batches", "kwargs", "expected"),
    [
        ([{"a": torch.zeros(2, N_CHANS, N_TIMES), "b": torch.zeros(2, 1)}], {},
         "cannot find the input in a dict batch with keys ['a', 'b'] (none of the usual names ['x', 'input', "),
        ([{"a": torch.zeros(2, N_CHANS, N_TIMES), "b": torch.zeros(2, 1)}], {"input_key": "eeg"},
         "input_key 'eeg' is not in the batch keys ['a', 'b']"),
        ([{"a": torch.zeros(2, N_CHANS, N_TIMES), "b": torch.zeros(2, 1)}], {"input_key": "a", "target_key": "rt"},
         "target_key 'rt' is not in the batch keys ['a', 'b']"),
        ([(torch.zeros(2, N_CHANS, N_TIMES), torch.zeros(2, 1))], {"input_key": 5},
         "input_key=5 does not index a batch of 2 elements (tuple batches take int positions)"),
        ([(torch.zeros(2, N_CHANS, N_TIMES), torch.zeros(2, 1))], {"input_key": "x"},
         "input_key='x' does not index a batch of 2 elements (tuple batches take int positions)"),
        ([([torch.zeros(2, N_CHANS, N_TIMES)] * 2, torch.zeros(2, 1))], {},
         "the batch input must be a tensor, got list"),
        ([(torch.zeros(2, N_CHANS, N_TIMES), torch.zeros(2, 1)), (torch.zeros(2, N_CHANS, 16), torch.zeros(2, 1))], {},
         "samples have different shapes: (4, 16) vs (4, 32); cerebro needs one input shape per sample set"),
    ],
    ids=["dict_no_known_key", "dict_wrong_input_key", "dict_wrong_target_key", "tuple_position_out_of_range",
         "tuple_given_a_key", "list_of_tensors_as_input", "shapes_differ"],
)
def test_batches_the_autopsy_cannot_read(tmp_path: Path, batches: list[Any], kwargs: dict[str, Any],
                                         expected: str) -> None:
    summary = run(tiny(), batches, tmp_path, ["predictions", "integrated_gradients"], **kwargs)
    assert_failed(summary, expected)


def test_several_tensors_per_batch_with_input_key(tmp_path: Path) -> None:
    x, y = signals()
    subject = torch.arange(8) % 2
    model = tiny()
    summary = run(model, loader(subject, x, y), tmp_path, ["predictions", "failure_modes"], input_key=1, target_key=2)
    assert summary["status"] == "ok", summary["reason"]
    assert summary["samples"]["input_shape"] == [N_CHANS, N_TIMES]
    assert summary["samples"]["metadata_fields"] == ["field_0"]  # the third tensor became per-sample metadata
    np.testing.assert_allclose(load_array(tmp_path, "predictions", "targets"), y[:, 0].numpy())
    with torch.no_grad():
        np.testing.assert_allclose(load_array(tmp_path, "predictions", "predictions"), model(x)[:, 0].numpy(),
                                   rtol=1e-5, atol=1e-6)  # float32 forward passes batched differently: ~1e-6 rel.


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(N_CHANS * N_TIMES, 1)

    def forward(self, eeg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc((eeg * mask).flatten(1))


def test_model_that_needs_two_inputs(tmp_path: Path) -> None:
    # Before: "TypeError: TwoInputs.forward() missing 1 required positional argument: 'mask'" from deep in the runner.
    x, y = signals()
    summary = run(TwoInputs(), loader(x, torch.ones_like(x), y), tmp_path, ["predictions"], target_key=2)
    assert_failed(summary, "TwoInputs.forward needs 2 inputs ['eeg', 'mask'], but cerebro calls forward(x) with one "
                           "tensor", "wrap the model in an nn.Module whose forward(x) takes a single tensor")


# =====================================================================================================================
# NaN / inf in inputs and outputs
# =====================================================================================================================
def _strict_json(path: Path) -> Any:
    def refuse(token: str) -> None:
        raise AssertionError(f"{path.name} holds {token}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _nonfinite_inputs(value: float) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = signals()
    x[0, 0, 0] = value
    return x, y


@pytest.mark.filterwarnings("ignore:cerebro")
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_input_is_reported(tmp_path: Path, value: float) -> None:
    x, y = _nonfinite_inputs(value)
    summary = run(tiny(), loader(x, y), tmp_path, FAST)
    assert summary["warnings"] == [
        "inputs of 1 samples contain non-finite values (indices [0]): their outputs and maps are not meaningful",
        "model outputs contain 1 non-finite values (samples [0])"]
    d = summary["diagnostics"]
    assert "degenerate map: 36 non-finite values" in d["integrated_gradients"]["flags"]
    assert any(f.startswith("degenerate map:") and "non-finite" in f for f in d["layer_gradcam"]["flags"])
    assert "non-finite activations: conv1" in d["activations"]["flags"]
    assert d["gradients"]["flags"][0].startswith("non-finite gradients: conv1.weight")
    assert d["predictions"]["status"] == d["failure_modes"]["status"] == d["integrated_gradients"]["status"] == "ok"
    assert _strict_json(tmp_path / "summary.json")["warnings"] == summary["warnings"]  # NaN never leaks into JSON


@pytest.mark.filterwarnings("ignore:cerebro")
def test_nonfinite_input_keeps_gradients_and_activations_ok(tmp_path: Path) -> None:
    x, y = _nonfinite_inputs(float("nan"))
    summary = run(tiny(), loader(x, y), tmp_path, ["gradients", "activations"])
    for name in ("gradients", "activations"):
        assert summary["diagnostics"][name]["status"] == "ok", summary["diagnostics"][name]["reason"]


def test_nonfinite_input_is_named_as_an_input_problem(tmp_path: Path) -> None:
    x, y = _nonfinite_inputs(float("nan"))
    summary = run(tiny(), loader(x, y), tmp_path, ["predictions"])
    assert any("input" in w and "non-finite" in w for w in summary.get("warnings", []))


class NaNForSome(nn.Module):
    """Finite inputs, NaN outputs for every 4th sample (e.g. a log of a negative value in the head)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        bad = (x[:, 0, 0] > 1e6) | (torch.arange(x.shape[0], device=x.device) % 4 == 0)
        return torch.where(bad[:, None], torch.full_like(out, float("nan")), out)


def test_nonfinite_outputs_are_reported(tmp_path: Path) -> None:
    x, y = signals()
    summary = run(NaNForSome(), loader(x, y), tmp_path, ["predictions", {"integrated_gradients": {"n_steps": 4}}],
                  batch_size=8)
    assert summary["warnings"] == ["model outputs contain 2 non-finite values (samples [0, 4])"]
    assert summary["diagnostics"]["predictions"]["status"] == "ok"
    assert _strict_json(tmp_path / "summary.json")["warnings"] == summary["warnings"]  # NaN never leaks into JSON


def test_nonfinite_outputs_are_flagged_by_predictions(tmp_path: Path) -> None:
    x, y = signals()
    summary = run(NaNForSome(), loader(x, y), tmp_path, ["predictions"], batch_size=8)
    assert any("non-finite" in f for f in summary["diagnostics"]["predictions"]["flags"])


def test_nonfinite_outputs_are_shown_in_the_report(tmp_path: Path) -> None:
    x, y = signals()
    run(NaNForSome(), loader(x, y), tmp_path, ["predictions"], batch_size=8)
    assert "non-finite" in (tmp_path / "report.html").read_text()


# =====================================================================================================================
# Loaders: one sample, no labels, empty (empty DataLoader in the callback: tests/test_callback.py)
# =====================================================================================================================
def test_one_sample_loader(tmp_path: Path) -> None:
    x, y = signals(1)
    summary = run(tiny(), loader(x, y), tmp_path, FAST)
    assert summary["status"] == "ok", summary["diagnostics"]
    assert summary["n_samples"] == 1
    assert {n: r["status"] for n, r in summary["diagnostics"].items()} == {n: "ok" for n in NAMES}
    assert load_array(tmp_path, "integrated_gradients", "attributions").shape == (1, N_CHANS, N_TIMES)


def test_one_sample_is_not_flagged_as_constant_predictions(tmp_path: Path) -> None:
    x, y = signals(1)
    summary = run(tiny(), loader(x, y), tmp_path, ["predictions"])
    assert not any(f.startswith("constant predictions") for f in summary["diagnostics"]["predictions"]["flags"])


def test_batches_without_labels(tmp_path: Path) -> None:
    x, _ = signals()
    with pytest.warns(UserWarning, match="failure_modes needs labels"):
        summary = run(tiny(), loader(x), tmp_path, FAST)
    assert summary["status"] == "ok" and summary["samples"]["has_labels"] is False
    d = summary["diagnostics"]
    assert d["failure_modes"] == {**d["failure_modes"], "status": "skipped", "artifacts": [],
                                  "reason": "failure_modes needs labels, but the batches carry none"}
    assert {n: r["status"] for n, r in d.items() if n != "failure_modes"} == {n: "ok" for n in NAMES
                                                                              if n != "failure_modes"}
    assert d["predictions"]["flags"] == ["no labels in the batches: prediction quality not measured"]
    assert d["gradients"]["metrics"]["loss_source"] == "target"  # the explained scalar stands in for a loss


def test_empty_iterable(tmp_path: Path) -> None:
    summary = run(tiny(), [], tmp_path, FAST)
    assert_failed(summary, "the dataloader holds 0 samples (it yielded 0 samples), so there is nothing to attribute")
    assert summary["n_samples"] == 0


# =====================================================================================================================
# Checkpoints: corrupt, truncated, another architecture, a directory (missing file / shape mismatch: test_cli.py)
# =====================================================================================================================
@pytest.fixture
def checkpoints(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "ckpts"
    root.mkdir()
    paths = {name: root / f"{name}.ckpt" for name in ("corrupt", "truncated", "other", "good")}
    paths["corrupt"].write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save({"state_dict": tiny().state_dict()}, paths["good"])
    good = paths["good"].read_bytes()
    paths["truncated"].write_bytes(good[: len(good) // 2])
    torch.save({"state_dict": SmallResNet2d().state_dict()}, paths["other"])
    paths["directory"] = root / "sharded.ckpt"
    paths["directory"].mkdir()
    return paths


@pytest.mark.parametrize(
    ("which", "expected"),
    [
        ("corrupt", ["(4096 bytes) is not a PyTorch checkpoint: neither a torch.save zip archive nor a pickle"]),
        ("truncated", ["is not a PyTorch checkpoint", "empty, truncated, corrupt or of another format"]),
        ("other", ["does not match TinyConv1d: missing keys ['conv1.bias', 'conv1.weight', 'conv2.bias', "
                   "'conv2.weight', 'head.bias'] ..., unexpected keys ['fc.bias', 'fc.weight', 'layer1.bn1.bias', "]),
        ("directory", ["is a directory (a sharded or DeepSpeed checkpoint?)"]),
    ],
)
def test_bad_checkpoint_file_names_the_file(tmp_path: Path, checkpoints: dict[str, Path], which: str,
                                            expected: list[str]) -> None:
    model = tiny()
    before = state(model)
    x, y = signals()
    path = checkpoints[which]
    summary = run(model, loader(x, y), tmp_path / "out", ["predictions", "integrated_gradients"], checkpoint=str(path))
    assert_failed(summary, f"checkpoint {str(path)!r}", *expected)
    assert "weights_only` set to `False` will likely succeed" not in summary["reason"]  # torch's advice, wrong here
    assert summary["checkpoint"]["path"] == str(path)
    assert_untouched(model, before)


def test_good_checkpoint_still_loads(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    x, y = signals()
    summary = run(tiny(), loader(x, y), tmp_path / "out", ["predictions"], checkpoint=str(checkpoints["good"]))
    assert summary["status"] == "ok" and summary["checkpoint"]["sha256"]


# =====================================================================================================================
# The output folder cannot be created
# =====================================================================================================================
@pytest.mark.parametrize("where", ["under_a_file", "is_a_file"])
def test_output_dir_that_cannot_be_created(tmp_path: Path, where: str) -> None:
    # Tests run as root, where chmod 0o500 does not stop writes: a path under (or equal to) a regular file can never
    # be a folder, for any user.
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    out = afile / "out" if where == "under_a_file" else afile
    model = tiny()
    before = state(model)
    x, y = signals()
    with pytest.raises((OSError, CerebroConfigError)) as info:
        cerebro.run_autopsy(model, loader(x, y), diagnostics=["predictions"], output_dir=out)
    assert str(out) in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and afile.read_text() == "not a folder"
    assert_untouched(model, before)


def test_output_dir_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    x, y = signals()
    with pytest.raises(CerebroConfigError, match="`output_dir`"):
        cerebro.run_autopsy(tiny(), loader(x, y), diagnostics=["predictions"], output_dir=tmp_path / "afile" / "out")


# =====================================================================================================================
# A missing optional dependency, through the public `eeg` option (EEGInfo.check itself: tests/test_eeg_views.py)
# =====================================================================================================================
def test_eeg_montage_without_mne_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mne", None)  # `import mne` now raises ImportError
    with pytest.raises(CerebroConfigError) as info:
        ModelAutopsy(eeg={"montage": "standard_1020", "channel_names": ["Cz", "Pz"]})
    assert "eeg: an EEG montage needs MNE-Python: pip install mne (the eeg extra of cerebro-autopsy)" in str(info.value)
    ModelAutopsy(eeg={"channel_names": ["Cz", "Pz"], "sfreq": 100.0})  # without a montage mne is not needed


# =====================================================================================================================
# With a real Trainer: an autopsy that cannot run leaves training, its checkpoints and its state intact
# =====================================================================================================================
def _fit(make_trainer: Any, eeg_dm: Any, autopsy: ModelAutopsy) -> tuple[Any, ModelCheckpoint, EEGRegressor]:
    torch.manual_seed(0)
    model = EEGRegressor(n_chans=8, n_times=128)
    ckpt = ModelCheckpoint(monitor="val_loss")
    trainer = make_trainer([autopsy, ckpt], max_epochs=1)
    trainer.fit(model, datamodule=eeg_dm)
    return trainer, ckpt, model


def _assert_training_intact(trainer: Any, ckpt: ModelCheckpoint, model: EEGRegressor) -> None:
    assert trainer.state.finished and trainer.state.status.value == "finished"
    assert trainer.global_step == 4 and trainer.current_epoch == 1  # 64 samples / 16 per batch, one epoch
    saved = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)
    assert saved["epoch"] == 0 and all(torch.equal(saved["state_dict"][k], v) for k, v in model.state_dict().items())


def test_corrupt_checkpoint_after_fit_leaves_training_intact(eeg_dm: Any, make_trainer: Any, tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.ckpt"
    bad.write_bytes(b"\x00" + np.random.default_rng(1).bytes(1023))  # random bytes (not starting like a pickle)
    autopsy = ModelAutopsy(diagnostics=["predictions"], checkpoint=str(bad), max_samples=8)
    trainer, ckpt, model = _fit(make_trainer, eeg_dm, autopsy)
    _assert_training_intact(trainer, ckpt, model)
    summary = json.loads((tmp_path / "autopsy" / "summary.json").read_text())
    assert_failed(summary, f"checkpoint {str(bad)!r} (1024 bytes) is not a PyTorch checkpoint")
    assert autopsy.runs == [{"stage": "fit", "status": "failed", "output_dir": str(tmp_path / "autopsy")}]
    assert autopsy.state_dict() == {"runs": autopsy.runs}  # the callback's own checkpointed state is fine too


def test_unwritable_output_dir_after_fit_leaves_training_intact(eeg_dm: Any, make_trainer: Any, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "autopsy"
    autopsy = ModelAutopsy(diagnostics=["predictions"], output_dir=out, checkpoint="live", max_samples=8)
    with caplog.at_level(logging.WARNING, logger="cerebro"):
        trainer, ckpt, model = _fit(make_trainer, eeg_dm, autopsy)
    _assert_training_intact(trainer, ckpt, model)
    assert autopsy.runs == [{"stage": "fit", "status": "failed", "output_dir": str(out)}]
    reason = f"`output_dir` '{out}' cannot be created: Not a directory"
    assert autopsy.last_summary == {"status": "failed", "reason": reason}
    assert f"cerebro: autopsy after fit failed: {reason}" in caplog.text
