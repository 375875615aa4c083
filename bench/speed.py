"""Speed benchmark: figures and ratios measured in this run, on this machine, under two CPU ISAs.

Every figure is measured under two ISA settings: the CPU's own (AVX-512 where the CPU has it)
and an AVX2-only host, emulated by ``ONEDNN_MAX_CPU_ISA=AVX2`` (MindSpore's and PyTorch's oneDNN)
and ``MKL_ENABLE_INSTRUCTIONS=AVX2`` (PyTorch's matrix products); both libraries read them when
they load. Each (ISA, figure, implementation) runs in a fresh
child process, as each stage does: a process that trained one network first runs the next one
slower (measured: extractor training 4,490 -> 3,450 frames/s after an Attention Cluster
natt=128 run in the same process). Per ISA, against a baseline measured in the same run:

1. Attention Cluster training samples/s (batch 64) at fc=1 natt=8 and fc=2 natt=128: ours
   (all units in one batched product) against the per-unit Python loop of the reference code.
2. Frame extractor training frames/s (batch 64) and extraction frames/s (64 videos = 1,600
   uint8 frames a pass, the feature stage's loop): ours, under the feature stage's oneDNN cap
   (AVX2 unless the ISA setting sets one: phase convolutions where oneDNN runs AVX2, banded
   products where it runs AVX-512), against the plain ``nn.Conv2d`` / ``nn.MaxPool2d`` layers.
3. The same networks in PyTorch (CPU), when installed (``pip install -r
   bench/requirements-torch.txt``), with ours / PyTorch ratios; otherwise skipped with one line.
4. The feature stage's time at full MNIST size from these rates: 330,000 training frames
   (one epoch) and 3,072,000 frames extracted.

Each rate is the median of three timed blocks of at least ``--seconds`` (default 2) each, after
a compiling step: on a shared 2-core VM
single passes of the same work vary 2-3x (numpy's own matmul too), so compare medians, and
rerun when two runs of a figure differ by more than ~20 %.

Usage: python bench/speed.py [--seconds S] [--isa native avx2]

bench/kernel_path.py times the extractor's forward pass against a matmul of the same FLOPs.
"""

import argparse
import importlib.util
import itertools
import json
import os
import subprocess
import sys

import numpy as np

from timing import median_rate

BATCH = 64
EXTRACT_VIDEOS = 64  # videos per extraction pass (params.yaml feature.extract_batch_videos)
AC_CONFIGS = ((1, 8), (2, 128))
AC_CLASSES = 1024  # Flash-MNIST labels (models.attention_cluster.NUM_CLASSES)
FIGURES = tuple(f"ac_{fc}_{natt}" for fc, natt in AC_CONFIGS) + ("extractor_train", "extract")
IMPLEMENTATIONS = ("ours", "baseline", "torch")
FULL_TRAIN_FRAMES, FULL_EXTRACT_FRAMES = 330_000, 3_072_000  # SPEC 3 and SPEC 4 at full MNIST
ISAS = {"native": {}, "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}  # environment per setting


def host():
    """One line naming this CPU: model, family/model numbers, cores, widest vector ISA."""
    from attention_clusters import device

    info = device.cpu()
    return f"{info['model']}, {info['cores']} cores, ISA {info['isa']}"


def train_rate(net, loss, x, y, seconds, lr=1e-3):
    """MindSpore training samples/s of Adam steps on one batch (:func:`timing.median_rate`)."""
    import mindspore as ms
    from mindspore import nn

    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss), nn.Adam(net.trainable_params(), lr))
    step.set_train(True)
    xs, ys = ms.Tensor(x), ms.Tensor(y)
    step(xs, ys)
    return median_rate(lambda: step(xs, ys), len(x), seconds)


