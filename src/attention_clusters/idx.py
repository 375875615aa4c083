"""The IDX file format of MNIST: 28x28 uint8 images and uint8 labels, big-endian header.

An IDX images file is a 16-byte header (magic 0x00000803, count, rows, cols as big-endian
uint32) followed by count x rows x cols pixel bytes; an IDX labels file is an 8-byte header
(magic 0x00000801, count) followed by count label bytes. Every file this project reads or
writes holds 28x28 digits (:data:`ROWS`, :data:`COLS`) and labels 0..9.
"""

import numpy as np

from .errors import UserError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
ROWS = COLS = 28


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
