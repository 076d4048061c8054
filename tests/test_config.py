"""Config validation: defaults filled, wrong keys and types named, command-line strings coerced."""

from __future__ import annotations

import pytest
import yaml

from vecset.config import ConfigError, load_schema, validate_config

from conftest import REPO

SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")


def test_shipped_config_is_valid_and_complete():
    shipped = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config = validate_config(shipped, SCHEMA)
    assert config == validate_config({}, SCHEMA)  # the shipped file spells out exactly the defaults
    assert list(config["labels"])[:3] == ["myocardium", "left_atrium", "left_ventricle"]
    assert len(config["labels"]) == 10


def test_defaults_are_filled_in_nested_sections():
    config = validate_config({"samples": {"n_volume": 7}}, SCHEMA)
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
    ],
)
def test_wrong_keys_and_types_are_named(config, message):
    with pytest.raises(ConfigError) as info:
        validate_config(config, SCHEMA)
    assert message in str(info.value)


def test_command_line_strings_are_coerced():
    # snakemake --config 'samples={n_volume: 100}' input_dir= ignore_unknown_labels=... passes these shapes
    config = validate_config(
        {"samples": {"n_volume": "100", "near_noise": ["0.01"]}, "input_dir": None, "demo": {"n_cases": "3"}},
        SCHEMA,
    )
    assert config["samples"]["n_volume"] == 100 and config["samples"]["near_noise"] == [0.01]
    assert config["input_dir"] == "" and config["demo"]["n_cases"] == 3


def test_class_count_comes_from_label_map():
    mmwhs = {"myocardium": 205, "left_atrium": 420, "left_ventricle": 500, "aorta": 820}
    assert list(validate_config({"labels": mmwhs}, SCHEMA)["labels"]) == list(mmwhs)


def test_run_settings_merge_overrides_and_name_the_run_on_errors():
    from vecset.train.settings import run_settings

    train = validate_config({}, SCHEMA)["train"]
    run = run_settings(train, {"lr": 5e-4, "items": {"n_vol": 64}, "resources": {"gpus": 4}}, 0, "big")
    assert run["settings"]["lr"] == 5e-4 and run["settings"]["items"]["n_vol"] == 64
    assert run["settings"]["items"]["n_near"] == train["items"]["n_near"]  # deep merge keeps the rest
    assert run["resources"]["gpus"] == 4 and run["settings"]["threads"] == train["resources"]["threads_per_rank"]
    with pytest.raises(ValueError, match=r"runs\.odd: invalid training settings: .*dim_head"):
        run_settings(train, {"model": {"dim_head": 256, "width": 512}}, 0, "odd")
    with pytest.raises(ValueError, match=r"runs\.f3\.fold = 3: needs split\.folds >= 2"):
        run_settings(train, {"fold": 3}, 0, "f3")
    with pytest.raises(ValueError, match="WANDB_API_KEY"):
        run_settings(train, {"wandb": {"mode": "online", "api_key": "x"}}, 0, "leak")
