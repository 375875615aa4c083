"""Frame features: training the extractor on Noisy-MNIST and running it over Flash-MNIST (SPEC 5)."""

import numpy as np
from mindspore import nn
from tqdm import tqdm

from .batching import predict, run_epoch
from .errors import UserError
from .models.extractor import FEATURE_DIM, FrameExtractor, NoisyMnistClassifier


def train_extractor(frames, labels, epochs, lr, batch_size, seed, phase_convolutions):
    """Train the SPEC 5 extractor with its 11-class head on Noisy-MNIST.

    Args:
        frames: uint8 (N, 28, 28); labels: uint8 (N,) in 0..10.
        epochs, lr, batch_size: Adam training settings (SPEC 5: 1, 1e-3, 64).
        seed: shuffling seed (the MindSpore seed is set by :func:`device.init`).
        phase_convolutions: the extractor's formulation (:class:`FrameExtractor`; the host's
            fast one is :func:`device.phase_convolutions_fast`).

    Raises:
        UserError: batch_size exceeds the number of frames (no step would run).

    Returns:
        ``(extractor, classifier)``: the trained Cells (classifier = extractor + head).
    """
    if len(frames) < batch_size:
        raise UserError(
            f"params.yaml: feature.batch_size {batch_size} is larger than the {len(frames)} Noisy-MNIST training frames"
        )
    extractor = FrameExtractor(phase_convolutions=phase_convolutions)
    classifier = NoisyMnistClassifier(extractor)
    step = nn.TrainOneStepCell(nn.WithLossCell(classifier, nn.NLLLoss()), nn.Adam(classifier.trainable_params(), lr))
    step.set_train(True)
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(frames))
        with tqdm(
            total=len(order) // batch_size * batch_size, desc=f"extractor epoch {epoch + 1}/{epochs}", unit="frame"
        ) as bar:
            loss = run_epoch(step, frames, labels, batch_size, order, progress=bar.update)
        print(f"extractor epoch {epoch + 1}/{epochs}: loss {loss:.4f}")
    return extractor, classifier


def extract(extractor, videos, out, batch_videos, desc="features"):
    """Write the (25, 50) feature matrix of every video into ``out``.

    Args:
        extractor: a trained :class:`FrameExtractor` (put in eval mode: no dropout).
        videos: uint8 (N, 25, 28, 28), e.g. a memory map.
        out: float32 (N, 25, 50) array to fill, e.g. a memory map.
        batch_videos: videos per forward pass (batch_videos * 25 frames).
    """
    n, length = videos.shape[:2]
    frames = videos.reshape(n * length, *videos.shape[2:])
    flat = out.reshape(n * length, FEATURE_DIM)
    with tqdm(total=len(frames), desc=desc, unit="frame", unit_scale=True) as bar:
        predict(extractor, frames, batch_videos * length, out=flat, progress=bar.update)
