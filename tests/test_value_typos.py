"""A set of value typos that must fail before the first training step, with a real Trainer.

Every option with a closed set of values (baseline, method, layout, class, score, loss, ...) and every file an option
names is checked when the callback is built or in its ``setup``; the message names the option by its full path and
the valid values. Each case below builds the callback and fits a module that counts its training steps: the error
must come before the first one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cerebro import CerebroConfigError, ModelAutopsy, run_autopsy
from cerebro.preflight import check_target_on_batch
from cerebro.samples import BatchSpec
from cerebro.targets import build_target


class Counted(pl.LightningModule):
    """A tiny (B, 4, 32) -> (B, 1) conv net that counts its training steps (``conv1``, ``conv2``, ``head``)."""

    def __init__(self, outputs: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(4, 6, 5, padding=2)
        self.conv2 = nn.Conv1d(6, 6, 5, padding=2)
        self.head = nn.Linear(6 * 32, outputs)
        self.steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1))

    def training_step(self, batch: Any, _i: int) -> torch.Tensor:
        self.steps += 1
        return nn.functional.mse_loss(self(batch[0]), batch[1])

    def validation_step(self, batch: Any, _i: int) -> None:
        self.log("val_loss", nn.functional.mse_loss(self(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loader(n: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 4, 32, generator=g), torch.randn(n, 1, generator=g)), batch_size=8)


def _trainer(tmp_path: Path, *callbacks: Any) -> pl.Trainer:
    return pl.Trainer(default_root_dir=tmp_path, max_epochs=1, accelerator="cpu", logger=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      callbacks=list(callbacks), enable_checkpointing=False)


def _fit_must_fail(tmp_path: Path, module: Counted | None = None, datamodule: Any = None, **kwargs: Any) -> str:
    """Build the callback and fit with it (loaders given to ``fit``, or a datamodule); returns the config error's
    message, after checking no step ran."""
    module = module or Counted()
    with pytest.raises(CerebroConfigError) as info:
        trainer = _trainer(tmp_path, ModelAutopsy(output_dir=tmp_path / "autopsy", max_samples=8, **kwargs))
        if datamodule is None:
            trainer.fit(module, _loader(), _loader())
        else:
            trainer.fit(module, datamodule=datamodule)
    assert module.steps == 0, "a training step ran before the typo was reported"
    assert not (tmp_path / "autopsy" / "summary.json").exists()
    return str(info.value)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A folder without the files the typos name (and one real file, to tell a path from a name)."""
    (tmp_path / "real.npy").write_bytes(b"")
    return tmp_path


#: A preset's diagnostics (what autopsy/preset_diagnostics composes to); its layer name does not fit Counted.
PRESET = {"predictions": {}, "integrated_gradients": {"n_steps": 4}, "layer_gradcam": {"layer": "block_5.0"}}

