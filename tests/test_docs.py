"""The documentation stays true to the repository: no dead links, a short README, every config key documented.

- every relative link of ``README.md`` and ``docs/*.md`` names a file that exists, and its ``#anchor`` a heading
  of the target (GitHub's slugs);
- the README stays a front door (at most 220 lines);
- every key of ``configs/**/*.yaml`` (full dotted keys) is documented in ``docs/configuration.md`` or
  ``docs/diagnostics.md``, and every option of every diagnostic (in the YAML sets and in the code's ``Options``)
  in that diagnostic's section of ``docs/diagnostics.md``;
- every registered diagnostic has a row in the README's diagnostics table.

Plain text checks: no model and no torch work.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import cerebro
from cerebro.registry import get_diagnostic

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
REFERENCE = [DOCS / "configuration.md", DOCS / "diagnostics.md"]
MAX_README_LINES = 220

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The text without fenced code blocks (a link or heading inside code is not one)."""
    return _FENCE.sub("", text)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text (no markup) lower-cased, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading reads as its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for _, heading in _HEADING.findall(_prose(page.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")  # GitHub numbers repeated headings
    return anchors


def _links(page: Path) -> list[str]:
    return _LINK.findall(_prose(page.read_text(encoding="utf-8")))


def test_slug_follows_github() -> None:
    assert _slug("The callback's keys") == "the-callbacks-keys"
    assert _slug("`layer_gradcam`") == "layer_gradcam"
    assert _slug("Why Captum \"crashed\" on `(batch, 1)` outputs") == "why-captum-crashed-on-batch-1-outputs"
    assert _slug("Found by the fuzzer and the matrix, now fixed") == "found-by-the-fuzzer-and-the-matrix-now-fixed"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    dead = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not checked offline
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            dead.append(f"{target} (no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest})")
        elif anchor and (dest.suffix != ".md" or anchor not in _anchors(dest)):
            dead.append(f"{target} (no heading #{anchor} in {dest.relative_to(REPO)})")
    assert not dead, f"dead links in {page.relative_to(REPO)}: {dead}"


def test_docs_link_to_each_other() -> None:
    """The README links every docs page, so none is an orphan."""
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in _links(README)}
    orphans = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not orphans, f"docs pages the README does not link: {orphans}"


def test_readme_is_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move reference material into docs/")
    text = "\n".join(lines)
    # the two commands of the quick start, exactly as the scripts are called
    assert "bash scripts/demo.sh" in text and "bash scripts/test.sh" in text
    assert "docs/images/report.png" in text


# --- config keys ----------------------------------------------------------------------------------------------------

def _walk(mapping: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        yield path, value
        if isinstance(value, dict):
            yield from _walk(value, f"{path}.")


def _diagnostic_entries(value: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(name, options)`` of a diagnostics mapping (``name: false`` switches one off) or list."""
    if isinstance(value, dict):
        for name, options in value.items():
            if name != "defaults":
                yield name, options if isinstance(options, dict) else {}
    elif isinstance(value, list):
        for entry in value:
            if isinstance(entry, str):
                yield entry, {}
            elif isinstance(entry, dict):
                for name, options in entry.items():
                    yield name, options if isinstance(options, dict) else {}


def _config_keys() -> tuple[dict[str, set[str]], dict[str, set[tuple[str, str]]]]:
    """Every dotted key per YAML file, and every ``(diagnostic, option)`` per file.

    Files in ``configs/autopsy/preset_diagnostics/`` are the presets' diagnostics. In the other files, the keys of the callback
    (``configs/autopsy/*.yaml``, and ``autopsy.*`` in the script and demo configs, where the ``autopsy.`` prefix is
    dropped) are callback keys; ``diagnostics`` and ``preset_diagnostics`` under them hold diagnostic options. ``defaults`` lists are Hydra's.
    """
    keys: dict[str, set[str]] = {}
    options: dict[str, set[tuple[str, str]]] = {}
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        rel = str(path.relative_to(REPO))
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        found_keys, found_options = keys.setdefault(rel, set()), options.setdefault(rel, set())
        if path.parent.name == "preset_diagnostics":
            found_options.update((n, o) for n, opts in _diagnostic_entries(data) for o in opts)
            found_keys.update(n for n, _ in _diagnostic_entries(data))
            continue
        in_autopsy_group = path.parent.name == "autopsy"
        for key, value in _walk({k: v for k, v in data.items() if k != "defaults"}):
            callback_key = key if in_autopsy_group else key.removeprefix("autopsy.") if key.startswith("autopsy.") else None
            head = None if callback_key is None else callback_key.split(".")[0]
            if head in ("diagnostics", "preset_diagnostics"):  # diagnostic options (the user's, or a preset's)
                if callback_key == head:
                    for name, opts in _diagnostic_entries(value):
                        found_keys.add(name)
                        found_options.update((name, o) for o in opts)
                continue
            found_keys.add(callback_key if callback_key is not None else key)
    return keys, options


def _sections(page: Path) -> dict[str, str]:
    """``{name: text}`` of every heading that is exactly a code name (``### `integrated_gradients` ``), the text
    running to the next heading of the same or a higher level (sub-headings stay inside)."""
    text = _prose(page.read_text(encoding="utf-8"))
    heads = [(m.start(), len(m.group(1)), m.group(2)) for m in _HEADING.finditer(text)]
    out = {}
    for i, (start, level, title) in enumerate(heads):
        name = re.fullmatch(r"`([\w.]+)`", title)
        if name is None:
            continue
        end = next((s for s, lv, _ in heads[i + 1:] if lv <= level), len(text))
        out[name.group(1)] = text[start:end]
    return out


def test_every_config_key_is_documented() -> None:
    reference = "\n".join(p.read_text(encoding="utf-8") for p in REFERENCE)
    keys, _ = _config_keys()
    assert keys["configs/autopsy/default.yaml"] >= {"checkpoint", "eeg.sfreq", "tokens.baseline"}
    assert "integrated_gradients" in keys["configs/autopsy/preset_diagnostics/default.yaml"]
    assert {"data.n_train", "autopsy", "output_dir", "hydra.run.dir"} <= keys["configs/demo.yaml"]
    missing = sorted(f"{key} ({rel})" for rel, found in keys.items() for key in found if f"`{key}`" not in reference)
    assert not missing, ("config keys not documented (as `key`) in docs/configuration.md or docs/diagnostics.md: "
                         + ", ".join(missing))


def test_every_diagnostic_option_is_documented_in_its_section() -> None:
    sections = _sections(DOCS / "diagnostics.md")
    _, options = _config_keys()
    wanted = {(n, o): rel for rel, found in options.items() for n, o in found}
    for name in sorted(_builtin_diagnostics()):  # the code's options too, including those no YAML set shows
        schema = get_diagnostic(name).Options
        for f in dataclasses.fields(schema):
            wanted.setdefault((name, f.name), f"{name}'s Options")
    assert ("integrated_gradients", "n_steps") in wanted and ("faithfulness", "steps") in wanted
    missing = sorted(f"{n}.{o} ({where})" for (n, o), where in wanted.items()
                     if n not in sections or f"`{o}`" not in sections[n])
    assert not missing, ("diagnostic options not documented (as `option` under the diagnostic's `### `name`` "
                         "heading) in docs/diagnostics.md: " + ", ".join(missing))


def _builtin_diagnostics() -> set[str]:
    """The diagnostics cerebro itself registers (tests register their own, e.g. tests/test_sanity_checks.py's
    ``edge_detector``, in the same process)."""
    from cerebro.registry import get_diagnostic

    return {n for n in cerebro.available_diagnostics() if get_diagnostic(n).__module__.startswith("cerebro.")}


def test_every_registered_diagnostic_is_in_the_readme_table() -> None:
    rows = re.findall(r"^\|\s*`(\w+)`\s*\|", README.read_text(encoding="utf-8"), re.M)
    builtins = _builtin_diagnostics()
    missing = sorted(builtins - set(rows))
    assert not missing, f"registered diagnostics missing from the README's diagnostics table: {missing}"
    unknown = sorted(set(rows) - builtins)
    assert not unknown, f"the README's diagnostics table lists unregistered names: {unknown}"
