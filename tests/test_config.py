"""Config validation: every key declared once, defaults filled, wrong keys and types named, command-line strings
coerced, runs resolved once."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml
from snakemake.common.configfile import load_configfile

from vecset import settings as declared
from vecset.config import ConfigError, config_schema, read_config_files, resolve_runs, schema_yaml, validate_config
from vecset.snakemake_adapter import coerce_command_line

from conftest import REPO


def test_committed_configuration_reference_is_the_one_derived_from_the_declarations():
    from vecset.config import configuration_markdown

    committed = (REPO / "docs/configuration.md").read_text()
    assert committed == configuration_markdown(), "regenerate it: python -m vecset.config docs > docs/configuration.md"
    for key in ("`eval.partition`", "`train.weights.exclusion`", "`train.resources.nodes`", "`split.folds`"):
        assert key in committed, key


def test_committed_schema_is_the_one_derived_from_the_declarations():
    committed = (REPO / "workflow/schemas/config.schema.yaml").read_text()
    assert committed == schema_yaml(), (
        "regenerate it: python -m vecset.config schema > workflow/schemas/config.schema.yaml"
    )


def _sections(cls=declared.Config):
    yield cls
    for hint in typing.get_type_hints(cls).values():
        if dataclasses.is_dataclass(hint):
            yield from _sections(hint)


def test_every_declared_key_has_a_description_and_every_enum_comes_from_its_literal_type():
    for cls in [*_sections(), declared.ModelConfig]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "n_classes":  # from the label map, not a config key
                continue
            assert f.metadata.get("description"), f"{cls.__name__}.{f.name} has no description"
            if typing.get_origin(hints[f.name]) is typing.Literal:
                assert f.default in typing.get_args(hints[f.name]), f"{cls.__name__}.{f.name}"
    assert set(declared.PRESETS) == set(typing.get_args(declared.Preset))
    assert config_schema()["properties"]["samples"]["properties"]["sign"]["enum"] == list(declared.SIGN_METHODS)


def test_shipped_config_is_valid_and_complete():
    shipped = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config = validate_config(shipped)
    assert config == validate_config({}), "a value in config/config.yaml differs from its declared default"
    assert list(config["labels"])[:3] == ["myocardium", "left_atrium", "left_ventricle"]
    assert len(config["labels"]) == 10


def test_ablation_runs_resolve_and_demo_is_the_shipped_default():
    # Loaded as Snakemake loads a --configfile (its rows share settings through YAML merge keys).
    shipped = yaml.safe_load((REPO / "config/config.yaml").read_text())
    runs = resolve_runs(validate_config(shipped | load_configfile(str(REPO / "config/ablations.yaml"))))
    defaults = resolve_runs(validate_config(shipped))["demo"].train
    assert runs["demo"].train == defaults
    # Every other row changes something (a row equal to the default measures nothing new).
    assert all(run.train != defaults for name, run in runs.items() if name != "demo")
    before = runs["no_augment"].train
    assert (before.items.rotate_deg, before.items.scale_jitter, before.adam_beta2) == (0, 0, 0.999)
    assert runs["ff_thin_x3"].train.items.rotate_deg == 0 and runs["ff_thin_x3"].train.items.n_near == 384


def test_defaults_are_filled_in_nested_sections():
    config = validate_config({"samples": {"n_volume": 7}})
    assert config["samples"]["n_volume"] == 7
    assert config["samples"]["n_surface"] == 100000
    assert config["demo"]["n_cases"] == 40
    assert config["train"]["items"]["n_input"] == 1024 and config["runs"] == {"demo": {}}
    assert config["input_dir"] == ""


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sample": {}}, "'sample' was unexpected"),
        ({"samples": {"n_volum": 5}}, "config key 'samples': Additional properties"),
        ({"samples": {"n_volume": "many"}}, "config key 'samples.n_volume': 'many' is not of type 'integer'"),
        ({"labels": {"aorta": 0}}, "config key 'labels.aorta'"),
        ({"labels": {"aorta": 6, "pa": 6}}, "raw values must be unique"),
        ({"exclude": "case1"}, "config key 'exclude'"),
        ({"normalisation": {"fit": 1.2}}, "config key 'normalisation.fit'"),
        ({"input_pattern": "labels.nii.gz"}, "config key 'input_pattern'"),
        ({"eval": {"fit_steps": 100_000_000}}, "'eval.fit_steps': 100000000 is greater than the maximum of 10000"),
        ({"eval": {"max_resolution": 100_000}}, "'eval.max_resolution': 100000 is greater than the maximum of 1024"),
        ({"mesh": {"max_voxels": 0}}, "'mesh.max_voxels': 0 is less than the minimum of 1"),
        ({"train": {"keep_states": -1}}, "'train.keep_states': -1 is less than the minimum of 0"),
    ],
)
def test_wrong_keys_and_types_are_named(config, message):
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert message in str(info.value)


def test_command_line_strings_are_coerced():
    # snakemake --config 'samples={n_volume: 100}' input_dir= ignore_unknown_labels=... passes these shapes
    given = {"samples": {"n_volume": "100", "near_noise": ["0.01"]}, "input_dir": None, "demo": {"n_cases": "3"}}
    given |= {"runs": {"big": {"lr": "5e-4", "resources": {"gpus": "4"}}}}
    config = validate_config(coerce_command_line(config_schema(), given))
    assert config["samples"]["n_volume"] == 100 and config["samples"]["near_noise"] == [0.01]
    assert config["input_dir"] == "" and config["demo"]["n_cases"] == 3
    assert config["runs"]["big"] == {"lr": 5e-4, "resources": {"gpus": 4}}


def test_nullable_numbers_are_coerced_from_the_command_line():
    """--config 'train={max_steps: 100}' arrives as a string for a key typed integer-or-null."""
    given = {"train": {"max_steps": "100", "seed": "7", "num_workers": "~"}, "eval": {"spacing_mm": "0.5"}}
    given["train"]["wandb"] = {"entity": "null", "project": "null"}
    given["runs"] = {"short": {"max_steps": "20", "seed": "null"}}
    config = validate_config(coerce_command_line(config_schema(), given))
    assert config["train"]["max_steps"] == 100 and config["train"]["seed"] == 7
    assert config["train"]["num_workers"] is None and config["eval"]["spacing_mm"] == 0.5
    assert config["train"]["wandb"]["entity"] is None and config["train"]["wandb"]["project"] == "null"
    assert config["runs"]["short"] == {"max_steps": 20, "seed": None}


def test_class_count_comes_from_label_map():
    mmwhs = {"myocardium": 205, "left_atrium": 420, "left_ventricle": 500, "aorta": 820}
    assert list(validate_config({"labels": mmwhs})["labels"]) == list(mmwhs)


def test_runs_merge_their_overrides_once_and_are_named_on_errors():
    config = validate_config({"runs": {"big": {"lr": 5e-4, "items": {"n_vol": 64}, "resources": {"gpus": 4}}}})
    big = resolve_runs(config)["big"]
    assert big.train.lr == 5e-4 and big.train.items.n_vol == 64 and big.fold is None
    assert big.train.items.n_near == config["train"]["items"]["n_near"]  # deep merge keeps the rest
    assert big.train.resources.gpus == 4 and big.train.resources.ranks_per_node == 4
    assert big.train.resources.cpus_per_rank == config["train"]["resources"]["cpus_per_rank"]
    with pytest.raises(ConfigError, match=r"config key 'runs\.odd\.model\.dim_head': 256 is greater than"):
        validate_config({"runs": {"odd": {"model": {"dim_head": 256, "width": 512}}}})
    with pytest.raises(ConfigError, match=r"runs\.odd: invalid training settings: width 100 is not a multiple of"):
        resolve_runs(validate_config({"runs": {"odd": {"model": {"dim_head": 64, "width": 100}}}}))
    with pytest.raises(ConfigError, match=r"runs\.f3\.fold = 3: needs split\.folds >= 2"):
        resolve_runs(validate_config({"runs": {"f3": {"fold": 3}}}))
    with pytest.raises(ConfigError, match=r"config key 'runs\.typo': Additional properties .*'epoch' was unexpected"):
        validate_config({"runs": {"typo": {"epoch": 3}}})


def test_label_values_must_be_whole_numbers_written_as_such_and_fit_int32():
    with pytest.raises(ConfigError, match=r"'labels\.myocardium': 1\.0 must be written as a whole number \(1\)"):
        validate_config({"labels": {"myocardium": 1.0, "aorta": 6}})
    with pytest.raises(ConfigError, match=r"'labels\.aorta': 18446744073709551616 is greater than the maximum"):
        validate_config({"labels": {"myocardium": 1, "aorta": 2**64}})


def test_a_config_file_with_a_python_tag_is_refused_by_name(tmp_path):
    """yaml.safe_load refuses the tag (no code runs); the line names the file and the cause, not a traceback."""
    bad = tmp_path / "bad.yaml"
    bad.write_text('demo:\n  n_cases: !!python/object/apply:os.system ["echo ran"]\n')
    with pytest.raises(ConfigError, match=r"bad\.yaml: not a readable YAML config \(.*python/object/apply"):
        read_config_files(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="holds a mapping of keys, not list"):
        read_config_files(listed)


def test_every_declared_bound_is_checked_when_settings_are_made():
    """Each bound in a field's metadata (what the schema says) refuses a value just past it, naming the field,
    whether the settings come from a config file or are made in code."""
    import dataclasses

    from vecset import settings as declared

    checked = 0
    for cls in [c for c in vars(declared).values() if dataclasses.is_dataclass(c) and issubclass(c, declared.Declared)]:
        for f in dataclasses.fields(cls):
            schema = f.metadata.get("schema", {})
            for key, past in (("minimum", -1), ("exclusiveMinimum", 0), ("maximum", 1), ("exclusiveMaximum", 0)):
                if key not in schema or not isinstance(f.default, int | float) or isinstance(f.default, bool):
                    continue
                value = schema[key] + past * (0.5 if isinstance(f.default, float) else 1)
                kwargs = {"n_classes": 3} if cls is declared.ModelConfig else {}
                with pytest.raises(ValueError, match=rf"^{f.name} must be "):
                    cls(**kwargs, **{f.name: type(f.default)(value)})
                checked += 1
    assert checked >= 40, checked


def test_each_eval_setting_declares_the_rules_it_reruns():
    """The rules' params come from the declarations (setting(reruns=...)): every eval setting names its rules; a
    reconstruction setting reruns evaluate and the oracle, an encoding one encode too, render_cases the plots only."""
    import dataclasses

    from vecset.settings import EvalSettings, as_dict, rule_params

    settings = EvalSettings()
    assert all(f.metadata["reruns"] for f in dataclasses.fields(EvalSettings))
    encoding = {"batch_size", "precision", "fit_steps", "fit_lr", "fit_points", "fit_proximal"}
    assert set(rule_params(settings, "encode")) == encoding
    assert set(rule_params(settings, "evaluate")) == set(as_dict(settings)) - {"render_cases"}
    assert rule_params(settings, "oracle") == rule_params(settings, "evaluate")
    assert rule_params(settings, "plots") == {"render_cases": settings.render_cases}