def extract_rate(extractor, videos, seconds):
    """Frames/s of :func:`features.extract` (the feature stage's loop) over ``videos``, one
    pass of ``EXTRACT_VIDEOS`` a call (:func:`timing.median_rate`)."""
    from attention_clusters import features

    out = np.empty(videos.shape[:2] + (50,), np.float32)
    passes = itertools.count()

    def one_pass():
        lo = next(passes) % (len(videos) // EXTRACT_VIDEOS) * EXTRACT_VIDEOS
        features.extract(extractor, videos[lo : lo + EXTRACT_VIDEOS], out[lo : lo + EXTRACT_VIDEOS], EXTRACT_VIDEOS, desc="extract")

    one_pass()
    return median_rate(one_pass, EXTRACT_VIDEOS * videos.shape[1], seconds)


def inputs(figure):
    """The numpy inputs of one figure, the same for every implementation: (x, y) or videos."""
    rng = np.random.default_rng(0)
    if figure.startswith("ac_"):
        return rng.standard_normal((BATCH, 25, 50)).astype(np.float32), rng.integers(0, AC_CLASSES, BATCH).astype(np.int32)
    if figure == "extractor_train":
        return rng.integers(0, 256, (BATCH, 28, 28), dtype=np.uint8), rng.integers(0, 11, BATCH).astype(np.int32)
    return rng.integers(0, 256, (EXTRACT_VIDEOS * 4, 25, 28, 28), dtype=np.uint8)


def measure(figure, implementation, seconds):
    """One figure of one implementation (run in a fresh child process): samples/s or frames/s."""
    data = inputs(figure)
    if implementation == "torch":
        import torch_models

        return torch_models.rate(figure, data, seconds, len(os.sched_getaffinity(0)), EXTRACT_VIDEOS * 25)
    from mindspore import nn

    from attention_clusters import device, onednn
    from attention_clusters.models.attention_cluster import AttentionCluster
    from attention_clusters.models.extractor import FrameExtractor, NoisyMnistClassifier
    from baselines import LoopAttentionCluster, PlainFrameExtractor

    ours = implementation == "ours"
    if figure.startswith("extract") and ours:
        onednn.cap_for_convolutions()  # as the feature stage does (no-op where a cap is set)
    device.init("CPU", seed=0)
    if figure.startswith("ac_"):
        fc, natt = (int(v) for v in figure.split("_")[1:])
        net = AttentionCluster((50,), natt=natt, fc=fc) if ours else LoopAttentionCluster(50, natt, fc)
        ce = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
        return train_rate(net, ce, *data, seconds)
    extractor = FrameExtractor(phase_convolutions=device.phase_convolutions_fast()) if ours else PlainFrameExtractor()
    if figure == "extractor_train":
        return train_rate(NoisyMnistClassifier(extractor), nn.NLLLoss(), *data, seconds)
    return extract_rate(extractor, data, seconds)


def run_child(isa, figure, implementation, seconds):
    """Run :func:`measure` in a fresh process with the environment of ISA setting ``isa``."""
    env = {key: value for key, value in os.environ.items() if key not in (*ISAS["avx2"], "DNNL_MAX_CPU_ISA")}
    env.update(ISAS[isa])
    cmd = [sys.executable, __file__, "--child", figure, implementation, "--seconds", str(seconds)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"bench child {figure}/{implementation} under ISA {isa} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(rates):
    """pandas DataFrame: one row per figure, ours / baseline / PyTorch and the two ratios."""
    import pandas as pd

    names = {f"ac_{fc}_{natt}": f"Attention Cluster training fc={fc} natt={natt}, samples/s" for fc, natt in AC_CONFIGS}
    names["extractor_train"] = f"extractor training (batch {BATCH}), frames/s"
    names["extract"] = f"extraction ({EXTRACT_VIDEOS * 25:,} frames a pass), frames/s"
    rows = []
    for key, name in names.items():
        ours, base, torch = rates[key], rates[f"{key}_baseline"], rates.get(f"{key}_torch")
        rows.append(
            {
                "figure": name,
                "ours": f"{ours:,.0f}",
                "baseline": f"{base:,.0f}",
                "ours/baseline": f"{ours / base:.1f}x",
                "PyTorch": f"{torch:,.0f}" if torch else "-",
                "ours/PyTorch": f"{ours / torch:.2f}x" if torch else "-",
            }
        )
    return pd.DataFrame(rows).set_index("figure")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each of the three timed blocks per figure")
    parser.add_argument("--isa", nargs="+", choices=sorted(ISAS), default=list(ISAS), help="ISA settings to run")
    parser.add_argument("--child", nargs=2, metavar=("FIGURE", "IMPLEMENTATION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if args.child:
        print(json.dumps(measure(*args.child, args.seconds)))
        return
    implementations = IMPLEMENTATIONS if importlib.util.find_spec("torch") else IMPLEMENTATIONS[:2]
    print(f"host: {host()}")
    print("baselines: per-unit Python loop (Attention Cluster), plain nn.Conv2d/nn.MaxPool2d layers (extractor)")
    if "torch" not in implementations:
        print("PyTorch not installed: its columns are skipped (pip install -r bench/requirements-torch.txt)")
    for isa in args.isa:
        rates = {}
        for figure in FIGURES:
            for implementation in implementations:
                key = figure if implementation == "ours" else f"{figure}_{implementation}"
                rates[key] = run_child(isa, figure, implementation, args.seconds)
        label = " ".join(f"{key}={value}" for key, value in ISAS[isa].items()) or "the CPU's own"
        print(f"\n== ISA: {label} ==")
        print(table(rates).to_string())
        seconds = FULL_TRAIN_FRAMES / rates["extractor_train"] + FULL_EXTRACT_FRAMES / rates["extract"]
        print(f"feature stage at full MNIST size (extractor training + extraction): about {seconds / 60:.1f} minutes")


if __name__ == "__main__":
    main()
