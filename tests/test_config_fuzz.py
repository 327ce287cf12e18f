"""Property-based fuzzing of the configuration surface (hypothesis).

Property: ``cerebro.runner.build_config(...)`` and ``ModelAutopsy(...)`` either succeed or raise
:class:`cerebro.CerebroConfigError`, whatever the diagnostics list, options, target spec and scalar settings, in
plain Python or as OmegaConf containers (what Hydra passes). Any other exception type is a bug: the user would get a
stack trace instead of a message naming the bad value.

Every crash found while fuzzing is fixed and kept below as a plain regression test with its exact input (see
``test_known_crash_*``). The suite runs a fixed set of examples; ``CEREBRO_FUZZ_EXPLORE=1`` draws new ones. The
generators draw valid values 3 times in 4 (:func:`mostly`) so that examples get past the first check and reach the
option, range and cross-option checks.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

import cerebro
from cerebro import CerebroConfigError, ModelAutopsy
from cerebro.config import layer_diagnostics, parse_diagnostics
from cerebro.registry import get_diagnostic
from cerebro.runner import build_config
from cerebro.targets import build_target

NAMES = cerebro.available_diagnostics()
FIELDS = {n: [f.name for f in dataclasses.fields(get_diagnostic(n).Options)] for n in NAMES}
#: Strings that are valid somewhere (choices, layer names, kinds), so generated configs often get past the first check.
WORDS = ["auto", "zeros", "mean", "data", "gausslegendre", "riemann_right", "bf16", "fp16", "saliency", "vargrad",
         "channels_first", "tokens", "max", "class_token", "module", "default", "target", "conv1", "net.5", "x",
         "predicted", "label", "logit", "probability", "log_probability", "regression", "classification",
         "similarity", "norm", "first", "random", "best", "last", "live", "val", "test", "train", "fit", "cpu",
         "cuda", "cuda:0", "meta", "${nope}", "${oc.env:CEREBRO_FUZZ_UNSET}", "", "1", "nan", "inf", "-1"]
#: Only importable, side-effect-free callables (``_target_`` imports its path); random text is not imported.
SAFE_CALLABLES = ["math.sqrt", "cerebro.targets.build_target", "cerebro.no_such_function", "no_such_module_zz.fn"]

#: The suite draws the same examples every run (derandomized: green run after run, as CI needs). To explore new ones
#: (how the ``faithfulness.methods: [[]]`` crash was found): ``CEREBRO_FUZZ_EXPLORE=1 pytest tests/test_config_fuzz.py``.
EXPLORE = bool(os.environ.get("CEREBRO_FUZZ_EXPLORE"))
FUZZ = settings(max_examples=1000 if EXPLORE else 300, deadline=None, database=None, derandomize=not EXPLORE,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def mostly(valid: st.SearchStrategy[Any], junk: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid values 3 times in 4, so that generated configs also reach the checks after the first one."""
    return st.sampled_from([True, True, True, False]).flatmap(lambda ok: valid if ok else junk)


text = st.text(max_size=12)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), text,
                    st.sampled_from(WORDS))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.one_of(text, st.integers()), inner, max_size=3), max_leaves=6)
names = mostly(st.sampled_from(NAMES), text)


def typed(field: dataclasses.Field) -> st.SearchStrategy[Any]:
    """Values of an option's declared type (its choices, boundaries, NaN), to get past the type check into the
    range and cross-option checks."""
    annotation, choices = str(field.type), field.metadata.get("choices")
    words = st.sampled_from(list(choices)) if choices else st.sampled_from(WORDS) | text
    base = {"int": st.integers(-2, 600), "str": words, "bool": st.booleans(),
            "float": st.floats(-1.0, 2e3) | st.integers(-1, 5) | st.sampled_from([math.nan, math.inf, -math.inf]),
            "Any": st.sampled_from(["auto", 0, 1, 2, 64])}
    inner = next((v for k, v in base.items() if f"[{k}]" in annotation), None)
    if annotation.startswith(("List", "Optional[List")) and inner is not None:
        return st.lists(inner, max_size=3) | st.none()
    plain = next((v for k, v in base.items() if k in annotation), values)
    return plain | st.none() if annotation.startswith("Optional") else plain


TYPED = {n: {f.name: typed(f) for f in dataclasses.fields(get_diagnostic(n).Options)} for n in NAMES}


def options_for(name: str) -> st.SearchStrategy[dict[Any, Any]]:
    fields = TYPED.get(name, {})
    known = st.fixed_dictionaries({}, optional={k: mostly(v, values) for k, v in fields.items()})
    return mostly(known, st.dictionaries(mostly(st.sampled_from(list(fields)), text) if fields else text, values,
                                         max_size=3))