TYPOS = [
    # (id, callback kwargs, fragments the one-line message must contain)
    ("ig-baseline-name", {"diagnostics": [{"integrated_gradients": {"baseline": "meen"}}]},
     ["`integrated_gradients.baseline`", "['zeros', 'mean']", "existing .npy/.pt file", "Did you mean 'mean'?"]),
    ("ig-baseline-file", {"diagnostics": [{"integrated_gradients": {"baseline": "{tmp}/baseline.npy"}}]},
     ["`integrated_gradients.baseline`", "baseline.npy", "not a file"]),
    ("ig-method", {"diagnostics": [{"integrated_gradients": {"method": "gauss_legendre"}}]},
     ["`integrated_gradients.method`", "riemann_trapezoid", "Did you mean 'gausslegendre'?"]),
    ("deeplift-baseline", {"diagnostics": [{"deeplift": {"baseline": "zero"}}]},
     ["`deeplift.baseline`", "'zeros'"]),
    ("gradient-shap-baselines", {"diagnostics": [{"gradient_shap": {"baselines": "dta"}}]},
     ["`gradient_shap.baselines`", "'data'"]),
    ("gradcam-layout", {"diagnostics": [{"layer_gradcam": {"layout": "token"}}]},
     ["`layer_gradcam.layout`", "channels_first", "Did you mean 'tokens'?"]),
    ("gradients-loss", {"diagnostics": [{"gradients": {"loss": "mse"}}]}, ["`gradients.loss`", "auto"]),
    ("smoothgrad-type", {"diagnostics": [{"smoothgrad": {"nt_type": "smoothgrad_squared"}}]},
     ["`smoothgrad.nt_type`", "vargrad"]),
    ("rollout-fusion", {"diagnostics": [{"attention_rollout": {"head_fusion": "avg"}}]},
     ["`attention_rollout.head_fusion`", "'mean'"]),
    ("target-kind", {"target": "regresion"}, ["`target.kind`", "Did you mean 'regression'?"]),
    ("target-class", {"target": {"kind": "classification", "class": "labels"}},
     ["`target.class`", "'predicted'", "Did you mean 'label'?"]),
    ("target-score", {"target": {"kind": "classification", "score": "probabilities"}},
     ["`target.score`", "log_probability", "Did you mean 'probability'?"]),
    ("target-reference-file", {"target": {"kind": "similarity", "reference": "{tmp}/refs.npy"}},
     ["target.reference", "refs.npy", "does not exist"]),
    ("eeg-names-file", {"eeg": {"channel_names": "{tmp}/channels.txt"}}, ["`eeg.channel_names`", "channels.txt"]),
    ("sampling", {"sampling": "rand"}, ["`sampling`", "'first'", "'random'"]),
    ("split", {"split": "valid"}, ["`split`", "'val'"]),
    ("run-on", {"run_on": ["fitt"]}, ["`run_on`", "'fit'"]),
    ("checkpoint-word", {"checkpoint": "bset"}, ["`checkpoint`", "Did you mean 'best'?"]),
    # found in setup (they need the module or the file system), still before the first step
    ("checkpoint-file", {"checkpoint": "{tmp}/missing.ckpt"}, ["`checkpoint`", "missing.ckpt", "not a file"]),
    ("gradcam-layer", {"diagnostics": [{"layer_gradcam": {"layer": "conv3"}}]},
     ["`layer_gradcam.layer`", "'conv3' is not a submodule of Counted", "conv2"]),
    ("activations-layers", {"diagnostics": [{"activations": {"layers": ["conv1", "conv_2"]}}]},
     ["`activations.layers`", "'conv_2'", "Did you mean 'conv2'?"]),
    ("layer-ig-layer", {"diagnostics": [{"layer_integrated_gradients": {"layer": "head2"}}]},
     ["`layer_integrated_gradients.layer`", "'head2'"]),
    # the Hydra configs' two forms laid over a preset (autopsy.preset_diagnostics): the typo in the user's part
    ("preset-mapping-name", {"preset_diagnostics": PRESET, "diagnostics": {"integrated_gradient": {"n_steps": 4}}},
     ["`diagnostics`", "'integrated_gradients'", "Did you mean 'integrated_gradients'?"]),
    ("preset-list-option", {"preset_diagnostics": PRESET, "diagnostics": [{"integrated_gradients": {"methd": "auto"}}]},
     ["integrated_gradients", "'method'", "Did you mean 'method'?"]),
    ("preset-mapping-layer", {"preset_diagnostics": PRESET, "diagnostics": {"layer_gradcam": {"layer": "conv3"}}},
     ["`layer_gradcam.layer`", "'conv3' is not a submodule of Counted", "conv2"]),
    ("preset-list-layer", {"preset_diagnostics": PRESET, "diagnostics": ["predictions", "layer_gradcam"]},
     ["`layer_gradcam.layer`", "'block_5.0' is not a submodule of Counted", "conv2"]),
]


@pytest.mark.parametrize(("kwargs", "fragments"), [(k, f) for _, k, f in TYPOS], ids=[i for i, _, _ in TYPOS])
def test_value_typo_fails_before_the_first_training_step(files: Path, kwargs: dict, fragments: list[str]) -> None:
    kwargs = _with_tmp(kwargs, str(files))
    message = _fit_must_fail(files, **kwargs)
    assert "\n" not in message.strip(), message
    for fragment in fragments:
        assert fragment.replace("{tmp}", str(files)) in message, (fragment, message)


def test_an_existing_baseline_file_is_accepted_up_front(files: Path) -> None:
    autopsy = ModelAutopsy(diagnostics=[{"integrated_gradients": {"baseline": str(files / "real.npy")}}])
    assert autopsy.config.diagnostics[0].options.baseline == str(files / "real.npy")


def test_multi_output_model_with_the_default_target_is_told_about_classification(tmp_path: Path) -> None:
    """Three outputs under the default regression target: the reason offers both fixes, classification first."""
    summary = run_autopsy(Counted(outputs=3), _loader(), diagnostics=["predictions"], output_dir=tmp_path)
    assert summary["status"] == "failed"
    reason = summary["reason"]
    assert re.search(r"if they are class logits, set target: classification", reason), reason
    assert "{kind: regression, index: k} with k in [0, 3)" in reason


