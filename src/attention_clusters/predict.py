"""Classify one user video with the trained extractor and Attention Cluster.

    python -m attention_clusters.predict VIDEO [--png PNG] [--extractor CKPT] [--model CKPT] [--batch-videos N]

``VIDEO`` is an animated GIF (or any multi-frame image Pillow reads), a folder of 25 images
(taken in natural name order: ``frame2`` before ``frame10``) or a ``.npy`` of shape (25, 28, 28)
uint8. Frames that are not 28 x 28 grey are converted with Pillow (to grey, then resized), and
the report says so. The prediction is the same as the eval stage's for the same frames: the
frozen extractor (``models/extractor.ckpt``) turns each frame into its 50-d feature, the
Attention Cluster (``models/attention_cluster.ckpt`` with its JSON) scores the 1,024 digit sets.
The command line caps oneDNN's ISA as the feature stage does (:func:`main`), so the extractor runs
the same kernels.
"""

import argparse
import errno
import os
import re
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from . import batching, checkpoints, cli, device, onednn, plots, trained_model
from .errors import UserError
from .models.attention_cluster import AttentionWeights
from .models.extractor import FEATURE_DIM, FRAME_SIDE, FrameExtractor, NoisyMnistClassifier
from .params import Feature
from .paths import EXTRACTOR, MODEL
from .synth import FRAMES

TOP = 5  # digit sets listed
BATCH_VIDEOS = 64  # params.yaml feature.extract_batch_videos: the feature stage's batch
# the largest feature.extract_batch_videos params.yaml accepts (its field's upper bound)
_EXTRACT_BATCH = Feature.model_fields["extract_batch_videos"].metadata
MAX_BATCH_VIDEOS = next(rule.le for rule in _EXTRACT_BATCH if hasattr(rule, "le"))
REPO = Path(__file__).resolve().parents[2]  # the checkout whose models/ are the defaults
NAME_MAX = 255  # bytes in a file name on Linux file systems
TMP_NAME_EXTRA = 24  # storage.atomic_path writes ".<stem>.tmp-<pid><suffix>" first: 6 bytes and a pid more
OUT_OF_MEMORY = re.compile(r"Memory not enough|bad_alloc")  # how MindSpore's CPU allocator says it


# ---------------------------------------------------------------- reading a video


def load_video(path):
    """Read a user's video as the network's input.

    Args:
        path: an animated GIF (any multi-frame image Pillow reads), a folder of images, or a
            ``.npy`` file.

    Returns:
        ``(video, notes)``: uint8 (25, 28, 28), and a list of one-line notes on conversions done
        (empty when the frames were 28 x 28 grey already).

    Raises:
        UserError: the path is missing or empty, not an image / .npy, or has other than 25 frames
        (one line naming the file and what was expected).
    """
    path = Path(path)
    if path.is_dir():
        return _load_folder(path)
    if not path.is_file():
        raise UserError(f"{path}: not found (expected an animated GIF, a folder of {FRAMES} images or a .npy)")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty")
    if path.suffix.lower() == ".npy":
        return _load_npy(path), []
    return _load_animation(path)


def _load_npy(path):
    """A ``.npy`` video: must be uint8 (25, 28, 28) already (no conversion is guessed)."""
    try:
        video = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError):
        raise UserError(f"{path}: not a valid .npy array file") from None
    if not isinstance(video, np.ndarray):  # np.load opens a .npz archive whatever its name
        video.close()
        raise UserError(f"{path}: a .npz archive, expected a .npy array file")
    if video.shape != (FRAMES, FRAME_SIDE, FRAME_SIDE) or video.dtype != np.uint8:
        raise UserError(
            f"{path}: expected a uint8 array of shape ({FRAMES}, {FRAME_SIDE}, {FRAME_SIDE}), "
            f"got {video.dtype} {video.shape}"
        )
    return video


def _load_animation(path):
    """The frames of a multi-frame image file, each converted by :func:`to_frame`."""
    frames = _read_images(path, FRAMES)
    return _convert(frames, [path] * len(frames))