def entry_for(name: str) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(name), st.fixed_dictionaries({name: mostly(options_for(name), st.one_of(
        st.booleans(), st.none(), values))}))


named_entry = names.flatmap(entry_for)
diagnostics = st.one_of(
    st.none(),
    names,
    st.lists(mostly(named_entry, values), max_size=4),
    st.lists(names.flatmap(lambda n: st.tuples(st.just(n), mostly(options_for(n), st.one_of(
        st.booleans(), st.none(), values)))), max_size=4).map(dict),
    values,
)
#: A preset's diagnostics (autopsy.preset_diagnostics): a mapping of names to options, or junk.
presets = mostly(st.lists(names.flatmap(lambda n: st.tuples(st.just(n), mostly(options_for(n), st.one_of(
    st.booleans(), st.none(), values)))), max_size=4).map(dict), st.one_of(st.none(), values))
target_keys = mostly(st.sampled_from(["kind", "class", "score", "index", "reference", "reference_input"]), text)
target_values = st.one_of(st.sampled_from(WORDS), st.integers(-2, 5), values)
targets = st.one_of(
    st.sampled_from(["regression", "classification", "similarity", "norm"]),
    text,
    st.fixed_dictionaries({"kind": mostly(st.sampled_from(["regression", "classification", "similarity", "norm"]),
                                          values)},
                          optional={k: target_values for k in ("class", "score", "index", "reference_input")}),
    st.dictionaries(target_keys, target_values, max_size=4),
    st.fixed_dictionaries({"_target_": st.one_of(st.sampled_from(SAFE_CALLABLES), st.integers(), st.none())},
                          optional={"scale": values, "": values}),
    values,
)

ints_or_junk = mostly(st.integers(min_value=1, max_value=10**6), st.one_of(st.integers(), values))
budgets = mostly(st.none(), st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                                      values))
keys = mostly(st.none(), st.one_of(st.integers(-3, 3), text, values))
seconds = mostly(st.none(), st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), values))
eeg = mostly(st.none(), st.one_of(
    st.fixed_dictionaries({}, optional={
        "channel_names": st.one_of(st.lists(st.one_of(st.sampled_from(["Cz", "Pz", "E1", "Fz"]), text, st.integers()),
                                            max_size=4), st.sampled_from(["", "/", "no_such_file.txt"]), values),
        "sfreq": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), values),
        "montage": st.one_of(st.sampled_from(["standard_1020", "GSN-HydroCel-129", "standard_1O20"]), values)}),
    st.dictionaries(text, values, max_size=2), values,
))
build_kwargs = st.fixed_dictionaries({}, optional={
    "diagnostics": diagnostics, "target": targets, "max_samples": ints_or_junk,
    "batch_size": mostly(st.none(), ints_or_junk),
    "sampling": mostly(st.sampled_from(["first", "random"]), values), "seed": ints_or_junk,
    "fail_on_error": mostly(st.booleans(), values), "input_key": keys, "target_key": keys,
    "memory_budget_mb": budgets, "eeg": eeg, "time_budget_s": seconds, "total_time_budget_s": seconds,
    "resume": mostly(st.booleans(), values),
})


def maybe_omegaconf(value: Any, wrap: bool) -> Any:
    """The same value as Hydra would pass it (a DictConfig/ListConfig), when OmegaConf can hold it."""
    if not wrap or not isinstance(value, (dict, list)):
        return value
    try:
        return OmegaConf.create(value)
    except Exception:  # noqa: BLE001 - OmegaConf cannot hold every Python value; then the plain value is used
        return value


def accepts_or_config_error(fn: Any, **kwargs: Any) -> None:
    # Only the keyword arguments this version of ``fn`` takes (the API grows; a missing one is not the property).
    params = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in kwargs.items() if k in params}
    try:
        fn(**kwargs)
    except CerebroConfigError as err:
        assert str(err)  # a message, never an empty error


@FUZZ
@given(kwargs=build_kwargs, wrap=st.booleans())
def test_build_config_accepts_or_raises_config_error(kwargs: dict[str, Any], wrap: bool) -> None:
    for key in ("diagnostics", "target"):
        if key in kwargs:
            kwargs[key] = maybe_omegaconf(kwargs[key], wrap)
    accepts_or_config_error(build_config, **kwargs)


