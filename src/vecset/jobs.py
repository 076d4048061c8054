"""Run one workflow job's package call with logging to the rule's log and one-line errors for bad cases."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vecset.errors import CaseInputError


def setup_logging(log_path: str | Path | None) -> None:
    """Log to the rule's log file (and stderr) at INFO."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True
    )


def run_job(log_path: str | Path | None, func: Callable[..., Any], **kwargs: Any) -> Any:
    """Call ``func(**kwargs)``; a :class:`CaseInputError` ends the process with its one-line message and exit 1."""
    setup_logging(log_path)
    try:
        return func(**kwargs)
    except CaseInputError as err:
        logging.getLogger("vecset").error("%s", err)
        logging.shutdown()
        raise SystemExit(1) from None
