"""What oneDNN (MindSpore's CPU kernels) will run: its ISA cap, read without loading MindSpore."""

import os

# The values oneDNN 3.x accepts for ONEDNN_MAX_CPU_ISA (exact names, any case; anything else
# means no cap), with the vector width each allows.
ONEDNN_CAPS = {"SSE41": "older", "AVX": "older", "AVX2": "avx2", "AVX2_VNNI": "avx2", "AVX2_VNNI_2": "avx2"}
ONEDNN_CAPS.update(
    (name, "avx512")
    for name in (
        "AVX512_CORE",
        "AVX512_CORE_VNNI",
        "AVX512_CORE_BF16",
        "AVX512_CORE_FP16",
        "AVX512_CORE_AMX",
        "AVX512_CORE_AMX_FP16",
        "AVX10_1_512",
        "AVX10_1_512_AMX",
        "AVX10_1_512_AMX_FP16",
        "AVX10_2_512",
        "AVX10_2_512_AMX_2",
    )
)
ISA_ORDER = ("?", "older", "avx2", "avx512")
CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")  # oneDNN reads both; the first wins


def onednn_cap():
    """The user's ISA cap for oneDNN: ``ONEDNN_MAX_CPU_ISA``, else its older name
    ``DNNL_MAX_CPU_ISA``, else "unset"."""
    return next((os.environ[name] for name in CAP_VARIABLES if name in os.environ), "unset")


def onednn_isa(isa, cap):
    """The widest vector ISA oneDNN uses: the CPU's ``isa`` ("avx512", "avx2", "older", "?"),
    lowered by a cap ``cap`` that is one of oneDNN's names (:data:`ONEDNN_CAPS`, any case;
    oneDNN ignores any other value, "DEFAULT" and "unset" included)."""
    capped = ONEDNN_CAPS.get(cap.upper())
    if capped is None or isa == "?":
        return isa
    return min(isa, capped, key=ISA_ORDER.index)


def cap_for_convolutions():
    """Cap oneDNN at AVX2 for this process unless the user set a cap (``ONEDNN_MAX_CPU_ISA`` or
    ``DNNL_MAX_CPU_ISA``): the frame extractor then runs as phase convolutions on oneDNN's AVX2
    GEMM path, measured faster than the banded products with AVX-512 (models/extractor.py).
    Call before MindSpore runs its first kernel (oneDNN reads the cap then, once). It writes
    ``os.environ`` for the rest of the process: call it from a process's entry point (a stage's
    ``run``, predict's ``main``), not from library code.

    Returns:
        The cap in force afterwards (:func:`onednn_cap`).
    """
    if not any(name in os.environ for name in CAP_VARIABLES):
        os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    return onednn_cap()
