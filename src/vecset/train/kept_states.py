"""States of other settings or data, kept in a run's ``state/previous/`` so that changing a setting and
changing it back loses no training.

Each kept state is one folder, ``previous/<when>-step<N>-<what differed>/``, holding the state files (last.pt,
best.pt, metrics.jsonl) and ``kept.json``: its fingerprint, step, when it was kept and a readable label (the
settings it was trained with that the run which moved it aside changed). A folder is never reused, so a kept
state is never overwritten; :func:`prune` removes the oldest beyond ``train.keep_states``. Folders named by a
bare fingerprint (the layout before kept.json) are still found.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vecset.atomic import write_bytes_atomic

KEPT_FILE = "kept.json"
PREVIOUS = "previous"


@dataclass(frozen=True)
class KeptState:
    """One kept state: its folder, the fingerprint it was trained under, its step and when it was kept."""

    folder: Path
    fingerprint: str
    step: int
    kept_at: float
    label: str

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.folder.iterdir() if f.is_file())

    def describe(self) -> str:
        return f"{self.folder.name} (step {self.step}, {self.label}, {self.size_bytes / 1e9:.2f} GB)"


def kept_states(state_dir: Path) -> list[KeptState]:
    """Every kept state of a run's state folder, oldest first."""
    found = []
    previous = state_dir / PREVIOUS
    for folder in sorted(previous.iterdir()) if previous.is_dir() else []:
        if not folder.is_dir():
            continue
        try:
            meta = json.loads((folder / KEPT_FILE).read_text())
            found.append(KeptState(folder, str(meta["fingerprint"]), int(meta["step"]), float(meta["kept_at"]),
                                   str(meta["label"])))  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            last = folder / "last.pt"
            if last.exists():  # the earlier layout: previous/<fingerprint>/, no record
                found.append(KeptState(folder, folder.name, -1, last.stat().st_mtime, "kept before kept.json"))
    return sorted(found, key=lambda k: k.kept_at)


def find_kept(state_dir: Path, fingerprint: str) -> KeptState | None:
    """The furthest-trained kept state of ``fingerprint`` that holds a last.pt, or None."""
    mine = [k for k in kept_states(state_dir) if k.fingerprint == fingerprint and (k.folder / "last.pt").exists()]
    return max(mine, key=lambda k: (k.step, k.kept_at), default=None)


def keep(state_dir: Path, files: Sequence[str], fingerprint: str, step: int, label: str) -> KeptState:
    """Move ``files`` of the state folder into a new kept-state folder (its record written first, so a kill
    midway leaves a folder that is still found); a folder that exists is never reused."""
    kept_at = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(kept_at))
    slug = re.sub(r"[^A-Za-z0-9_.+=-]+", "_", label)[:48].strip("_") or "other"
    base = state_dir / PREVIOUS / f"{stamp}-step{step}-{slug}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    folder.mkdir(parents=True)
    record = {"fingerprint": fingerprint, "step": step, "kept_at": kept_at, "label": label}
    write_bytes_atomic(folder / KEPT_FILE, json.dumps(record, indent=1).encode())
    for name in files:
        if (state_dir / name).exists():
            os.replace(state_dir / name, folder / name)
    return KeptState(folder, fingerprint, step, kept_at, label)


def bring_back(kept: KeptState, state_dir: Path, files: Sequence[str]) -> None:
    """Move a kept state's files back into the state folder (replacing what is there) and remove its folder."""
    for name in files:
        if (kept.folder / name).exists():
            os.replace(kept.folder / name, state_dir / name)
    shutil.rmtree(kept.folder)


def prune(state_dir: Path, limit: int) -> list[str]:
    """Remove the oldest kept states beyond ``limit``; what each removed one was (KeptState.describe)."""
    states = kept_states(state_dir)
    removed = []
    for kept in states[: max(len(states) - limit, 0)]:
        removed.append(kept.describe())
        shutil.rmtree(kept.folder)
    return removed


def total_bytes(state_dir: Path) -> tuple[int, int]:
    """(number of kept states, their total size in bytes)."""
    states = kept_states(state_dir)
    return len(states), sum(k.size_bytes for k in states)


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def difference_label(
    kept: Mapping[str, Any], current: Mapping[str, Any], ignored: Sequence[str], data_changed: bool
) -> str:
    """What a kept state was trained with where the current run differs: ``lr=0.001, data changed``. ``kept``
    and ``current`` are nested setting dicts; keys under ``ignored`` (top level) do not count."""
    old, new = _flat(kept), _flat(current)
    keys = sorted(k for k in old.keys() | new.keys() if k.split(".")[0] not in ignored and old.get(k) != new.get(k))
    parts = [f"{k}={old.get(k)}" for k in keys]
    if data_changed:
        parts.append("data changed")
    return ", ".join(parts) or "other settings"