def _with_tmp(value: Any, tmp: str) -> Any:
    if isinstance(value, str):
        return value.replace("{tmp}", tmp)
    if isinstance(value, list):
        return [_with_tmp(v, tmp) for v in value]
    if isinstance(value, dict):
        return {k: _with_tmp(v, tmp) for k, v in value.items()}
    return value


class DictData(pl.LightningDataModule):
    """Batches as dicts {"eeg": (B, 4, 32), "rt": (B, 1)}; the module reads the same keys."""

    def _loader(self) -> DataLoader:
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(16, 4, 32, generator=g), torch.randn(16, 1, generator=g)
        return DataLoader([{"eeg": a, "rt": b} for a, b in zip(x, y)], batch_size=8, shuffle=True)

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()


class DictCounted(Counted):
    def training_step(self, batch: Any, _i: int) -> torch.Tensor:
        self.steps += 1
        return nn.functional.mse_loss(self(batch["eeg"]), batch["rt"])

    def validation_step(self, batch: Any, _i: int) -> None:
        self.log("val_loss", nn.functional.mse_loss(self(batch["eeg"]), batch["rt"]))


# A target that does not fit the model's output, found on one real batch in setup (cerebro.preflight).
TARGET_MISFITS = [
    ("3-outputs-default-regression", {"outputs": 3}, {},
     ["`target` (regression) on the first val batch", "if they are class logits, set target: classification",
      "{kind: regression, index: k} with k in [0, 3)"]),
    ("regressor-as-classification", {}, {"target": "classification"},
     ["`target` (classification)", "(B, K) with K >= 2", "(2, 1)"]),
    ("regression-index-out-of-range", {"outputs": 3}, {"target": {"kind": "regression", "index": 3}},
     ["target index 3 is out of range", "(2, 3)"]),
    ("output-key-on-a-tensor", {}, {"output_key": "logits"}, ["logits"]),
]


@pytest.mark.parametrize(("module_kw", "kwargs", "fragments"), [c[1:] for c in TARGET_MISFITS],
                         ids=[c[0] for c in TARGET_MISFITS])
def test_a_target_that_does_not_fit_fails_before_the_first_training_step(tmp_path: Path, module_kw: dict,
                                                                          kwargs: dict, fragments: list[str]) -> None:
    message = _fit_must_fail(tmp_path, module=Counted(**module_kw), **kwargs)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_a_batch_key_typo_fails_before_the_first_training_step(tmp_path: Path) -> None:
    """Dict batches from a datamodule: an input_key that is not a key of the batch is named with the real keys."""
    message = _fit_must_fail(tmp_path, module=DictCounted(), datamodule=DictData(), input_key="egg", target_key="rt")
    assert "input_key 'egg' is not in the batch keys ['eeg', 'rt']" in message, message
    message = _fit_must_fail(tmp_path, module=DictCounted(outputs=3), datamodule=DictData(), input_key="eeg")
    assert "set target: classification" in message, message


def test_the_target_check_leaves_the_training_as_it_would_have_been(tmp_path: Path) -> None:
    """The check draws a batch from a shuffling loader and runs the model: with every generator restored, the same
    seed trains to the same weights with and without the callback, and the module is back in training mode."""
    weights = []
    for with_autopsy in (False, True):
        pl.seed_everything(3)
        module = DictCounted()
        callbacks = [ModelAutopsy(output_dir=tmp_path / "a", diagnostics=["predictions"], run_on=["test"],
                                  input_key="eeg")] if with_autopsy else []
        _trainer(tmp_path, *callbacks).fit(module, datamodule=DictData())
        weights.append(torch.cat([p.detach().flatten() for p in module.parameters()]))
        if with_autopsy:
            assert callbacks[0]._target_checked
    assert module.steps == 2
    assert torch.equal(weights[0], weights[1])  # equal by construction: same seed, same ops in one process


def test_the_target_check_restores_each_modules_mode() -> None:
    """A module in training mode with a part the user froze in eval mode (e.g. a BatchNorm backbone) comes back
    exactly so, and a target that fits raises nothing."""
    module = nn.Sequential(nn.Conv1d(4, 4, 3, padding=1), nn.BatchNorm1d(4), nn.Flatten(), nn.Linear(4 * 32, 1))
    module.train()
    module[1].eval()
    stats = module[1].running_mean.clone()
    check_target_on_batch(module, next(iter(_loader())), BatchSpec(), build_target("regression"), None)
    assert [m.training for m in module] == [True, False, True, True] and module.training
    assert torch.equal(module[1].running_mean, stats)  # eval mode during the check: no statistics updated
