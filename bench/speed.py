"""Speed benchmark: figures and ratios measured in this run, on this machine, under two CPU ISAs.

Every figure is measured under two ISA settings: the CPU's own (AVX-512 where the CPU has it)
and an AVX2-only host, emulated by ``ONEDNN_MAX_CPU_ISA=AVX2`` (MindSpore's and PyTorch's oneDNN)
and ``MKL_ENABLE_INSTRUCTIONS=AVX2`` (PyTorch's matrix products); both libraries read them when
they load. Each (ISA, figure, implementation) runs in a fresh
child process, as each stage does: a process that trained one network first runs the next one
slower (measured: extractor training 4,490 -> 3,450 frames/s after an Attention Cluster
natt=128 run in the same process). Per ISA, against a baseline measured in the same run:

1. Attention Cluster training samples/s (batch 64) at fc=1 natt=1 (the default), fc=1 natt=8
   and fc=2 natt=128: ours is the train stage's own epoch loop (``training.Trainer.train_epoch``:
   host-side batches and dropout masks, the loss read back every step) with its fused CPU
   kernels (``fused_ops``), against the same loop on MindSpore's own kernels (column
   "MindSpore kernels"), the same steps on inputs made into Tensors before timing (column
   "step alone": what is left when the host's work, the batch gather, dropout mask and input
   Tensors, is off the critical path; "host share" is the part of ours it saves) and the
   per-unit Python loop of the reference code on one resident batch.
2. Frame extractor training frames/s (batch 64) and extraction frames/s (64 videos = 1,600
   uint8 frames a pass, the feature stage's loop): ours, under the feature stage's oneDNN cap
   (AVX2 unless the ISA setting sets one: phase convolutions where oneDNN runs AVX2, banded
   products where it runs AVX-512), against the plain ``nn.Conv2d`` / ``nn.MaxPool2d`` layers.
3. The same networks in PyTorch (CPU), when installed (``pip install -r
   bench/requirements.txt``), with ours / PyTorch ratios; otherwise skipped with one line.
   Ours with MindSpore's graph kernel fusion (``enable_graph_kernel``: AKG compiles fused
   kernels of the graph's element-wise work and Adam), column "graph kernel fusion", when AKG
   can run (its ``decorator`` import, in the same requirements file); the stages do not use it.
4. The feature stage's time at full MNIST size from these rates: 330,000 training frames
   (one epoch) and 3,072,000 frames extracted.
5. A roofline line per figure of ours: training FLOPs per sample (3x the forward's multiply-adds
   x 2, the usual forward + two backward products), bytes of Adam state touched per sample
   (weights, gradient and two moments read, three written: 28 bytes a parameter a step, over the
   batch), the CPU kernels one step launches and the busiest ones (MindSpore's profiler, one
   profiled block), and the achieved FLOP rate as a fraction of this host's large-matmul rate
   (a 1024 x 1024 x 1024 float32 MatMul in MindSpore, measured in the same run).

Each rate is the median of three timed blocks of at least ``--seconds`` (default 2) each, after
a compiling step: on a shared 2-core VM
single passes of the same work vary 2-3x (numpy's own matmul too), so compare medians, and
rerun when two runs of a figure differ by more than ~20 %.

``--cpus 0`` runs every measurement pinned to CPU 0 alone (one thread, ours and PyTorch alike):
at natt <= 8 a step is mostly one thread launching kernels, and a sweep runs one row per core
(docs/results.md, "Sweep").

Usage: python bench/speed.py [--seconds S] [--isa native avx2] [--figures ac_1_1 ...] [--cpus 0]

bench/kernel_path.py times the extractor's forward pass against a matmul of the same FLOPs.
"""

import argparse
import importlib.util
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import roofline
from timing import median_rate

BATCH = 64
EXTRACT_VIDEOS = 64  # videos per extraction pass (params.yaml feature.extract_batch_videos)
AC_CONFIGS = ((1, 1), (1, 8), (2, 128))
FIGURES = tuple(f"ac_{fc}_{natt}" for fc, natt in AC_CONFIGS) + ("extractor_train", "extract")  # training figures first
IMPLEMENTATIONS = ("ours", "stock", "resident", "fusion", "baseline", "torch")  # stock: ours on MindSpore's own
# kernels; resident: ours on inputs made into Tensors before timing (ac_work); fusion: ours with graph kernel fusion
MAX_SECONDS = 600.0  # a timed block; a full run times about 100 blocks per ISA
FULL_TRAIN_FRAMES, FULL_EXTRACT_FRAMES = 330_000, 3_072_000  # SPEC 3 and SPEC 4 at full MNIST
ISAS = {
    "native": {},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}  # environment per setting


