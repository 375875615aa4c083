"""Atomic file output: nothing half-written is ever left under a final name.

Every writer here writes to a temporary file in the same folder and renames it into place,
so an interrupted stage leaves either the old file or the new one, never a partial file.
"""

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from .errors import UserError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    On an exception the temporary file is removed and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")  # keeps the suffix writers expect
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale(path):
    """Delete temporaries of ``path`` left by writers that were killed (their pid is gone)."""
    for tmp in path.parent.glob(f".{path.stem}.tmp-*{path.suffix}"):
        pid = tmp.name[len(path.stem) + 6 : len(tmp.name) - len(path.suffix)]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path, obj):
    """Write ``obj`` as indented JSON (with a trailing newline) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path):
    """Parse the JSON file ``path``.

    Raises:
        UserError: the file is missing or not valid JSON.
    """
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found (run the earlier stages first: dvc repro)") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


@contextlib.contextmanager
def npy_writer(path, shape, dtype):
    """Yield a writable memory-mapped .npy of ``shape``/``dtype``; it appears at ``path`` on success.

    Lets a generator fill a multi-GB array chunk by chunk without holding it in memory.
    """
    with atomic_path(path) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        yield array
        array.flush()
        del array


def save_npy(path, array):
    """Save an array as .npy (no pickle) atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.asarray(array), allow_pickle=False)


def load_npy(path, mmap=False, ndim=None):
    """Load a .npy written by this project (never with pickle); ``mmap`` maps it read-only.

    Args:
        ndim: if given, the number of dimensions the array must have.

    Raises:
        UserError: the file is missing, not a valid numeric .npy, or has the wrong ndim.
    """
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found (run the earlier stages first: dvc repro)") from None
    except (ValueError, EOFError, OSError):
        raise UserError(f"{path}: not a valid .npy array file (re-run the stage that writes it: dvc repro -f)") from None
    if not isinstance(array, np.ndarray) or (ndim is not None and array.ndim != ndim):
        raise UserError(f"{path}: expected a {ndim}-dimensional array, got shape {getattr(array, 'shape', None)}")
    return array
