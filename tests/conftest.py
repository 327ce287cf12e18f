"""Shared fixtures for cerebro's tests: a tiny synthetic EEG datamodule and a fast, quiet Lightning Trainer."""

from __future__ import annotations

import os

import lightning.pytorch as pl
import pytest
import torch

from cerebro.demo import SyntheticEEGDataModule


def pytest_configure(config: pytest.Config) -> None:
    """``CEREBRO_TEST_THREADS=k`` runs the suite with ``torch.set_num_threads(k)``: results must not depend on it
    (float reductions split differently across threads), so the suite is also run that way."""
    threads = os.environ.get("CEREBRO_TEST_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
        os.environ["OMP_NUM_THREADS"] = threads  # and the same in the subprocesses some tests start (DDP, CLI)
    config.addinivalue_line("markers", "quick: the quick tier (bash scripts/test.sh --quick, or pytest -m quick), "
                                       "the tests most likely to break, chosen in tests/conftest.py")


#: The quick tier, by file: ``None`` = every test of the file, else the test functions left out (slow ones whose
#: ground other quick tests already cover, and wall-clock ones). Chosen for what breaks most in the inner loop:
#: config validation and typos, targets, the engine, health diagnostics, findings, bad inputs, fault isolation, CLI
#: errors, and tiny end-to-end autopsies (the runner directly and through a Lightning Trainer).
QUICK_FILES: dict[str, frozenset[str] | None] = {
    "test_configs.py": frozenset({"test_attribution_family_config_runs_end_to_end"}),
    "test_config_fuzz.py": None,
    "test_value_typos.py": None,
    "test_targets.py": None,
    "test_engine.py": None,
    "test_health_diagnostics.py": None,
    "test_findings.py": None,
    "test_bad_inputs.py": frozenset({"test_nonfinite_input_is_reported", "test_one_sample_loader"}),
    "test_fault_isolation.py": frozenset({"test_every_diagnostic_leaves_module_hooks_and_rng_untouched",
                                          "test_rerun_resumes_finished_diagnostics_on_the_same_checkpoint",
                                          # asserts a wall-clock bound: fails on a CPU shared with other work
                                          "test_time_budget_stops_a_long_diagnostic_and_the_rest_still_run"}),
    "test_maps_axioms.py": frozenset({"test_every_method_that_claims_completeness_reports_it"}),
    "test_cli.py": frozenset({"test_console_script_end_to_end", "test_script_matches_the_callback",
                              "test_class_that_does_not_match_its_weights"}),
    "test_quiet_logs.py": frozenset({"test_demo_piped_to_a_file_writes_no_progress_bar"}),
    "test_quick_tier.py": None,
}
#: Files where only these tests are quick: the tiny end-to-end runs through a real Trainer and its config errors.
QUICK_TESTS: dict[str, frozenset[str]] = {
    "test_callback.py": frozenset({"test_config_typo_fails_at_construction",
                                   "test_misspelled_layer_fails_before_first_training_step",
                                   "test_failing_diagnostic_is_isolated"}),
}


def is_quick(file_name: str, test_name: str) -> bool:
    """Whether test function ``test_name`` (without parameters) of ``tests/<file_name>`` is in the quick tier."""
    if file_name in QUICK_TESTS:
        return test_name in QUICK_TESTS[file_name]
    if file_name not in QUICK_FILES:
        return False
    left_out = QUICK_FILES[file_name]
    return left_out is None or test_name not in left_out


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection reads the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.parent.name == "tests" and is_quick(item.path.name, getattr(item, "originalname", item.name)):
            item.add_marker(pytest.mark.quick)


def pytest_report_header(config: pytest.Config) -> str:
    return f"cerebro tests: torch {torch.__version__}, {torch.get_num_threads()} intra-op threads"


@pytest.fixture(autouse=True)
def _same_precision_on_every_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """``precision: auto`` behaves as on a CPU without AMX in every test, whatever the host: on an AMX CPU it would
    try bf16 for the later chunks of a run, and the tests that compare maps with Captum, pytorch-grad-cam or a
    float32 reference at float32 tolerances would depend on the host. The reduced-precision logic is tested on its
    own with the hardware mocked (tests/test_precision*.py), which overrides this."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)


#: Tiny demo geometry. n_times must cover the demo's planted window (samples 80..120), see test_callback.py.
N_CHANS = 8
N_TIMES = 128


@pytest.fixture
def eeg_dm() -> SyntheticEEGDataModule:
    """64 train / 32 val / 32 test synthetic EEG windows of 8 channels x 128 samples, batches of 16."""
    return SyntheticEEGDataModule(n_train=64, n_val=32, n_test=32, n_chans=N_CHANS, n_times=N_TIMES, batch_size=16)


@pytest.fixture
def make_trainer(tmp_path):
    """Factory for a real CPU ``lightning.pytorch.Trainer`` rooted in ``tmp_path`` (no logger, no progress bar)."""

    def _make(callbacks=(), **overrides) -> pl.Trainer:
        kwargs = dict(
            default_root_dir=tmp_path,
            max_epochs=2,
            accelerator="cpu",
            devices=1,
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            num_sanity_val_steps=0,
        )
        kwargs.update(overrides)
        return pl.Trainer(callbacks=list(callbacks), **kwargs)

    return _make
