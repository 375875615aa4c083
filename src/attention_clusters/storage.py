"""Atomic file output: nothing half-written is ever left under a final name.

Every writer here writes to a temporary file in the same folder and renames it into place,
so an interrupted stage leaves either the old file or the new one, never a partial file.
A full disk or a read-only folder is one :class:`UserError` line naming the path, the bytes
needed and the cause; the temporary file is removed and the previous output, if there was one,
stays as it was (under ``dvc repro`` a stage's declared outputs have none: DVC deletes them
before it runs the stage).
Large outputs reserve their space before writing (:func:`reserve`), so a memory-mapped writer
fails with that line up front instead of a ``Bus error`` halfway through.
"""

import contextlib
import errno
import json
import os
from pathlib import Path

import numpy as np

from . import recovery
from .errors import UserError

# errors of the disk or folder, not of the program: reported as one line
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)
NPY_HEADER_MAX = 4096  # bytes; a .npy header of this project's arrays is 128


@contextlib.contextmanager
def atomic_path(path, size=None):
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    On an exception the temporary file (and any file a library wrote beside it under the same
    name with another suffix) is removed and the exception propagates.

    Args:
        size: bytes the output needs, if known: named in the disk-error message.

    Raises:
        UserError: the folder cannot be written or the disk is full (see :data:`DISK_ERRORS`);
        the line ends with "the previous file is unchanged" or, when ``path`` did not exist,
        "no file was created".
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")  # keeps the suffix writers expect
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path)
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.errno not in DISK_ERRORS or not _is_beside(err.filename, path):
            raise
        needed = f"{size:,} bytes" if size else "it"
        cause = f"{os.strerror(err.errno)}, {errno.errorcode[err.errno]}"
        left = "the previous file is unchanged" if existed else "no file was created"
        raise UserError(f"{path}: cannot write {needed} ({cause}); {left}") from None
    finally:
        for leftover in _temporaries(tmp):
            leftover.unlink(missing_ok=True)


def _is_beside(filename, path):
    """True when an error's file name is unset (fallocate, write) or in ``path``'s folder."""
    return filename is None or Path(os.fsdecode(filename)).resolve().parent == path.resolve().parent


def _temporaries(tmp):
    """``tmp`` and files named like it with another suffix (MindSpore writes ``<stem>.tmp`` first)."""
    base = tmp.name[: len(tmp.name) - len(tmp.suffix)] if tmp.suffix else tmp.name
    try:
        return [f for f in tmp.parent.iterdir() if f.name == tmp.name or f.name.startswith(base + ".")]
    except OSError:
        return []


def _remove_stale(path):
    """Delete temporaries of ``path`` left by writers that were killed (their pid is gone)."""
    prefix = f".{path.stem}.tmp-"
    for tmp in path.parent.iterdir():
        if tmp.name.startswith(prefix):
            pid = tmp.name[len(prefix) :].split(".")[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                tmp.unlink(missing_ok=True)


def reserve(target, size):
    """Allocate ``size`` bytes of disk for a file now (``posix_fallocate``), from offset 0.

    Args:
        target: an open binary file object, or a path (the file is created if missing).

    Raises:
        OSError: ENOSPC (or another :data:`DISK_ERRORS` errno) when the disk cannot hold it;
        inside :func:`atomic_path` that becomes one :class:`UserError` line.
    """
    if size <= 0:
        return
    with contextlib.ExitStack() as stack:
        handle = target if hasattr(target, "fileno") else stack.enter_context(open(target, "ab"))
        try:
            os.posix_fallocate(handle.fileno(), 0, size)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without it: write as before
                raise


def atomic_write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    with atomic_path(path, len(data)) as tmp:
        tmp.write_bytes(data)


def write_json(path, obj):
    """Write ``obj`` as indented JSON (with a trailing newline) to ``path`` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    with atomic_path(path, len(text.encode())) as tmp:
        tmp.write_text(text)


def read_json(path, where=None, missing=" (run the earlier stages first: dvc repro)"):
    """Parse the JSON file ``path``.

    Args:
        where: how the error lines name the file (default: ``path``); missing: the hint after
            "file not found".

    Raises:
        UserError: the file is missing, unreadable or not valid JSON.
    """
    where = path if where is None else where
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{where}: file not found{missing}") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{where}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{where}: cannot read ({getattr(err, 'strerror', None) or err})") from None


@contextlib.contextmanager
def npy_writer(path, shape, dtype):
    """Yield a writable memory-mapped .npy of ``shape``/``dtype``; it appears at ``path`` on success.

    Lets a generator fill a multi-GB array chunk by chunk without holding it in memory. The
    whole file is reserved on disk before the array is yielded: a disk too small for it is a
    :class:`UserError` naming the bytes needed, never a ``Bus error`` while writing.
    """
    with atomic_path(path, int(np.prod(shape)) * np.dtype(dtype).itemsize) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        reserve(tmp, tmp.stat().st_size)
        yield array
        array.flush()
        del array


def save_npy(path, array):
    """Save an array as .npy (no pickle) atomically, its disk space reserved first."""
    array = np.asarray(array)
    with atomic_path(path, array.nbytes) as tmp:
        with open(tmp, "wb") as handle:
            reserve(handle, array.nbytes + NPY_HEADER_MAX)
            np.save(handle, array, allow_pickle=False)
            handle.truncate()


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
        raise UserError(f"{path}: not a valid .npy array file; {recovery.file_hint(path)}") from None
    if not isinstance(array, np.ndarray) or (ndim is not None and array.ndim != ndim):
        raise UserError(f"{path}: expected a {ndim}-dimensional array, got shape {getattr(array, 'shape', None)}")
    return array
