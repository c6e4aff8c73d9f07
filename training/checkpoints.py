"""Epoch checkpoints that survive a killed run and a damaged file.

Each epoch writes ``checkpoint-epoch<NNNN>.pt`` (model, optimizer, schedule, loop state and the
best weights so far) to a temporary name, flushes it to disk and renames it, so a kill never
leaves a half-written checkpoint under its final name. The last ``KEEP`` checkpoints are kept:
a file damaged after the fact (a copy cut short, a full disk on a file system whose rename is
not atomic) is set aside as ``<name>.unreadable`` with a warning naming it, and the run resumes
from the one before. Nothing is deleted that a resume could still need.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import torch

KEEP = 2
_NAME = re.compile(r"checkpoint-epoch(\d{4,})\.pt")
PAYLOAD_KEYS = frozenset({"model", "optimizer", "scheduler", "state", "best_model"})


def checkpoint_path(out: Path, epochs_done: int) -> Path:
    return out / f"checkpoint-epoch{epochs_done:04d}.pt"


def checkpoints(out: Path) -> list[Path]:
    """The run's checkpoints, newest first."""
    found = [(int(m.group(1)), p) for p in out.glob("checkpoint-epoch*.pt") if (m := _NAME.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def save(out: Path, payload: dict, epochs_done: int) -> Path:
    """Write the checkpoint after ``epochs_done`` epochs atomically, then drop all but the last KEEP."""
    missing = PAYLOAD_KEYS - payload.keys()
    if missing:
        raise ValueError(f"a checkpoint needs {sorted(missing)}")
    out.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(out, epochs_done)
    write_atomically(path, lambda handle: torch.save(payload, handle))
    for old in checkpoints(out)[KEEP:]:
        old.unlink()
    return path


def write_atomically(path: Path, write) -> None:
    """``write(handle)`` to a temporary name, flushed to disk, then renamed to ``path``: readers
    see the whole file or none."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def latest_readable(out: Path, map_location=None) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads whole, or None (a fresh run). Unreadable ones are renamed
    ``.unreadable`` (kept for inspection, never resumed from) with a warning that names them."""
    set_aside = []
    for path in checkpoints(out):
        try:
            payload = torch.load(path, map_location=map_location, weights_only=False)
            problem = None if isinstance(payload, dict) and PAYLOAD_KEYS <= payload.keys() \
                else "it lacks the checkpoint's parts"
        except Exception as exc:                 # truncated zip, bad pickle, I/O error: all mean "not this one"
            payload, problem = None, f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        if problem is None:
            if set_aside:
                _warn(set_aside, f"resuming from {path.name}")
            return path, payload
        aside = path.with_name(path.name + ".unreadable")
        os.replace(path, aside)
        set_aside.append((path, problem, aside))
    if set_aside:
        _warn(set_aside, "no readable checkpoint is left: training starts afresh")
    return None


def _warn(set_aside: list, outcome: str) -> None:
    for path, problem, aside in set_aside:
        print(f"checkpoint {path} is unreadable ({problem}); set aside as {aside.name}", file=sys.stderr, flush=True)
    print(outcome, file=sys.stderr, flush=True)