def _load_folder(folder):
    """The images of a folder (files not starting with '.'), in natural name order; the first
    frame of each."""
    files = sorted((f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")), key=natural_key)
    _check_count(len(files), folder, "image files")
    for file in files:
        if file.stat().st_size == 0:
            raise UserError(f"{file}: the file is empty")
    return _convert([_read_images(file)[0] for file in files], files)


def natural_key(path):
    """Sort key putting ``frame2`` before ``frame10``: the name split into text and numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", Path(path).name)]


def _read_images(path, count=None):
    """The frames of an image file as loaded Pillow images: all of them, which must number
    ``count`` when given, else the first only.

    Raises:
        UserError: not an image Pillow reads, a broken one, or another number of frames.
    """
    try:
        with Image.open(path) as image:
            if count is None:
                return [image.copy()]
            _check_count(getattr(image, "n_frames", 1), path, "frames")
            return [frame.copy() for frame in ImageSequence.Iterator(image)]
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image Pillow can read (expected a GIF, PNG, JPEG, ...)") from None
    except (OSError, ValueError, SyntaxError, IndexError, EOFError, struct.error, Image.DecompressionBombError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0][:100]  # Pillow's errors on a cut or garbled file
        raise UserError(f"{path}: broken image ({reason})") from None


def _check_count(count, path, what):
    if count != FRAMES:
        raise UserError(f"{path}: has {count} {what}, expected {FRAMES} (one Flash-MNIST video)")


def _convert(images, sources):
    """Frames from Pillow images: uint8 (25, 28, 28), and one note per kind of conversion done."""
    converted = [to_frame(image) for image in images]
    video = np.stack([frame for frame, _ in converted])
    notes = {}
    for (_, changes), source in zip(converted, sources):
        for change in changes:
            notes.setdefault(change, []).append(source)
    return video, [f"{change} ({_count(files)})" for change, files in notes.items()]


def _count(files):
    unique = list(dict.fromkeys(files))
    return f"{len(files)} frames" if len(unique) == 1 else f"{len(files)} frames, e.g. {unique[0]}"


def to_frame(image):
    """One Pillow image as a network frame, the way a user would expect it converted.

    Colour becomes grey (Pillow's ``convert("L")``: ITU-R 601 luma, transparency dropped) and
    any other size is resized to 28 x 28 (Lanczos, aspect not kept). Grey pixels stored as a
    palette or RGB (as GIF frames are) are taken as they are, without a note.

    Returns:
        ``(frame, changes)``: uint8 (28, 28), and the conversions done as short phrases.
    """
    changes = []
    if image.mode != "L":
        if not _is_grey(image):
            changes.append(f"converted {image.mode} to 8-bit grey")
        image = image.convert("L")
    if image.size != (FRAME_SIDE, FRAME_SIDE):
        changes.append(f"resized {image.size[0]}x{image.size[1]} to {FRAME_SIDE}x{FRAME_SIDE}")
        image = image.resize((FRAME_SIDE, FRAME_SIDE), Image.LANCZOS)
    return np.asarray(image, dtype=np.uint8), changes


def _is_grey(image):
    """Whether a palette / RGB(A) / bilevel image holds only opaque grey pixels (R = G = B)."""
    if image.mode not in ("1", "P", "RGB", "RGBA", "LA", "PA"):
        return False  # 16-bit, float, CMYK, ...: converting loses something
    rgba = np.asarray(image.convert("RGBA"))
    return bool(
        (rgba[..., 0] == rgba[..., 1]).all() and (rgba[..., 1] == rgba[..., 2]).all() and (rgba[..., 3] == 255).all()
    )


# ---------------------------------------------------------------- running the networks


def load_networks(extractor_path=REPO / EXTRACTOR, model_path=REPO / MODEL):
    """The frozen frame extractor and the trained Attention Cluster.

    Returns:
        ``(extractor, net, config)``: :class:`FrameExtractor`, :class:`AttentionCluster`, and the
        model's JSON config (fc, natt, feature_dims, ...).

    Raises:
        UserError: a checkpoint or the model's JSON is missing or does not fit its network.
    """
    model_json = Path(model_path).with_suffix(".json")
    for path, stage in ((extractor_path, "feature"), (model_path, "train"), (model_json, "train")):
        if not Path(path).is_file():
            raise UserError(f"{path}: model not found; train it (dvc repro {stage}) or give its path")
    device.init("CPU")
    extractor = load_extractor(extractor_path)
    net, config = trained_model.load_model(model_path)
    if list(config["feature_dims"]) != [FEATURE_DIM]:
        raise UserError(
            f"{model_path}: takes feature streams {config['feature_dims']}, expected one of the "
            f"extractor's {FEATURE_DIM}-d features"
        )
    return extractor, net, config


def load_extractor(path):
    """The frozen extractor the feature stage saved (``models/extractor.ckpt``), in eval mode.

    The stage trains it inside :class:`NoisyMnistClassifier`, which names its parameters
    ``extractor.*``; it is wrapped the same way to load them. It runs in the formulation fast in
    this process (:func:`device.phase_convolutions_fast`): the feature stage's under the same
    oneDNN cap (:func:`main` sets the stage's).

    Raises:
        UserError: the checkpoint is missing or does not fit the network.
    """
    extractor = FrameExtractor(phase_convolutions=device.phase_convolutions_fast())
    NoisyMnistClassifier(extractor)  # gives the parameters the names the stage saved
    checkpoints.load_weights(
        extractor, path, "the frame extractor", f"expected the feature stage's checkpoint ({EXTRACTOR})"
    )
    extractor.set_train(False)
    return extractor


def classify(extractor, net, video, batch_videos=BATCH_VIDEOS):
    """Run the networks on one video, as the feature and eval stages do (the same numbers).

    The video is padded to the stages' batches (``batch_videos`` videos through the extractor,
    :data:`trained_model.EVAL_BATCH` through the Attention Cluster): MindSpore's CPU kernels round
    float32 differently for other batch sizes.

    Args:
        video: uint8 (25, 28, 28).
        batch_videos: the feature stage's ``feature.extract_batch_videos``.

    Returns:
        dict with ``probabilities`` float64 (1024,) (softmax of the logits), ``logits`` float32
        (1024,), ``weights`` float32 (C, 25) attention weights of the first stream.
    """
    feats = batching.predict(extractor, video, batch_videos * FRAMES)[None]  # (1, 25, 50), as features.extract
    logits = batching.predict(net, feats, trained_model.EVAL_BATCH)[0]
    weights = batching.predict(AttentionWeights(net), feats, trained_model.EVAL_BATCH)[0]
    return {"logits": logits, "probabilities": softmax(logits), "weights": weights}


def softmax(logits):
    """float64 softmax of a 1-d array of logits."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def top_sets(probabilities, k=TOP):
    """The k most probable digit sets: list of ``(label, probability)``, most probable first."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(int(label), float(probabilities[label])) for label in order]


def report(source, notes, result):
    """The lines printed for one video: conversions, the digits present, the top-5 sets."""
    best, probability = top_sets(result["probabilities"], 1)[0]
    lines = [f"{source}: {note}" for note in notes]
    lines.append(
        f"digits present: {' '.join(map(str, plots.label_digits(best))) or 'none'} "
        f"(label {best}, probability {100 * probability:.1f} %)"
    )
    lines.append("top-5 digit sets:")
    lines += [
        f"  {plots.digits_text(label):<32} label {label:4d}  {100 * p:5.1f} %"
        for label, p in top_sets(result["probabilities"])
    ]
    return lines


# ---------------------------------------------------------------- command line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m attention_clusters.predict", description=__doc__.split("\n")[0])
    parser.add_argument("video", help=f"animated GIF, folder of {FRAMES} images, or .npy uint8 ({FRAMES}, 28, 28)")
    parser.add_argument(
        "--png", type=_png_path, help="also draw the frames with each attention unit's weights under them (a .png path)"
    )
    parser.add_argument("--extractor", default=str(REPO / EXTRACTOR), help="frame extractor checkpoint")
    parser.add_argument(
        "--batch-videos",
        type=_batch_videos,
        default=BATCH_VIDEOS,
        help=f"the feature stage's feature.extract_batch_videos, 1 to {MAX_BATCH_VIDEOS:,} (the same batch gives "
        "the same bits)",
    )
    parser.add_argument("--model", default=str(REPO / MODEL), help="Attention Cluster checkpoint (JSON beside it)")
    return parser.parse_args(argv)


def _batch_videos(text):
    """argparse type: an integer from 1 to :data:`MAX_BATCH_VIDEOS` (params.yaml's range)."""
    digits = text.isascii() and text.isdigit() and len(text) <= len(str(MAX_BATCH_VIDEOS))  # "²".isdigit() too
    if not digits or not 1 <= int(text) <= MAX_BATCH_VIDEOS:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to {MAX_BATCH_VIDEOS:,}, got {text!r}")
    return int(text)


def _png_path(text):
    """argparse type: a path a PNG can be written to: ending in .png, not a folder, a name short
    enough for the temporary file written beside it first, under no file or broken link (missing
    folders above it are created when the picture is written)."""
    path = Path(text)
    if text.startswith("~"):
        raise argparse.ArgumentTypeError(f"{text}: ~ is not expanded here; give the path itself")
    if path.suffix.lower() != ".png" or text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text}: expected a path ending in .png (the picture is a PNG)")
    if len(os.fsencode(path.name)) > NAME_MAX - TMP_NAME_EXTRA:
        raise argparse.ArgumentTypeError(
            f"{text}: the file name is too long (at most {NAME_MAX - TMP_NAME_EXTRA} bytes)"
        )
    try:
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: is a folder, expected a .png file path")
        above = next(parent for parent in path.absolute().parents if os.path.lexists(parent))
    except OSError as err:  # e.g. a folder name above it longer than the file system allows
        raise argparse.ArgumentTypeError(f"{text}: not a usable path ({err.strerror})") from None
    if above.is_symlink() and not above.exists():
        raise argparse.ArgumentTypeError(f"{text}: {above} is a broken link")
    if not above.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {above} is a file, not a folder")
    return path


def _check_png_apart(png, video):
    """The picture must not replace the video or land among a folder video's frames.

    Raises:
        UserError: ``png`` is ``video`` or inside the folder ``video``.
    """
    png, video = Path(png).resolve(), Path(video).resolve()
    if png == video:
        raise UserError(f"--png {png}: is the video itself; write the picture elsewhere")
    if video in png.parents:
        raise UserError(f"--png {png}: is inside the video's folder {video}, whose files are its frames")


def run(args):
    """Classify ``args.video``; print the report; draw ``args.png`` if asked. Returns a summary."""
    if args.png:
        _check_png_apart(args.png, args.video)
    video, notes = load_video(args.video)
    extractor, net, _ = load_networks(args.extractor, args.model)
    try:
        result = classify(extractor, net, video, args.batch_videos)
    except (MemoryError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not OUT_OF_MEMORY.search(str(err)):
            raise
        raise UserError(
            f"--batch-videos {args.batch_videos}: out of memory padding one video to that batch; use the feature "
            f"stage's feature.extract_batch_videos (default {BATCH_VIDEOS})"
        ) from None
    print("\n".join(report(args.video, notes, result)))
    best, probability = top_sets(result["probabilities"], 1)[0]
    if args.png:
        title = f"{Path(args.video).name}: " + plots.prediction_title(best, probability=probability)
        try:
            plots.attention_figure(video[None], result["weights"][None], [title], args.png)
        except OSError as err:  # e.g. a read-only or virtual folder; a full disk is storage's own line
            cause = f"{err.strerror}, {errno.errorcode.get(err.errno, err.errno)}" if err.errno else str(err)
            raise UserError(f"{args.png}: cannot write it ({cause}); no file was created") from None
        return f"attention picture written to {args.png}"
    return f"digits {plots.digits_text(best)}"


def main(argv=None):
    """The command line: ``python -m attention_clusters.predict VIDEO [...]``. Caps oneDNN as the
    feature stage does (:func:`onednn.cap_for_convolutions`), so the extractor runs the same
    kernels and gives the stage's features bit for bit."""
    args = parse_args(argv)
    onednn.cap_for_convolutions()  # before MindSpore's first kernel, when oneDNN reads the cap
    cli.main("predict", lambda: run(args), check_inputs=False)


if __name__ == "__main__":
    main()
