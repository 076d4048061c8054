"""Workflow configuration: JSON-Schema (2020-12) validation with defaults, and cross-key checks."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what was expected."""


def _fill_defaults(schema: Mapping[str, Any], instance: dict[str, Any]) -> None:
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(sub, instance[key])


def _coerce_scalar(value: Any, schema: Mapping[str, Any]) -> Any:
    """Snakemake's ``--config`` parses nested values with YAML's BaseLoader, so numbers and booleans
    below the top level arrive as strings, and ``key=`` arrives as None. Convert those to the schema's type.
    """
    kind = schema.get("type")
    if value is None and kind == "string":
        return ""
    if not isinstance(value, str):
        return value
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
    except ValueError:
        return value
    if kind == "boolean" and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _coerce(schema: Mapping[str, Any], instance: Any) -> Any:
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            sub = props.get(key, extra if isinstance(extra, dict) else {})
            instance[key] = _coerce(sub, value)
        return instance
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [_coerce(schema["items"], v) for v in instance]
    return _coerce_scalar(instance, schema)


def _key_path(error: jsonschema.ValidationError, prefix: str = "") -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return f"{prefix}.{path}" if prefix and path else prefix or path or "<top level>"


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied key by key, recursing into nested mappings."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _coerce_runs(schema: Mapping[str, Any], filled: dict[str, Any]) -> None:
    """Each run's overrides are keys of the train section: coerce them with its schema (in place)."""
    train_schema = schema.get("properties", {}).get("train")
    if train_schema:
        for overrides in filled.get("runs", {}).values():
            if isinstance(overrides, dict):
                _coerce(train_schema, overrides)


def _run_errors(filled: dict[str, Any], schema: Mapping[str, Any], validator_cls: Any) -> list[str]:
    """Each run's overrides checked merged into the train section."""
    train_schema = schema.get("properties", {}).get("train")
    if not train_schema or "train" not in filled:
        return []
    lines = []
    for name, overrides in filled.get("runs", {}).items():
        merged = deep_merge(filled["train"], {k: v for k, v in overrides.items() if k != "fold"})
        errors = sorted(validator_cls(train_schema).iter_errors(merged), key=lambda e: list(e.absolute_path))
        lines += [f"config key '{_key_path(e, f'runs.{name}')}': {e.message}" for e in errors]
    return lines


def load_schema(path: str | Path) -> dict[str, Any]:
    with open(path) as fh:
        return yaml.safe_load(fh)


def validate_config(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Return a validated copy of ``config`` with defaults filled; raise :class:`ConfigError` naming the key."""
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    filled = _coerce(schema, copy.deepcopy(dict(config)))
    _coerce_runs(schema, filled)
    _fill_defaults(schema, filled)
    errors = sorted(validator_cls(schema).iter_errors(filled), key=lambda e: list(e.absolute_path))
    lines = [f"config key '{_key_path(e)}': {e.message}" for e in errors]
    lines += _run_errors(filled, schema, validator_cls) if not errors else []
    if lines:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    labels = filled["labels"]
    values = list(labels.values())
    duplicated = sorted({v for v in values if values.count(v) > 1})
    if duplicated:
        names = {v: [n for n, x in labels.items() if x == v] for v in duplicated}
        raise ConfigError(f"config key 'labels': raw values must be unique, got {names}")
    if len(labels) > 254:
        raise ConfigError(f"config key 'labels': at most 254 structures are supported, got {len(labels)}")
    return filled
