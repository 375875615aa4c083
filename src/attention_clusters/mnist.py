"""MNIST as the pipeline stores it: the four raw IDX files and ``source.json`` in data/mnist/.

download_mnist writes them (:func:`write_dataset`, from the files of :mod:`.mnist_sources`);
the later stages read one split (:func:`read_split`) and the provenance (:func:`read_provenance`),
which says where the digits came from and whether they are the full 70,000 of MNIST.
"""

import hashlib
from pathlib import Path

from .errors import UserError
from .idx import decode_images, decode_labels
from .storage import atomic_write_bytes, read_json, write_json

SPLITS = ("train", "test")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NAMES = FILES["train"] + FILES["test"]  # the four file names
FULL_COUNTS = {"train": 60000, "test": 10000}

# SHA-256 of the full raw (decompressed) files
FULL_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def sha256(data):
    """Hex SHA-256 of a bytes object."""
    return hashlib.sha256(data).hexdigest()


def decode_split(image_bytes, label_bytes, split, where=""):
    """Decode and check one split's IDX image and label bytes.

    Args:
        image_bytes, label_bytes: the raw IDX files of ``split`` (``"train"`` or ``"test"``).
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
    return decode_split(read_file(folder / image_name), read_file(folder / label_name), split, where=f"{folder}/")


def read_file(path):
    """The bytes of the file at ``path``.

    Raises:
        UserError: naming the file, when it is missing or cannot be read.
    """
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None


def read_provenance(path):
    """Read and check the ``source.json`` written by :func:`write_dataset`.

    Raises:
        UserError: the file is missing, not JSON, or lacks source / full_mnist / counts.
    """
    provenance = read_json(path)
    counts = provenance.get("counts") if isinstance(provenance, dict) else None
    if (
        not isinstance(counts, dict)
        or not all(isinstance(counts.get(s), int) for s in SPLITS)
        or "source" not in provenance
    ):
        raise UserError(f"{path}: not a provenance file of download_mnist (re-run: dvc repro -f download_mnist)")
    return provenance


def write_dataset(files, description, out_dir):
    """Validate the four files and write them raw into ``out_dir`` with ``source.json``.

    Each file is decoded and checked (magic, counts, length, labels in 0..9, image and label
    counts agree) before anything is written; each file is written atomically.

    Args:
        files: dict file name (each of :data:`NAMES`) -> raw IDX bytes.
        description: where the files came from, stored as ``source``.
        out_dir: the dataset folder, created if missing.

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
    digests = {name: sha256(files[name]) for name in NAMES}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        atomic_write_bytes(out_dir / name, files[name])
    provenance = {
        "source": description,
        "full_mnist": digests == FULL_SHA256,
        "counts": counts,
        "sha256": digests,
    }
    write_json(out_dir / "source.json", provenance)
    return provenance
