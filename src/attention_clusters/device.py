"""MindSpore start-up shared by every stage that runs a network."""

import os

import mindspore as ms

_initialised = None  # the device target of the first init() in this process


# The values oneDNN 3.x accepts for ONEDNN_MAX_CPU_ISA (exact names, any case; anything else
# means no cap), with the vector width each allows.
ONEDNN_CAPS = {"SSE41": "older", "AVX": "older", "AVX2": "avx2", "AVX2_VNNI": "avx2", "AVX2_VNNI_2": "avx2"}
ONEDNN_CAPS.update(
    (name, "avx512")
    for name in (
        "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
        "AVX512_CORE_AMX_FP16", "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2",
    )
)
ISA_ORDER = ("?", "older", "avx2", "avx512")


def onednn_cap():
    """The user's ISA cap for oneDNN: ``ONEDNN_MAX_CPU_ISA``, else its older name
    ``DNNL_MAX_CPU_ISA`` (oneDNN reads both), else "unset"."""
    return os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "unset"))


def cpu():
    """What this host's CPU offers the kernels: a dict for metrics and benchmark headers.

    Keys: ``model`` (the /proc/cpuinfo model name with family and model numbers), ``cores``
    (usable by this process), ``isa`` ("avx512", "avx2" or "older": the widest x86 vector set
    the CPU has), ``onednn_max_cpu_isa`` (the user's cap for oneDNN, :func:`onednn_cap`) and
    ``onednn_isa`` (what oneDNN uses given both, :func:`onednn_isa`).
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
    return {"model": model, "cores": len(os.sched_getaffinity(0)), "isa": isa, "onednn_max_cpu_isa": cap, "onednn_isa": onednn_isa(isa, cap)}


def onednn_isa(isa, cap):
    """The widest vector ISA oneDNN uses: the CPU's ``isa`` ("avx512", "avx2", "older", "?"),
    lowered by a cap ``cap`` that is one of oneDNN's names (:data:`ONEDNN_CAPS`, any case;
    oneDNN ignores any other value, "DEFAULT" and "unset" included)."""
    capped = ONEDNN_CAPS.get(cap.upper())
    if capped is None or isa == "?":
        return isa
    return min(isa, capped, key=ISA_ORDER.index)


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
