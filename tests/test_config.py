"""The run-config schema: strict validation with messages that name the field, and the documented reference."""

from pathlib import Path

import pytest

from redwhale.config import RunConfig, load_config, parse_config, reference, to_yaml
from redwhale.config.base import Section
from redwhale.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def problems(data) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


def test_defaults_resolve():
    cfg = RunConfig()
    assert cfg.model.base == "smollm2-135m"
    assert cfg.model.trust_remote_code is False


def test_unknown_key_names_it_and_suggests_the_nearest():
    message = problems({"model": {"bsae": "gpt2"}})
    assert "model.bsae: unknown key (did you mean 'base'?)" in message


def test_unknown_top_level_key():
    assert "modle: unknown key (did you mean 'model'?)" in problems({"modle": {}})


def test_wrong_type_names_the_field():
    message = problems({"seed": "7"})
    assert message.startswith("config: 1 problem: seed:")
    assert "integer" in message


def test_every_problem_is_reported_at_once():
    message = problems({"seed": -1, "model": {"dtype": "fp8", "trust_remote_code": "yes"}})
    assert "3 problems" in message
    assert "seed:" in message and "model.dtype:" in message and "model.trust_remote_code:" in message


def test_list_items_are_located_by_index():
    message = problems({"corpus": {"inputs": [{"path": "a.jsonl"}, {"path": "b.jsonl", "fromat": "jsonl"}]}})
    assert "corpus.inputs[1].fromat: unknown key (did you mean 'format'?)" in message


def test_missing_required_field():
    assert "corpus.inputs[0].path: required field is missing" in problems({"corpus": {"inputs": [{}]}})


def test_cross_field_rule_checked_at_load():
    assert "revision applies to Hub ids only" in problems({"model": {"base": "x.gguf", "revision": "main"}})


def test_bad_run_name():
    assert "name:" in problems({"name": "../escape"})


def test_yaml_errors_are_one_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  base: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML \(line"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listing)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_show_round_trips(tmp_path):
    cfg = parse_config({"name": "demo", "model": {"base": "some/model"}})
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


def _sections(model, seen=None):
    seen = set() if seen is None else seen
    if model in seen:
        return seen
    seen.add(model)
    import typing

    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            item = stack.pop()
            if isinstance(item, type) and issubclass(item, Section):
                _sections(item, seen)
            stack.extend(typing.get_args(item))
    return seen


def test_every_field_has_a_description():
    for section in _sections(RunConfig):
        for name, field in section.model_fields.items():
            assert field.description, f"{section.__name__}.{name} has no description"


def test_reference_config_is_in_sync_and_valid():
    committed = (REPO / "configs" / "reference.yaml").read_text(encoding="utf-8")
    assert committed == reference(), "configs/reference.yaml is stale: run `redwhale config reference`"
    load_config(REPO / "configs" / "reference.yaml")


def test_init_comparison_auto_runs_only_when_the_budget_dwarfs_it():
    from redwhale.config.schema import COMPARE_BUDGET_FACTOR, COMPARED_METHODS, ExtendSection

    section = ExtendSection(eval_chars=1000)
    scored = (len(COMPARED_METHODS) + 1) * 2 * 1000
    methods, why = section.compared_methods(COMPARE_BUDGET_FACTOR * scored - 1)
    assert methods == [] and why.startswith("skipped")
    assert section.compared_methods(COMPARE_BUDGET_FACTOR * scored)[0] == list(COMPARED_METHODS)
    assert ExtendSection(compare=["mean"]).compared_methods(1) == (["mean"], "extend.compare is set")
    assert ExtendSection(compare=[]).compared_methods(10**12)[0] == []
