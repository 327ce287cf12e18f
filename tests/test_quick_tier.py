"""The quick tier: ``bash scripts/test.sh --quick`` = ``pytest -m quick``, chosen by file and test name in conftest."""

from __future__ import annotations

import ast
import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.conftest import QUICK_FILES, QUICK_TESTS, is_quick

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _test_functions(file_name: str) -> set[str]:
    tree = ast.parse((TESTS / file_name).read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_name_in_the_quick_lists_exists() -> None:
    """A renamed file or test must not silently drop out of (or stay left out of) the tier."""
    for name, names in [*QUICK_FILES.items(), *QUICK_TESTS.items()]:
        assert (TESTS / name).is_file(), name
        assert set(names or ()) <= _test_functions(name), (name, set(names or ()) - _test_functions(name))
    assert is_quick("test_configs.py", "test_every_autopsy_yaml_instantiates")
    assert not is_quick("test_configs.py", "test_attribution_family_config_runs_end_to_end")
    assert is_quick("test_callback.py", "test_config_typo_fails_at_construction")
    assert not is_quick("test_callback.py", "test_batch_size_one")
    assert not is_quick("test_ddp.py", "test_anything")


def test_marker_selects_the_tier() -> None:
    files = ["tests/test_quiet_logs.py", "tests/test_targets.py"]  # a test left out; a whole file in
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-m", "quick", *files], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ids = [ln for ln in done.stdout.splitlines() if "::" in ln]
    assert "tests/test_quiet_logs.py::test_progress_bar_follows_the_terminal_unless_the_config_sets_it" in ids
    assert not [i for i in ids if "test_demo_piped_to_a_file" in i]
    assert len([i for i in ids if i.startswith("tests/test_targets.py::")]) >= 20, ids


def _command(*args: str) -> list[str]:
    done = subprocess.run(["bash", "scripts/test.sh", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CEREBRO_TEST_ECHO": "1"})
    assert done.returncode == 0, done.stderr
    return shlex.split(done.stdout)


def test_test_sh_passes_its_arguments_to_pytest() -> None:
    assert _command() == ["pytest", "-q"]  # the whole suite, as CI runs it
    assert _command("-x", "tests/test_engine.py") == ["pytest", "-q", "-x", "tests/test_engine.py"]
    assert _command("--quick", "-k", "config and not fuzz", "-x") == [
        "pytest", "-q", "-m", "quick", "-k", "config and not fuzz", "-x"]
    assert _command("tests/test_targets.py", "--quick") == ["pytest", "-q", "tests/test_targets.py", "-m", "quick"]
