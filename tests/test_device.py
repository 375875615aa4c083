"""device.onednn_isa: the ISA oneDNN runs, from the CPU's and the user's ONEDNN_MAX_CPU_ISA."""

import pytest

from attention_clusters import device


@pytest.mark.parametrize(
    "isa, cap, expected",
    [
        ("avx512", "unset", "avx512"),
        ("avx512", "AVX2", "avx2"),
        ("avx512", "avx2_vnni", "avx2"),
        ("avx512", "AVX512_CORE_AMX", "avx512"),
        ("avx512", "SSE41", "older"),
        ("avx512", "DEFAULT", "avx512"),
        ("avx512", "AVX2 ", "avx512"),  # oneDNN ignores names it does not know exactly
        ("avx512", "AVX22", "avx512"),
        ("avx2", "AVX512_CORE", "avx2"),  # a cap never raises the CPU's ISA
        ("older", "AVX2", "older"),
    ],
)
def test_onednn_isa_follows_onednn_names(isa, cap, expected):
    assert device.onednn_isa(isa, cap) == expected


def test_cap_falls_back_to_the_older_variable_name(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    assert device.onednn_cap() == "AVX2"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert device.onednn_cap() == "AVX512_CORE"
