"""Samplers, Noisy-MNIST and Flash-MNIST generation, numpy only (SPEC sections 2-4).

Everything is seeded: a ``numpy.random.SeedSequence`` per (seed, split) is split into one
child per fixed-size chunk, so the bytes produced depend only on the seed and the counts, not on
how many threads generate them.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .errors import UserError
from .idx import COLS, ROWS
from .storage import atomic_path

NUM_DIGITS = 10
NOISE_CLASS = 10  # Noisy-MNIST class of pure-noise frames
NUM_LABELS = 2**NUM_DIGITS  # Flash-MNIST labels: 10-bit masks
FRAMES = 25  # frames per Flash-MNIST video
MAX_COPIES = 2  # each digit of a label appears 1..MAX_COPIES times
CHUNK_VIDEOS = 1024  # generation unit; part of the definition of the bytes produced
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


class NoiseSampler:
    """Draws i.i.d. pixels from a 256-bin histogram (SPEC 2).

    A pixel is the value v whose interval [t_v, t_{v+1}) of the 32-bit range holds a uniform
    32-bit integer, with t_v = round(2^32 * cdf(v - 1)): each probability is exact to 2^-32.
    A table on the top 20 bits answers all but the <= 255 buckets that straddle a boundary,
    which fall back to a binary search, so sampling costs a few ns per pixel.

    Args:
        hist: int array (256,), counts of each pixel value; not all zero, none negative.
    """

    TABLE_BITS = 20

    def __init__(self, hist):
        hist = np.asarray(hist, dtype=np.float64)
        if hist.shape != (256,) or (hist < 0).any() or hist.sum() <= 0:
            raise ValueError("noise histogram must be 256 non-negative counts, not all zero")
        cdf = np.cumsum(hist) / hist.sum()
        # upper[v] = first 32-bit integer beyond value v's interval
        self.upper = np.minimum(np.round(cdf * 2.0**32), 2.0**32).astype(np.uint64)
        shift = 32 - self.TABLE_BITS
        starts = np.arange(2**self.TABLE_BITS, dtype=np.uint64) << np.uint64(shift)
        first = np.searchsorted(self.upper, starts, side="right")
        last = np.searchsorted(self.upper, starts + np.uint64(2**shift - 1), side="right")
        self.table = np.where(first == last, first, -1).astype(np.int16)
        self.shift = np.uint32(shift)

    def sample(self, rng, shape):
        """Return a uint8 array of ``shape`` with pixels drawn from the histogram."""
        raw = rng.integers(0, 2**32, size=shape, dtype=np.uint32)
        values = self.table[raw >> self.shift]
        straddle = np.flatnonzero(values < 0)
        if straddle.size:
            flat = values.reshape(-1)
            flat[straddle] = np.searchsorted(self.upper, raw.reshape(-1)[straddle].astype(np.uint64), side="right")
        return values.astype(np.uint8)


def pixel_histogram(*image_sets):
    """Counts of each pixel value 0..255 over all given uint8 image arrays: int64 (256,)."""
    hist = np.zeros(256, dtype=np.int64)
    for images in image_sets:
        hist += np.bincount(np.asarray(images, dtype=np.uint8).reshape(-1), minlength=256)
    return hist


def class_index(labels):
    """Group a split's digits by class (SPEC 2, digit sampler).

    Args:
        labels: uint8 (N,) with values 0..9.

    Returns:
        ``(order, starts)``: int64 (N,) digit indices sorted by class (stable), and int64 (11,)
        offsets so that class c occupies ``order[starts[c]:starts[c + 1]]``.
    """
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable").astype(np.int64)
    counts = np.bincount(labels, minlength=NUM_DIGITS)[:NUM_DIGITS]
    return order, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def sample_digits(rng, classes, order, starts):
    """Indices of one uniformly chosen digit image of each requested class.

    Args:
        classes: int (M,) classes 0..9; every class asked for must have at least one digit.
        order, starts: the digit index of :func:`class_index`.

    Returns:
        int64 (M,) indices into the split's image array.
    """
    counts = (starts[1:] - starts[:-1])[classes]
    if (counts == 0).any():
        raise ValueError(f"no digit of class {int(classes[counts == 0][0])} in the digit pool")
    return order[starts[classes] + rng.integers(0, counts)]


def paste(noise, digits):
    """Paste digits onto noise frames: the pixel-wise maximum (SPEC 2). uint8 in, uint8 out."""
    return np.maximum(noise, digits)


def noisy_mnist(images, labels, repeats, noise_frames, noise, seed):
    """Noisy-MNIST for one split (SPEC 3).

    Every digit of the split pasted onto fresh noise, ``repeats`` times over (classes 0..9),
    followed by ``noise_frames`` pure-noise frames (class 10).

    Args:
        images: uint8 (N, 28, 28); labels: uint8 (N,).
        repeats: k, copies of each digit (5 for train, 1 for test in SPEC 3).
        noise_frames: number of class-10 frames.
        noise: a :class:`NoiseSampler`.
        seed: an int or a sequence of ints (``numpy.random.SeedSequence`` entropy).

    Returns:
        ``(frames, targets)``: uint8 (k*N + noise_frames, 28, 28) and uint8 of the same length.
    """
    rng = np.random.default_rng(seed)
    digits = np.tile(images, (repeats, 1, 1))
    frames = np.empty((len(digits) + noise_frames, ROWS, COLS), dtype=np.uint8)
    frames[: len(digits)] = paste(noise.sample(rng, digits.shape), digits)
    frames[len(digits) :] = noise.sample(rng, (noise_frames, ROWS, COLS))
    targets = np.concatenate([np.tile(labels, repeats), np.full(noise_frames, NOISE_CLASS, np.uint8)])
    return frames, targets


def label_bits(labels):
    """Digits present in each Flash-MNIST label: bool (N, 10), column i = bit i of the label."""
    return (np.asarray(labels, dtype=np.int64)[:, None] >> np.arange(NUM_DIGITS)) & 1 == 1


def flash_labels(per_label, seed):
    """Labels of a Flash-MNIST split: each of the 1,024 labels ``per_label`` times, shuffled.

    Returns:
        uint16 (1024 * per_label,).
    """
    labels = np.repeat(np.arange(NUM_LABELS, dtype=np.uint16), per_label)
    return labels[np.random.default_rng(seed).permutation(len(labels))]


def flash_videos(labels, images, order, starts, noise, rng):
    """Frames of Flash-MNIST videos with the given labels (SPEC 4).

    For each digit i in a label, 1 or 2 frames (uniformly) each hold a freshly sampled digit of
    class i pasted on fresh noise; the other frames are pure noise; frame order is shuffled.

    Args:
        labels: int (n,) 10-bit masks 0..1023.
        images: uint8 (N, 28, 28) digit pool; order, starts: its :func:`class_index`.
        noise: a :class:`NoiseSampler`; rng: a ``numpy.random.Generator``.

    Returns:
        uint8 (n, 25, 28, 28).
    """
    n = len(labels)
    copies = rng.integers(1, MAX_COPIES + 1, size=(n, NUM_DIGITS)) * label_bits(labels)
    per_video = copies.sum(axis=1)
    classes = np.repeat(np.tile(np.arange(NUM_DIGITS), n), copies.reshape(-1))
    video = np.repeat(np.arange(n), per_video)
    slot = np.arange(len(classes)) - np.repeat(np.cumsum(per_video) - per_video, per_video)
    positions = np.argsort(rng.random((n, FRAMES)), axis=1)[video, slot]
    frames = noise.sample(rng, (n, FRAMES, ROWS, COLS))
    digits = images[sample_digits(rng, classes, order, starts)]
    frames[video, positions] = paste(frames[video, positions], digits)
    return frames


def generate_flash(out, labels, images, order, starts, noise, seed, threads=2, progress=None):
    """Fill ``out`` (uint8 (n, 25, 28, 28), e.g. a memory map) with Flash-MNIST videos.

    Chunks of :data:`CHUNK_VIDEOS` videos are generated by ``threads`` threads, chunk k with
    its own child of ``SeedSequence(seed)``, so the result does not depend on ``threads``.
    Peak memory beyond ``out`` is a few chunks (about 20 MB each).

    Args:
        progress: optional callable taking the number of videos just finished (e.g. tqdm.update).
    """
    chunks = range(0, len(labels), CHUNK_VIDEOS)
    seeds = np.random.SeedSequence(seed).spawn(len(chunks))

    def work(k):
        lo = k * CHUNK_VIDEOS
        hi = min(lo + CHUNK_VIDEOS, len(labels))
        out[lo:hi] = flash_videos(labels[lo:hi], images, order, starts, noise, np.random.default_rng(seeds[k]))
        return hi - lo

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for done in pool.map(work, range(len(chunks))):
            if progress is not None:
                progress(done)


def scaled_count(count, pool, full, floor=1):
    """A count defined for full MNIST, scaled to a smaller digit pool.

    ``round(count * pool / full)``, but at least ``min(count, floor)`` (so never more than asked
    for, and 0 stays 0). Used to size Noisy-MNIST noise frames (floor 1) and Flash-MNIST videos
    per label (floor ``flash.min_per_label``: every video draws fresh digits and noise, so the
    video counts need not shrink with the digit pool) when the source is not the full 70,000
    digits (e.g. the embedded 5k default).
    """
    return 0 if count == 0 else max(min(count, max(1, floor)), int(round(count * pool / full)))


def save_samplers(path, hist, indexes):
    """Write the samplers to an .npz (no pickle), atomically.

    Args:
        hist: int64 (256,) pixel counts; indexes: dict split -> ``(order, starts)`` of
            :func:`class_index`.
    """
    arrays = {"noise_hist": hist}
    for split, (order, starts) in indexes.items():
        arrays[f"{split}_order"], arrays[f"{split}_starts"] = order, starts
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def load_samplers(path):
    """Read what :func:`save_samplers` wrote.

    Returns:
        ``(noise, indexes)``: a :class:`NoiseSampler` and dict split -> ``(order, starts)``.

    Raises:
        UserError: the file is missing or is not a samplers .npz.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = dict(data)
        noise = NoiseSampler(arrays.pop("noise_hist"))
        splits = sorted({key.rsplit("_", 1)[0] for key in arrays})
        return noise, {split: (arrays[f"{split}_order"], arrays[f"{split}_starts"]) for split in splits}
    except FileNotFoundError:
        raise UserError(f"{path}: file not found (run the sample stage first: dvc repro sample)") from None
    except (ValueError, KeyError, OSError) as err:
        raise UserError(f"{path}: not a samplers file written by the sample stage ({err})") from None
