"""Stage feature: train the frame extractor on Noisy-MNIST, then extract Flash-MNIST features (SPEC 5).

Unless the user chose an ISA for oneDNN, this stage caps it at AVX2 before its first MindSpore
kernel, and then runs the extractor in the formulation fast under that ISA: phase convolutions on
oneDNN's AVX2 GEMM path, measured faster than the banded products on an AVX-512 host (full
MNIST: 2 min 26 s against 3 min 21 s; docs/speed.md). Attention Cluster training
keeps the CPU's own ISA.
"""

import time

import numpy as np

from attention_clusters import (
    batching,
    checkpoints,
    cli,
    device,
    evaluation,
    features,
    mnist,
    onednn,
    params,
    paths,
    storage,
)
from attention_clusters.models.extractor import FEATURE_DIM


def run():
    p = params.load()
    onednn.cap_for_convolutions()  # before MindSpore's first kernel, when oneDNN reads the cap
    phase_convolutions = device.phase_convolutions_fast()
    device.init(p.device_target, seed=p.feature.seed)  # bit-reproducible on any thread count (see models/extractor.py)
    frames = storage.load_npy(paths.noisy_file("train", "frames"), mmap=True)
    labels = storage.load_npy(paths.noisy_file("train", "labels"))
    start = time.perf_counter()
    extractor, classifier = features.train_extractor(
        frames, labels, p.feature.epochs, p.feature.lr, p.feature.batch_size, p.feature.seed, phase_convolutions
    )
    train_fps = p.feature.epochs * len(frames) / (time.perf_counter() - start)
    checkpoints.save_checkpoint(extractor, paths.EXTRACTOR)

    test_frames = storage.load_npy(paths.noisy_file("test", "frames"))
    test_labels = storage.load_npy(paths.noisy_file("test", "labels"))
    logits = batching.predict(classifier, test_frames, 1024)
    top1 = evaluation.accuracy(logits, test_labels)

    extracted, start = 0, time.perf_counter()
    for split in ("train", "val", "test"):
        videos = storage.load_npy(paths.flash_file(split, "videos"), mmap=True)
        with storage.npy_writer(paths.feature_file(split), videos.shape[:2] + (FEATURE_DIM,), np.float32) as out:
            features.extract(extractor, videos, out, p.feature.extract_batch_videos, desc=f"features {split}")
        extracted += videos.shape[0] * videos.shape[1]
    extract_fps = extracted / (time.perf_counter() - start)

    storage.write_json(
        paths.METRICS / "feature.json",
        {
            "noisy_test_top1": round(top1, 3),
            "noisy_test_frames": len(test_labels),
            "train_frames_per_s": round(train_fps),
            "extract_frames_per_s": round(extract_fps),
            "source": mnist.read_provenance(paths.SOURCE_JSON)["source"],
            "cpu": device.cpu(),
            "kernels": extractor.kernels,
        },
    )
    return (
        f"Noisy-MNIST test top-1 {top1:.2f} %; trained at {train_fps:,.0f} "
        f"frames/s, extracted {extracted:,} frames at {extract_fps:,.0f} frames/s"
    )


if __name__ == "__main__":
    cli.main("feature", run)