@FUZZ
@given(spec=diagnostics, wrap=st.booleans())
@example(spec={"faithfulness": {"methods": [[]]}}, wrap=False)  # found by this test: a TypeError (unhashable name)
def test_parse_diagnostics_accepts_or_raises_config_error(spec: Any, wrap: bool) -> None:
    accepts_or_config_error(parse_diagnostics, spec=maybe_omegaconf(spec, wrap))


def test_faithfulness_methods_that_are_not_names_name_the_option() -> None:
    for bad in ([[]], [{"saliency": {}}], ["saliancy"]):
        with pytest.raises(CerebroConfigError, match=r"`faithfulness.methods` can be one of \[.*'saliency'"):
            parse_diagnostics({"faithfulness": {"methods": bad}})


@FUZZ
@given(spec=diagnostics, preset=presets, wrap=st.booleans())
def test_layered_diagnostics_accept_or_raise_config_error(spec: Any, preset: Any, wrap: bool) -> None:
    """A user's diagnostics laid over a preset's (what Hydra configs pass ModelAutopsy), then parsed."""
    def layered(spec: Any, preset: Any) -> Any:
        return parse_diagnostics(layer_diagnostics(spec, preset))

    accepts_or_config_error(layered, spec=maybe_omegaconf(spec, wrap), preset=maybe_omegaconf(preset, wrap))


@FUZZ
@given(spec=targets, wrap=st.booleans())
def test_build_target_accepts_or_raises_config_error(spec: Any, wrap: bool) -> None:
    accepts_or_config_error(build_target, spec=maybe_omegaconf(spec, wrap))


callback_kwargs = st.fixed_dictionaries({}, optional={
    "diagnostics": diagnostics, "target": targets, "max_samples": ints_or_junk,
    "sampling": mostly(st.sampled_from(["first", "random"]), values),
    "checkpoint": mostly(st.sampled_from(["best", "last", "live", "model.ckpt"]), st.one_of(text, values)),
    "split": mostly(st.sampled_from(["val", "test", "train"]), values),
    "run_on": mostly(st.sampled_from(["fit", "test", ("fit", "test")]),
                     st.one_of(text, scalars, st.lists(st.one_of(text, scalars), max_size=3).map(tuple))),
    "output_dir": mostly(st.none(), st.one_of(text, values)),
    "device": mostly(st.sampled_from([None, "cpu"]), st.one_of(
        st.sampled_from(["cuda", "cuda:0", "cpu:0", "gpu", ""]), text, st.integers(-2, 2), st.integers(),
        st.floats(allow_nan=True), st.booleans())),
    "memory_budget_mb": budgets,
    "input_key": keys,
    "eeg": eeg,
    "every_n_epochs": mostly(st.none(), st.one_of(st.integers(-1, 3), values)),
    "periodic_diagnostics": diagnostics,
    "periodic_max_samples": ints_or_junk,
    "preset_diagnostics": presets,
    "time_budget_s": seconds,
    "total_time_budget_s": seconds,
    "resume": mostly(st.booleans(), values),
})


@FUZZ
@given(kwargs=callback_kwargs)
def test_model_autopsy_construction_accepts_or_raises_config_error(kwargs: dict[str, Any]) -> None:
    accepts_or_config_error(ModelAutopsy, **kwargs)


