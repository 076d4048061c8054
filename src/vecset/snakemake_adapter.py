"""The Snakemake adapter: the one package module that knows Snakemake.

The workflow side (Snakefile, rules/*.smk, workflow/scripts/*.py) calls this module, and this module calls
the rest of the package, which never imports Snakemake:

- :func:`load_config` turns Snakemake's ``config`` into the validated, default-filled dict (in place, so
  ``snakemake.config`` in report captions sees it too), the typed :class:`~vecset.settings.Config` and the
  runs, and turns any problem into a :class:`WorkflowError` naming the key;
- :func:`discover_cases` lists the case ids at parse time, so a dry run shows every per-case job;
- :func:`run_job` is how a rule's script calls the package: logging to the rule's log, and a bad case's
  one-line error as the last line of that log.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from snakemake.exceptions import WorkflowError
from snakemake.io import glob_wildcards
from snakemake.logging import logger as snakemake_logger

from vecset.atomic import remove_leftover_temps_of
from vecset.config import ConfigError, config_schema, resolve_runs, validate_config
from vecset.data.cases import near_misses, usable_cases
from vecset.errors import CaseInputError, describe_failure
from vecset.settings import Config, RunSettings, build


def _coerce_scalar(value: Any, schema: dict[str, Any]) -> Any:
    declared = schema.get("type")
    kinds = [declared] if isinstance(declared, str) else list(declared or [])
    if value is None and "string" in kinds:
        return ""
    if not isinstance(value, str):
        return value
    if "null" in kinds and (value.strip().lower() in ("null", "~") or (not value and "string" not in kinds)):
        return None  # a nullable key set back to null on the command line
    if "string" in kinds:
        return value
    for kind in kinds:
        try:
            if kind == "integer":
                return int(value)
            if kind == "number":
                return float(value)
        except ValueError:
            continue
        if kind == "boolean" and value.lower() in ("true", "false"):
            return value.lower() == "true"
    return value


def coerce_command_line(schema: dict[str, Any], instance: Any) -> Any:
    """Snakemake's ``--config`` parses nested values with YAML's BaseLoader, so numbers and booleans below the
    top level arrive as strings, and ``key=`` as None: convert those to the schema's types (in place)."""
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, value in instance.items():
            instance[key] = coerce_command_line(props.get(key, extra if isinstance(extra, dict) else {}), value)
        return instance
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [coerce_command_line(schema["items"], v) for v in instance]
    return _coerce_scalar(instance, schema)


# Keys that the last command-line source naming them replaces instead of merging into config.yaml's value: a label
# map given in a --configfile or --config is the whole map (merged, it would keep config.yaml's other structures).
REPLACED_FROM_COMMAND_LINE = ("labels",)


def command_line_sources(config_settings: Any) -> list[Mapping[str, Any]]:
    """What the command line gave, in the order Snakemake merges it: each ``--configfile``, then ``--config``
    (``workflow.config_settings``)."""
    from snakemake.common.configfile import load_configfile

    files = [load_configfile(str(path)) for path in config_settings.configfiles]
    return [*files, dict(config_settings.config or {})]


def load_config(
    config: MutableMapping[str, Any], command_line: Iterable[Mapping[str, Any]] = ()
) -> tuple[Config, dict[str, RunSettings]]:
    """Validate Snakemake's ``config`` (replaced in place by the default-filled copy) and resolve its runs.
    ``command_line`` (:func:`command_line_sources`): the last of them that sets a key in REPLACED_FROM_COMMAND_LINE
    gives that key's whole value."""
    for source in command_line:
        for key in REPLACED_FROM_COMMAND_LINE:
            if key in source:
                config[key] = copy.deepcopy(source[key])
    try:
        validated = validate_config(coerce_command_line(config_schema(), copy.deepcopy(dict(config))))
        runs = resolve_runs(validated)
    except ConfigError as err:
        raise WorkflowError(str(err)) from None
    config.clear()
    config.update(validated)
    for run in runs.values():
        unknown = sorted(set(run.train.thin_structures) - set(validated["labels"]))
        if unknown:
            _warn(f"run {run.name}: thin_structures {unknown} are not in labels; they are not reported apart")
    unknown = sorted(set(validated["eval"]["tubular"]) - set(validated["labels"]))
    if unknown:
        _warn(f"eval.tubular {unknown} are not in labels; no centreline Dice for them")
    return build(Config, validated), runs


def discover_cases(settings: Config) -> tuple[list[str], dict[str, str]]:
    """Case ids at parse time: the demo ids, or every file matching input_pattern in input_dir; minus exclude.
    With them, the inputs skipped (case id → file and reason), each also said in the run's log; the split rule
    lists them in excluded.csv."""
    skipped: dict[str, str] = {}
    if settings.demo_data:
        found = [f"demo_{i:03d}" for i in range(settings.demo.n_cases)]
    else:
        if not os.path.isdir(settings.input_dir):
            raise WorkflowError(
                f"config key 'input_dir': folder {settings.input_dir!r} does not exist; "
                "fix the path, or set input_dir: '' for the demo data"
            )
        pattern = os.path.join(settings.input_dir, settings.input_pattern)
        matched = sorted(set(glob_wildcards(pattern).case))
        paths = {case: pattern.format(case=case) for case in matched}
        found, skipped = usable_cases(matched, paths)
        for reason in skipped.values():
            _warn(f"input skipped: {reason}")
        missed = near_misses(settings.input_dir, paths.values())
        if missed:
            _warn(f"files in input_dir that look like label maps but do not match input_pattern "
                  f"{settings.input_pattern!r} (not used): {missed}")  # fmt: skip
        if not found:
            raise WorkflowError(f"no input files match {pattern!r}; check input_dir and input_pattern")
    excluded = set(settings.exclude)
    unknown = sorted(excluded - set(found))
    if unknown:
        _warn(f"config key 'exclude' names cases that are not in the input: {unknown}")
    return [case for case in found if case not in excluded], skipped


def _warn(message: str) -> None:
    """A warning on the console and in the run's log (.snakemake/log/)."""
    snakemake_logger.warning(f"vecset: warning: {message}")


def setup_logging(log_path: str | Path | None) -> None:
    """Log to the rule's log file (and stderr) at INFO."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True
    )


def run_job(
    log_path: str | Path | None, func: Callable[..., Any], outputs: Iterable[str | Path] = (), **kwargs: Any
) -> Any:
    """Call ``func(**kwargs)`` from a rule's script, logging to the rule's log, after removing what killed writes of
    the job's ``outputs`` left beside them (7 GB for a checkpoint). Whatever it raises ends the job with exit
    status 1 and a last log line that says what happened: a :class:`CaseInputError`'s own line, or for anything
    else its traceback, then one plain line (vecset.errors.describe_failure) naming the job's case when it has
    one."""
    setup_logging(log_path)
    logger = logging.getLogger("vecset")
    freed = remove_leftover_temps_of(outputs)
    if freed:
        logger.info("removed %.3f GB of temp files that killed writes of this job's outputs left", freed / 1e9)
    try:
        return func(**kwargs)
    except CaseInputError as err:
        logger.error("%s", err)
    except Exception as err:
        logger.error("unexpected error", exc_info=True)
        case = kwargs.get("case_id")
        logger.error("%s%s", f"{case}: " if case else "", describe_failure(err))
    logging.shutdown()
    raise SystemExit(1)
