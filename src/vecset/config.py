"""A config file checked against the declarations in :mod:`vecset.settings`, and turned into typed settings.

``config_schema()`` derives a JSON Schema (2020-12) from the dataclasses: types from the annotations,
``enum`` from ``Literal`` types, defaults from the field defaults, bounds and descriptions from the field
metadata, ``additionalProperties: false`` everywhere, and each run's overrides checked key by key against the
train section. ``validate_config`` fills the defaults and names every wrong key (``vecset.settings.build``
then makes the typed objects); ``resolve_runs`` applies each run's overrides once.

    python -m vecset.config schema > workflow/schemas/config.schema.yaml     # the committed copy, for editors
    python -m vecset.config docs > docs/configuration.md                     # every key, for readers
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from vecset.settings import RUN_PATTERN, Config, RunSettings, TrainSettings, build


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what was expected."""


# --- the schema, derived from the declarations ------------------------------------------------------------


def _type_schema(hint: Any, defaults: bool) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return {"type": [_SCALARS[inner], "null"]}
    if origin is tuple:
        return {"type": "array", "items": _type_schema(args[0], defaults)}
    if origin is dict:
        return {"type": "object"}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _object_schema(hint, defaults)
    raise TypeError(f"no JSON-schema mapping for the settings type {hint!r}")


_SCALARS = {bool: "boolean", int: "integer", float: "number", str: "string"}
FOLD_SCHEMA = {"description": "The run's validation fold (needs split.folds >= 2).", "type": "integer", "minimum": 0}


def _default(f: dataclasses.Field, hint: Any) -> Any:
    """A field's default as YAML and JSON see it: {} for a section (its own fields carry the defaults)."""
    if dataclasses.is_dataclass(hint):
        return {}
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return list(value) if isinstance(value, tuple) else value


def _field_schema(f: dataclasses.Field, hint: Any, defaults: bool) -> dict[str, Any]:
    extra = dict(f.metadata["schema"])
    overrides, runs = extra.pop("overrides", None), extra.pop("runs", None)
    schema = {"description": f.metadata["description"]} | _type_schema(hint, defaults)
    if "items" in extra:
        schema["items"] |= extra.pop("items")
    schema |= extra
    if overrides is not None:  # another dataclass's fields, all optional: a preset supplies the rest
        schema |= _object_schema(overrides, defaults=False, skip=("n_classes",))
    if runs is not None:  # run name → any of that section's keys (the section supplies the rest), and fold
        entry = _object_schema(runs, defaults=False)
        entry["properties"]["fold"] = FOLD_SCHEMA
        # null drops a run: a config file added with --configfile can replace config.yaml's runs.
        entry["type"] = ["object", "null"]
        schema |= {"propertyNames": {"pattern": RUN_PATTERN}, "additionalProperties": entry}
    if defaults:
        schema["default"] = _default(f, hint)
    return schema


