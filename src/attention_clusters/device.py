"""MindSpore start-up shared by every stage that runs a network, and what this host's CPU offers its kernels."""

import os

import mindspore as ms

from .onednn import onednn_cap, onednn_isa

_initialised = None  # the device target of the first init() in this process


def cpu():
    """What this host's CPU offers the kernels: a dict for metrics and benchmark headers.

    Keys: ``model`` (the /proc/cpuinfo model name with family and model numbers), ``cores``
    (usable by this process), ``isa`` ("avx512", "avx2" or "older": the widest x86 vector set
    the CPU has), ``onednn_max_cpu_isa`` (the cap in force, :func:`onednn.onednn_cap`) and
    ``onednn_isa`` (what oneDNN uses given both, :func:`onednn.onednn_isa`).
    Values are "?" where /proc/cpuinfo is unreadable (non-Linux).
    """
    info = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = info.get("flags", "").split()
    isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "older" if flags else "?"
    model = f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"
    cap = onednn_cap()
    return {
        "model": model,
        "cores": len(os.sched_getaffinity(0)),
        "isa": isa,
        "onednn_max_cpu_isa": cap,
        "onednn_isa": onednn_isa(isa, cap),
    }


def phase_convolutions_fast():
    """Whether the frame extractor is faster as phase convolutions than as banded products in
    this process: True where oneDNN's ISA is AVX2 (:func:`cpu`: an AVX2-only CPU, or
    ``ONEDNN_MAX_CPU_ISA=AVX2`` on a wider one), else False. The value to pass as
    ``FrameExtractor(phase_convolutions=...)`` (models/extractor.py).

    Reads /proc/cpuinfo and the oneDNN cap in the environment, which oneDNN itself reads once, at
    MindSpore's first kernel: the answer holds for a process whose cap was set before that
    (:func:`onednn.cap_for_convolutions`). Measured on a 2-core Xeon with
    ``ONEDNN_MAX_CPU_ISA=AVX2``: training 8,700-9,700 frames/s against 4,900-5,000 for the
    banded products, inference 26,000-31,000 against 23,000-25,000; with AVX-512, phase
    convolutions run ~330 frames/s (oneDNN's reference loop).
    """
    return cpu()["onednn_isa"] == "avx2"


def init(device_target="CPU", seed=None, processes=1):
    """Graph mode on ``device_target`` ("CPU", "GPU", "Ascend"); optionally seed everything.

    On CPU the operator thread pool is set to this process's share of the cores it may use
    (``processes`` workers share the machine): the framework default of 25 threads
    oversubscribes small machines. On GPU/Ascend the device is ``$DEVICE_ID`` (default 0), as
    the rank-table launcher sets it. MindSpore allows the device to be set once per process;
    later calls only re-seed.

    Runs are bit-reproducible on any thread count as long as the networks avoid MindSpore's
    CPU Dropout kernel and gather gradients (see models/dropout.py, models/extractor.py).

    Raises:
        ValueError: a later call asks for a different device target.
    """
    global _initialised
    if _initialised is None:
        ms.set_context(mode=ms.GRAPH_MODE)
        if device_target == "CPU":
            ms.set_device("CPU")
            threads = max(1, len(os.sched_getaffinity(0)) // processes)
            ms.device_context.cpu.op_tuning.threads_num(threads)
        else:
            ms.set_device(device_target, int(os.environ.get("DEVICE_ID", "0")))
        _initialised = device_target
    elif _initialised != device_target:
        raise ValueError(f"MindSpore already runs on {_initialised} in this process, cannot switch to {device_target}")
    if seed is not None:
        ms.set_seed(seed)