def _torch_missing():
    return None if importlib.util.find_spec("torch") else "PyTorch not installed"


def _fusion_missing():
    if not importlib.util.find_spec("decorator"):
        return "graph kernel fusion: AKG needs the decorator package"
    return None if shutil.which("g++") else "graph kernel fusion: AKG links its kernels with g++, not found"


MISSING = {"torch": _torch_missing, "fusion": _fusion_missing}  # why an optional column cannot run, or None


def host():
    """One line naming this CPU: model, family/model numbers, cores, widest vector ISA."""
    from attention_clusters import device

    info = device.cpu()
    return f"{info['model']}, {info['cores']} cores, ISA {info['isa']}"


def ac_work(fc, natt, fused, steps=16, resident=False):
    """The train stage's epoch loop at batch 64: a :class:`training.Trainer` on ``steps`` batches
    of random features, with the fused kernels if ``fused`` (as the train stage on CPU) or
    MindSpore's own; each call of the returned work trains one epoch. With ``resident``, each
    call runs the trainer's step again on the Tensors the loop made for its first epoch (batches,
    labels, dropout masks): the step alone, the loss still read back every step."""
    from types import SimpleNamespace

    from attention_clusters import fused_ops, training

    x, y = inputs(f"ac_{fc}_{natt}", BATCH * steps)
    p = SimpleNamespace(fc=fc, natt=natt, lr=1e-3, weight_decay=0.0, batch_size=BATCH, epochs=1, seed=0)
    p.__dict__.update(loss_reduction="sum", optimizer="adam", lr_schedule="constant", warmup_epochs=0, patience=0)
    ops = fused_ops.load("CPU")[0] if fused else None
    trainer = training.Trainer(p, x, y, x[:BATCH], y[:BATCH], tempfile.mkdtemp(), log=lambda line: None, fused=ops)
    if resident:
        step = trainer.step
        trainer.step = recorder = _Recorder(step)
        trainer.train_epoch(1)
        trainer.step = step
        return lambda: [float(step(*batch).asnumpy()) for batch in recorder.inputs], len(x), steps
    epochs = itertools.count(1)
    return lambda: trainer.train_epoch(next(epochs)), len(x), steps


class _Recorder:
    """Stands in for a training step cell: runs it and keeps the inputs of every call."""

    def __init__(self, step):
        self.step, self.inputs = step, []

    def set_train(self, mode=True):
        self.step.set_train(mode)

    def __call__(self, *inputs):
        self.inputs.append(inputs)
        return self.step(*inputs)


def train_work(net, loss, x, y, lr=1e-3):
    """Adam steps of ``net`` under ``loss`` on one resident batch, one step a call."""
    import mindspore as ms
    from mindspore import nn

    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss), nn.Adam(net.trainable_params(), lr))
    step.set_train(True)
    xs, ys = ms.Tensor(x), ms.Tensor(y)
    return lambda: step(xs, ys).asnumpy(), len(x), 1