def _object_schema(cls: type, defaults: bool, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A settings dataclass as a closed JSON-schema object, with or without its defaults."""
    hints = typing.get_type_hints(cls)
    properties = {
        f.name: _field_schema(f, hints[f.name], defaults) for f in dataclasses.fields(cls) if f.name not in skip
    }
    return {"type": "object", "additionalProperties": False, "properties": properties}


@functools.cache
def config_schema() -> dict[str, Any]:
    """The JSON Schema of a config file, derived from :class:`vecset.settings.Config`."""
    body = _object_schema(Config, defaults=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "vecset workflow configuration",
        "description": "Generated from src/vecset/settings.py (python -m vecset.config schema); do not edit.",
        **body,
    }


def schema_yaml() -> str:
    """The schema as the YAML text committed in workflow/schemas/config.schema.yaml."""
    return yaml.safe_dump(config_schema(), sort_keys=False, allow_unicode=True, width=110)


def _allowed(schema: Mapping[str, Any]) -> str:
    """A property's allowed values in words: its enum, bounds and item bounds."""
    parts = []
    if "enum" in schema:
        parts.append(" / ".join(f"`{value}`" for value in schema["enum"]))
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in schema:
            parts.append(f"{sign} {schema[key]}")
    if "not" in schema and "const" in schema["not"]:
        parts.append(f"not {schema['not']['const']}")
    if "minItems" in schema:
        parts.append(f"at least {schema['minItems']} item(s)")
    items = schema.get("items", {})
    if isinstance(items, Mapping) and items and (inner := _allowed(items)):
        parts.append(f"each {inner}")
    if "pattern" in schema:
        parts.append(f"matches `{schema['pattern']}`")
    return ", ".join(parts)


def _type_name(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type", "enum" if "enum" in schema else "")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        return f"list of {_type_name(schema.get('items', {}))}"
    return str(kind)


def _document(schema: Mapping[str, Any], prefix: str, sections: list[str]) -> list[str]:
    """Table rows of an object schema's plain properties; nested objects become their own sections."""
    rows = []
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if sub.get("type") == "object" and "properties" in sub:
            sections.extend(_section(sub, path))
            continue
        default = sub.get("default", "")
        shown = "" if default == "" and "default" not in sub else f"`{json.dumps(default, ensure_ascii=False)}`"
        cells = [f"`{path}`", _type_name(sub), shown, _allowed(sub), " ".join(sub.get("description", "").split())]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return rows


def _section(schema: Mapping[str, Any], path: str) -> list[str]:
    sections: list[str] = []
    rows = _document(schema, f"{path}." if path else "", sections)
    title = f"`{path}`" if path else "Top level"
    text = [f"## {title}", "", " ".join(schema.get("description", "").split()), ""] if path else [f"## {title}", ""]
    if rows:
        text += ["| key | type | default | allowed | description |", "|---|---|---|---|---|", *rows, ""]
    return text + sections


def configuration_markdown() -> str:
    """docs/configuration.md: every config key with its type, default, allowed values and description, from the
    same declarations as the schema."""
    header = [
        "# Configuration",
        "",
        "Every key of a config file (`config/config.yaml`, or your own with `--configfile`), generated from",
        "`src/vecset/settings.py` (`python -m vecset.config docs > docs/configuration.md`; a test keeps it current).",
        "A run under `runs:` may override any `train` key for that run alone, and `fold` (see `split.folds`).",
        "",
    ]
    return "\n".join(header + _section(config_schema(), "")).rstrip() + "\n"


# --- validation -----------------------------------------------------------------------------------------


def _fill_defaults(schema: Mapping[str, Any], instance: dict[str, Any]) -> None:
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(sub, instance[key])


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _wandb_key_errors(filled: Mapping[str, Any]) -> list[str]:
    """A wandb key in the config is refused before anything else is said about it."""
    sections = {"train": filled.get("train", {})} | {
        f"runs.{name}": run for name, run in filled.get("runs", {}).items() if isinstance(run, dict)
    }
    return [
        f"config key '{where}.wandb.{key}': wandb keys never go in the config; export WANDB_API_KEY in the environment"
        for where, section in sections.items()
        if isinstance(section, dict) and isinstance(section.get("wandb"), dict)
        for key in ("api_key", "key")
        if key in section["wandb"]
    ]


def _label_errors(labels: Mapping[str, int]) -> list[str]:
    # JSON Schema counts 1.0 as an integer; a label map needs the int itself (1.0 would index nothing).
    floats = [f"config key 'labels.{n}': {v!r} must be written as a whole number ({int(v)})" for n, v in labels.items()
              if not isinstance(v, int) and float(v).is_integer()]  # fmt: skip
    if floats:
        return floats
    values = list(labels.values())
    duplicated = sorted({v for v in values if values.count(v) > 1})
    if duplicated:
        names = {v: [n for n, x in labels.items() if x == v] for v in duplicated}
        return [f"config key 'labels': raw values must be unique, got {names}"]
    if len(labels) > 254:  # class indices are stored as uint8 with 0 for background
        return [f"config key 'labels': at most 254 structures are supported, got {len(labels)}"]
    return []


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A validated copy of ``config`` with every default filled in; :class:`ConfigError` names each wrong key."""
    schema = config_schema()
    filled = copy.deepcopy(dict(config))
    lines = _wandb_key_errors(filled)
    if not lines:
        _fill_defaults(schema, filled)
        validator = jsonschema.Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(filled), key=lambda e: list(e.absolute_path))
        lines = [f"config key '{_key_path(e)}': {e.message}" for e in errors]
    if not lines:
        lines = _label_errors(filled["labels"])
    if lines:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    return filled


# --- runs ---------------------------------------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied key by key, recursing into nested mappings."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_runs(config: Mapping[str, Any]) -> dict[str, RunSettings]:
    """Each entry of ``runs`` of a validated config: its overrides merged into ``train`` once, the result and
    its model checked; :class:`ConfigError` names the run and the problem."""
    folds = config["split"]["folds"]
    runs = {}
    for name, overrides in config["runs"].items():
        if overrides is None:  # dropped (e.g. config.yaml's demo run under config/imagecas.yaml)
            continue
        fold = overrides.get("fold")
        if fold is not None and not (folds >= 2 and fold < folds):
            raise ConfigError(
                f"runs.{name}.fold = {fold!r}: needs split.folds >= 2 and 0 <= fold < split.folds ({folds})"
            )
        merged = deep_merge(config["train"], {k: v for k, v in overrides.items() if k != "fold"})
        try:
            train = build(TrainSettings, merged)
            train.model_config(len(config["labels"]))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"runs.{name}: invalid training settings: {err}") from None
        runs[name] = RunSettings(name, train, fold)
    return runs


def read_config_files(*paths: str | Path) -> dict[str, Any]:
    """Config files merged in order as ``snakemake --configfile A B`` merges them (each file's keys into the ones
    before, nested mappings key by key), validated and default-filled (:func:`validate_config`)."""
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            reason = " ".join(str(err).split())
            raise ConfigError(f"{path}: not a readable YAML config ({reason}); plain YAML only, no tags") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config file holds a mapping of keys, not {type(loaded).__name__}")
        merged = deep_merge(merged, loaded)
    return validate_config(merged)


def load_run(paths: Sequence[str | Path], run: str, overrides: Mapping[str, Any] | None = None) -> RunSettings:
    """The settings of ``run`` in these config files (:func:`read_config_files`), with ``overrides`` (any train
    keys, nested mappings merged key by key) applied on top of the run's own: one way for tools outside the
    workflow (benchmarks) to train or decode as a configured run would."""
    config = read_config_files(*paths)
    if config["runs"].get(run) is None:
        known = sorted(name for name, value in config["runs"].items() if value is not None)
        raise ConfigError(f"no run {run!r} in {', '.join(str(p) for p in paths)}; its runs: {known}")
    config["runs"] = {run: deep_merge(config["runs"][run], overrides or {})}
    return resolve_runs(validate_config(config))[run]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    outputs = {"schema": schema_yaml, "docs": configuration_markdown}
    if len(args) != 1 or args[0] not in outputs:
        print("usage: python -m vecset.config schema|docs", file=sys.stderr)
        return 2
    sys.stdout.write(outputs[args[0]]())
    return 0


if __name__ == "__main__":
    sys.exit(main())
