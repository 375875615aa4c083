"""Kernel-path check: the frame extractor's forward pass against a matmul of the same FLOPs.

The SPEC 5 layers cost about 0.96 MFLOP per frame (conv1 288k, conv2 640k, dense 32k). This
times, in one process, the extractor's forward pass over 1,600 uint8 frames (the feature stage's
extraction batch) in each formulation, and one square float32 matmul of the same FLOPs, and
prints each pass's time and its ratio to the matmul's. A formulation far above the others is on
a slow kernel path. Measured on a 2-core Xeon: banded products 4-10x the matmul under AVX-512
and AVX2 (they do about 3.3x the FLOPs, in less square products); MindSpore's nn.Conv2d on
oneDNN's reference kernel (AVX-512) 420x. Phase convolutions are fast only where oneDNN runs
AVX2, so run it both ways:

    python bench/kernel_path.py
    ONEDNN_MAX_CPU_ISA=AVX2 python bench/kernel_path.py

Each time is the median of three timed blocks of at least ``--seconds`` (:func:`timing.median_rate`),
after a compiling pass. bench/speed.py compares whole training and extraction rates.
"""

import argparse

import mindspore as ms
import numpy as np
from mindspore import ops
from roofline import EXTRACTOR_LAYERS
from timing import median_rate

from attention_clusters import device
from attention_clusters.models.extractor import FrameExtractor

FRAMES = 1600  # the feature stage's extraction batch: 64 videos x 25 frames
# the feature's layers (SPEC 5, without the training head): 2 FLOPs a multiply-add
FLOPS_PER_FRAME = 2 * sum(outputs * fan_in * units for outputs, fan_in, units in EXTRACTOR_LAYERS[:-1])


def seconds_per_call(work, seconds):
    """Median seconds of one ``work()`` call (:func:`timing.median_rate`), after one warm-up call."""
    work()
    return 1.0 / median_rate(work, 1, seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="length of each of the three timed blocks per figure"
    )
    args = parser.parse_args()
    device.init("CPU", seed=0)
    info = device.cpu()
    print(
        f"host: {info['model']}, {info['cores']} cores, ISA {info['isa']}; "
        f"ONEDNN_MAX_CPU_ISA {info['onednn_max_cpu_isa']}, oneDNN runs {info['onednn_isa']}"
    )

    side = round((FRAMES * FLOPS_PER_FRAME / 2) ** (1 / 3))  # a (side x side) @ (side x side) matmul of the same FLOPs
    a = ms.Tensor(np.random.default_rng(0).standard_normal((side, side)).astype(np.float32))
    matmul = ops.MatMul()
    reference = seconds_per_call(lambda: matmul(a, a).asnumpy(), args.seconds)
    print(f"matmul {side} x {side} (the FLOPs of {FRAMES:,} frames): {reference * 1000:.1f} ms")

    frames = ms.Tensor(np.random.default_rng(1).integers(0, 256, (FRAMES, 28, 28), dtype=np.uint8))
    chosen = device.phase_convolutions_fast()
    for phase_convolutions in (False, True):
        net = FrameExtractor(phase_convolutions=phase_convolutions)
        net.set_train(False)
        took = seconds_per_call(lambda net=net: net(frames).asnumpy(), args.seconds)
        mark = (
            "  <- the fast one under this ISA (device.phase_convolutions_fast)" if phase_convolutions == chosen else ""
        )
        print(
            f"extractor forward, {net.kernels}: {took * 1000:.1f} ms ({FRAMES / took:,.0f} frames/s), "
            f"{took / reference:.1f}x the matmul{mark}"
        )


if __name__ == "__main__":
    main()
