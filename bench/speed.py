"""Speed benchmark: figures and ratios measured in this run, on this machine, under two CPU ISAs.

Every figure is measured twice, each time in a fresh child process: with the CPU's own ISA
(``ONEDNN_MAX_CPU_ISA`` unset; AVX-512 where the CPU has it) and with ``ONEDNN_MAX_CPU_ISA=AVX2``
(an AVX2-only host, emulated; oneDNN reads the variable when it loads). Per ISA, against a
baseline measured in the same child:

1. Attention Cluster training samples/s (batch 64) at fc=1 natt=8 and fc=2 natt=128: ours
   (all units in one batched product) against the per-unit Python loop of the reference code.
2. Frame extractor training frames/s (batch 64) and extraction frames/s (64 videos = 1,600
   frames a pass, as the feature stage runs): ours (banded matrix products) against the plain
   ``nn.Conv2d`` / ``nn.MaxPool2d`` layers.
3. The same networks in PyTorch (CPU), when installed (``pip install -r
   bench/requirements-torch.txt``), with ours / PyTorch ratios; otherwise skipped with one line.
4. The feature stage's time at full MNIST size from these rates: 330,000 training frames
   (one epoch) and 3,072,000 frames extracted.

Usage: python bench/speed.py [--steps N] [--isa native avx2]
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

BATCH = 64
EXTRACT_VIDEOS = 64  # videos per extraction pass (params.yaml feature.extract_batch_videos)
AC_CONFIGS = ((1, 8), (2, 128))
FULL_TRAIN_FRAMES, FULL_EXTRACT_FRAMES = 330_000, 3_072_000  # SPEC 3 and SPEC 4 at full MNIST
ISAS = {"native": None, "avx2": "AVX2"}


def host():
    """One line naming this CPU: model, family/model numbers, cores, widest vector ISA."""
    from attention_clusters import device

    info = device.cpu()
    return f"{info['model']}, {info['cores']} cores, ISA {info['isa']}"


def train_rate(net, loss, x, y, steps, lr=1e-3):
    """MindSpore training samples/s: ``steps`` Adam steps on one batch after a compiling step."""
    import mindspore as ms
    from mindspore import nn

    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss), nn.Adam(net.trainable_params(), lr))
    step.set_train(True)
    xs, ys = ms.Tensor(x), ms.Tensor(y)
    step(xs, ys)
    start = time.perf_counter()
    for _ in range(steps):
        step(xs, ys)
    return steps * len(x) / (time.perf_counter() - start)


def extract_rate(extractor, videos):
    """Frames/s of :func:`features.extract` (the feature stage's loop) over ``videos``."""
    from attention_clusters import features

    out = np.empty(videos.shape[:2] + (50,), np.float32)
    features.extract(extractor, videos[:EXTRACT_VIDEOS], out[:EXTRACT_VIDEOS], EXTRACT_VIDEOS, desc="warm-up")
    start = time.perf_counter()
    features.extract(extractor, videos, out, EXTRACT_VIDEOS, desc="extract")
    return videos.shape[0] * videos.shape[1] / (time.perf_counter() - start)


def measure(steps):
    """Every figure of one ISA setting (run in a child process): dict name -> rate."""
    from mindspore import nn

    from attention_clusters import device, features
    from attention_clusters.models.attention_cluster import NUM_CLASSES, AttentionCluster
    from attention_clusters.models.extractor import FrameExtractor, NoisyMnistClassifier
    from baselines import LoopAttentionCluster, PlainFrameExtractor

    device.init("CPU", seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 25, 50)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32)
    ce = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    out = {}
    for fc, natt in AC_CONFIGS:
        out[f"ac_{fc}_{natt}"] = train_rate(AttentionCluster((50,), natt=natt, fc=fc), ce, x, y, steps)
        out[f"ac_{fc}_{natt}_baseline"] = train_rate(LoopAttentionCluster(50, natt, fc), ce, x, y, max(5, steps // 5))
    frames = features.normalise(rng.integers(0, 256, (BATCH, 28, 28), dtype=np.uint8))
    labels = rng.integers(0, 11, BATCH).astype(np.int32)
    out["extractor_train"] = train_rate(NoisyMnistClassifier(FrameExtractor()), nn.NLLLoss(), frames, labels, steps * 4)
    out["extractor_train_baseline"] = train_rate(NoisyMnistClassifier(PlainFrameExtractor()), nn.NLLLoss(), frames, labels, max(3, steps // 5))
    videos = rng.integers(0, 256, (EXTRACT_VIDEOS * 4, 25, 28, 28), dtype=np.uint8)
    out["extract"] = extract_rate(FrameExtractor(), videos)
    out["extract_baseline"] = extract_rate(PlainFrameExtractor(), videos[:EXTRACT_VIDEOS])
    try:
        import torch_models
    except ImportError:
        return out
    torch_rates = torch_models.figures(steps, len(os.sched_getaffinity(0)), AC_CONFIGS, BATCH, EXTRACT_VIDEOS * 25)
    out.update({f"{key}_torch": value for key, value in torch_rates.items()})
    return out


def run_child(isa, steps):
    """Run :func:`measure` in a fresh process with ``ONEDNN_MAX_CPU_ISA`` set for ``isa``."""
    env = dict(os.environ)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if ISAS[isa]:
        env["ONEDNN_MAX_CPU_ISA"] = ISAS[isa]
    cmd = [sys.executable, __file__, "--child", "--steps", str(steps)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"bench child for ISA {isa} failed:\n{result.stderr[-3000:]}")
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
    parser.add_argument("--steps", type=int, default=50, help="timed Attention Cluster steps (extractor: 4x)")
    parser.add_argument("--isa", nargs="+", choices=sorted(ISAS), default=list(ISAS), help="ISA settings to run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if args.child:
        print(json.dumps(measure(args.steps)))
        return
    print(f"host: {host()}")
    print("baselines: per-unit Python loop (Attention Cluster), plain nn.Conv2d/nn.MaxPool2d layers (extractor)")
    for isa in args.isa:
        rates = run_child(isa, args.steps)
        label = "the CPU's own" if ISAS[isa] is None else f"ONEDNN_MAX_CPU_ISA={ISAS[isa]}"
        print(f"\n== ISA: {label} ==")
        if "ac_1_8_torch" not in rates:
            print("PyTorch not installed: its columns are skipped (pip install -r bench/requirements-torch.txt)")
        print(table(rates).to_string())
        seconds = FULL_TRAIN_FRAMES / rates["extractor_train"] + FULL_EXTRACT_FRAMES / rates["extract"]
        print(f"feature stage at full MNIST size (extractor training + extraction): about {seconds / 60:.1f} minutes")


if __name__ == "__main__":
    main()