def extract_work(extractor, videos):
    """:func:`features.extract` (the feature stage's loop) over ``videos``, one pass of
    ``EXTRACT_VIDEOS`` videos a call."""
    from attention_clusters import features

    out = np.empty(videos.shape[:2] + (50,), np.float32)
    passes = itertools.count()

    def one_pass():
        lo = next(passes) % (len(videos) // EXTRACT_VIDEOS) * EXTRACT_VIDEOS
        features.extract(
            extractor, videos[lo : lo + EXTRACT_VIDEOS], out[lo : lo + EXTRACT_VIDEOS], EXTRACT_VIDEOS, desc="extract"
        )

    return one_pass, EXTRACT_VIDEOS * videos.shape[1], 1


def inputs(figure, samples=BATCH):
    """The numpy inputs of one figure, the same for every implementation: (x, y) or videos."""
    rng = np.random.default_rng(0)
    if figure.startswith("ac_"):
        x = rng.standard_normal((samples, roofline.FRAMES, roofline.FEATURES)).astype(np.float32)
        return x, rng.integers(0, roofline.CLASSES, samples).astype(np.int32)
    if figure == "extractor_train":
        return rng.integers(0, 256, (BATCH, 28, 28), dtype=np.uint8), rng.integers(0, 11, BATCH).astype(np.int32)
    return rng.integers(0, 256, (EXTRACT_VIDEOS * 4, 25, 28, 28), dtype=np.uint8)


def work_of(figure, implementation):
    """``(work, items, steps)`` of one MindSpore figure under ``implementation`` ("ours",
    "stock", "resident", "fusion" or "baseline"): a callable doing one unit of its work, the samples or
    frames that unit handles and the training steps (or passes) it runs."""
    import mindspore as ms
    from baselines import LoopAttentionCluster, PlainFrameExtractor
    from mindspore import nn

    from attention_clusters import device, onednn
    from attention_clusters.models.extractor import FrameExtractor, NoisyMnistClassifier

    ours = implementation != "baseline"
    if figure.startswith("extract") and ours:
        onednn.cap_for_convolutions()  # as the feature stage does (no-op where a cap is set)
    device.init("CPU", seed=0)
    if implementation == "fusion":
        ms.set_context(enable_graph_kernel=True)  # deprecated in 2.10; jit_level O1 does not fuse on CPU
    if figure.startswith("ac_"):
        fc, natt = (int(v) for v in figure.split("_")[1:])
        if ours:
            return ac_work(fc, natt, fused=implementation != "stock", resident=implementation == "resident")
        ce = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
        return train_work(LoopAttentionCluster(roofline.FEATURES, natt, fc), ce, *inputs(figure))
    extractor = FrameExtractor(phase_convolutions=device.phase_convolutions_fast()) if ours else PlainFrameExtractor()
    if figure == "extractor_train":
        return train_work(NoisyMnistClassifier(extractor), nn.NLLLoss(), *inputs(figure))
    return extract_work(extractor, inputs(figure))


def measure(figure, implementation, seconds):
    """One figure of one implementation (run in a fresh child process): samples/s or frames/s;
    for implementation ``profile``, ours under MindSpore's profiler (:func:`roofline.kernels`);
    for figure ``matmul``, this host's large-matmul FLOP/s (:func:`roofline.matmul_rate`)."""
    if figure == "matmul":
        return roofline.matmul_rate(seconds)
    if implementation == "torch":
        import torch_models

        return torch_models.rate(figure, inputs(figure), seconds, len(os.sched_getaffinity(0)), EXTRACT_VIDEOS * 25)
    work, items, steps = work_of(figure, "ours" if implementation == "profile" else implementation)
    work()  # compiles
    if implementation == "profile":
        return roofline.kernels(work, steps)
    return median_rate(work, items, seconds)


def run_child(isa, figure, implementation, seconds):
    """Run :func:`measure` in a fresh process with the environment of ISA setting ``isa``, in a
    temporary working folder that also holds AKG's compiled kernels (graph kernel fusion writes
    them under ``MS_COMPILER_CACHE_PATH`` and a log into the working folder)."""
    env = {key: value for key, value in os.environ.items() if key not in (*ISAS["avx2"], "DNNL_MAX_CPU_ISA")}
    env.update(ISAS[isa])
    cmd = [sys.executable, os.path.abspath(__file__), "--child", figure, implementation, "--seconds", str(seconds)]
    with tempfile.TemporaryDirectory(prefix="ac-bench-") as folder:
        env["MS_COMPILER_CACHE_PATH"] = folder
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=folder)
    if result.returncode != 0:
        sys.exit(f"bench child {figure}/{implementation} under ISA {isa} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(rates):
    """pandas DataFrame: one row per figure: ours, on MindSpore's own kernels, the step alone,
    with graph kernel fusion, baseline, PyTorch and the ratios of ours to each."""
    import pandas as pd

    names = {f"ac_{fc}_{natt}": f"Attention Cluster training fc={fc} natt={natt}, samples/s" for fc, natt in AC_CONFIGS}
    names["extractor_train"] = f"extractor training (batch {BATCH}), frames/s"
    names["extract"] = f"extraction ({EXTRACT_VIDEOS * 25:,} frames a pass), frames/s"
    rows = []
    for key, name in names.items():
        if key not in rates:
            continue
        ours, base, torch = rates[key], rates[f"{key}_baseline"], rates.get(f"{key}_torch")
        stock, alone, fusion = (rates.get(f"{key}_{name}") for name in ("stock", "resident", "fusion"))
        rows.append(
            {
                "figure": name,
                "ours": f"{ours:,.0f}",
                "MindSpore kernels": f"{stock:,.0f}" if stock else "-",
                "ours/MindSpore kernels": f"{ours / stock:.2f}x" if stock else "-",
                "step alone": f"{alone:,.0f}" if alone else "-",
                "host share": f"{1 - ours / alone:.0%}" if alone else "-",
                "graph kernel fusion": f"{fusion:,.0f}" if fusion else "-",
                "fusion/ours": f"{fusion / ours:.2f}x" if fusion else "-",
                "baseline": f"{base:,.0f}",
                "ours/baseline": f"{ours / base:.1f}x",
                "PyTorch": f"{torch:,.0f}" if torch else "-",
                "ours/PyTorch": f"{ours / torch:.2f}x" if torch else "-",
            }
        )
    return pd.DataFrame(rows).set_index("figure")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="length of each of the three timed blocks per figure"
    )
    parser.add_argument("--isa", nargs="+", choices=sorted(ISAS), default=list(ISAS), help="ISA settings to run")
    parser.add_argument("--figures", nargs="+", choices=FIGURES, default=list(FIGURES), help="figures to measure")
    parser.add_argument(
        "--cpus", type=int, nargs="+", help="pin every measurement to these CPU ids, e.g. 0 (default: all)"
    )
    parser.add_argument("--child", nargs=2, metavar=("FIGURE", "IMPLEMENTATION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not (math.isfinite(args.seconds) and 0 < args.seconds <= MAX_SECONDS):
        parser.error(f"--seconds {args.seconds}: expected a number > 0 and <= {MAX_SECONDS:g}")
    args.isa, args.figures = list(dict.fromkeys(args.isa)), list(dict.fromkeys(args.figures))  # each once
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if args.child:
        print(json.dumps(measure(*args.child, args.seconds)))
        return
    if args.cpus:  # inherited by the children; MindSpore and PyTorch size their threads to it
        from attention_clusters import affinity
        from attention_clusters.errors import UserError

        try:
            affinity.pin(args.cpus)
        except UserError as err:
            parser.error(str(err))
    print(f"host: {host()}")
    print("baselines: per-unit Python loop (Attention Cluster), plain nn.Conv2d/nn.MaxPool2d layers (extractor)")
    missing = {name: why() for name, why in MISSING.items()}
    implementations = [name for name in IMPLEMENTATIONS if not missing.get(name)]
    for why in filter(None, missing.values()):
        print(f"{why}: its columns are skipped (pip install -r bench/requirements.txt)")
    for isa in args.isa:
        rates = {}
        for figure in args.figures:
            for implementation in implementations:
                if implementation in ("stock", "resident") and not figure.startswith("ac_"):
                    continue
                key = figure if implementation == "ours" else f"{figure}_{implementation}"
                rates[key] = run_child(isa, figure, implementation, args.seconds)
        label = " ".join(f"{key}={value}" for key, value in ISAS[isa].items()) or "the CPU's own"
        print(f"\n== ISA: {label} ==")
        print(table(rates).to_string())
        if {"extractor_train", "extract"} <= set(rates):
            seconds = FULL_TRAIN_FRAMES / rates["extractor_train"] + FULL_EXTRACT_FRAMES / rates["extract"]
            print(f"feature stage at full MNIST size (extractor training + extraction): about {seconds / 60:.1f} min")
        roof = run_child(isa, "matmul", "ours", args.seconds)
        print(f"\nroofline (large-matmul rate {roof / 1e9:.0f} GFLOP/s; batch {BATCH}):")
        for figure in (f for f in args.figures if f != "extract"):  # the training figures
            print(roofline.line(figure, rates[figure], run_child(isa, figure, "profile", args.seconds), roof, BATCH))


if __name__ == "__main__":
    main()