# -- crashes the fuzzer found, fixed in cerebro/{errors,config,targets,samples}.py and diagnostics/base.py ---------
@pytest.mark.parametrize(
    ("call", "expected"),
    [
        # errors.suggest ran difflib over choices holding None: TypeError: object of type 'NoneType' has no len()
        (lambda: parse_diagnostics([{"integrated_gradients": {"autocast": "fp8"}}]),
         "`integrated_gradients.autocast` can be one of [None, 'bf16', 'fp16'], got 'fp8'. Did you mean 'fp16'?"),
        # OmegaConf's float conversion: OverflowError: int too large to convert to float
        (lambda: parse_diagnostics([{"activations": {"dead_fraction": 10**400}}]),
         "activations.dead_fraction: OverflowError: int too large to convert to float"),
        # build_target looked an unhashable kind up in a dict: TypeError: unhashable type: 'list' / 'dict'
        (lambda: build_target({"kind": ["x"]}), "`target.kind` can be one of"),
        (lambda: build_target({"kind": {"a": 1}}), "`target.kind` can be one of"),
        # os.path.isfile([1]): TypeError: stat: path should be string, bytes, os.PathLike or integer, not list
        (lambda: build_target({"kind": "similarity", "reference": [1]}),
         "`target.reference` must be a path to a .npy/.pt file, got [1]"),
        # an int reference was stat()ed as a file descriptor
        (lambda: build_target({"kind": "similarity", "reference": 3}), "`target.reference` must be a path"),
        # unresolvable interpolations in Hydra containers escaped as omegaconf InterpolationKeyError
        (lambda: parse_diagnostics(OmegaConf.create({"predictions": "${nope}"})),
         "`diagnostics`: Interpolation key 'nope' not found"),
        (lambda: get_diagnostic("layer_gradcam")(OmegaConf.create({"layer": "${nope}"})),
         "options of diagnostic 'layer_gradcam': Interpolation key 'nope' not found"),
        (lambda: build_target(OmegaConf.create({"kind": "${nope}"})), "`target`: Interpolation key 'nope' not found"),
    ],
    ids=["choice_with_none", "float_overflow", "unhashable_kind_list", "unhashable_kind_dict", "reference_list",
         "reference_int", "diagnostics_interpolation", "options_interpolation", "target_interpolation"],
)
def test_fuzz_regressions_raise_config_errors(call: Any, expected: str) -> None:
    with pytest.raises(CerebroConfigError) as info:
        call()
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # accepted silently before: NaN passes every `min` check (nan < 0 is False)
        ({"diagnostics": [{"activations": {"dead_fraction": float("nan")}}]},
         "`activations.dead_fraction` must be a number, got nan"),
        ({"diagnostics": [{"attention_rollout": {"discard_ratio": float("nan")}}]},
         "`attention_rollout.discard_ratio` must be a number, got nan"),
        # accepted silently before, failed only when the batches were read
        ({"target": {"kind": "similarity", "reference_input": 1.5}},
         "`target.reference_input` must be a tuple position"),
        ({"input_key": [1]}, "`input_key` must be a tuple position (int), a dict key (str) or None, got [1]"),
        ({"target_key": True}, "`target_key` must be a tuple position (int), a dict key (str) or None, got True"),
        # a partial with non-string keywords failed only when called
        ({"target": {"_target_": "math.sqrt", 1: 2}}, "takes keyword arguments, got keys [1]"),
    ],
    ids=["nan_float_option", "nan_discard_ratio", "reference_input_float", "input_key_list", "target_key_bool",
         "callable_target_int_kwarg"],
)
def test_values_accepted_before_now_rejected_at_construction(kwargs: dict[str, Any], expected: str) -> None:
    with pytest.raises(CerebroConfigError) as info:
        build_config(**kwargs)
    assert expected in str(info.value)


def test_true_means_defaults_in_list_form_as_in_mapping_form() -> None:
    # The mapping form documents `true` = default options; the list form rejected it ("must be a mapping, got True").
    as_list = parse_diagnostics([{"predictions": True}, {"integrated_gradients": True}, {"gradients": False}])
    as_map = parse_diagnostics({"predictions": True, "integrated_gradients": True, "gradients": False})
    assert [d.config() for d in as_list] == [d.config() for d in as_map]
    assert [d.name for d in as_list] == ["predictions", "integrated_gradients"]


def test_inf_is_still_a_valid_threshold() -> None:
    # Only NaN is rejected: inf is a meaningful threshold ("never flag exploding gradients").
    diag, = parse_diagnostics([{"gradients": {"exploding": float("inf")}}])
    assert diag.options.exploding == float("inf")


# -- crashes the fuzzer found, fixed: each exact input keeps a regression test ---------------------------------
@pytest.mark.parametrize("budget", ["10", [1]])
def test_known_crash_memory_budget_of_wrong_type(budget: Any) -> None:
    with pytest.raises(CerebroConfigError, match="`memory_budget_mb` must be a positive number or None"):
        build_config(["predictions"], memory_budget_mb=budget)


@pytest.mark.parametrize("run_on", [3, None])
def test_known_crash_run_on_not_iterable(run_on: Any) -> None:
    with pytest.raises(CerebroConfigError, match="run_on"):
        ModelAutopsy(diagnostics=["predictions"], run_on=run_on)


def test_known_crash_device_index_overflow() -> None:
    with pytest.raises(CerebroConfigError, match="`device` must be None, 'auto' or a torch device"):
        ModelAutopsy(diagnostics=["predictions"], device=10**30)


def test_known_crash_eeg_channel_file_with_nul() -> None:
    with pytest.raises(CerebroConfigError, match="eeg.channel_names"):
        build_config(["predictions"], eeg={"channel_names": "names\x00.txt"})


def test_known_crash_eeg_unresolvable_interpolation() -> None:
    with pytest.raises(CerebroConfigError, match="Interpolation key 'nope' not found"):
        build_config(["predictions"], eeg=OmegaConf.create({"sfreq": "${nope}"}))
