"""onednn: the ISA oneDNN runs, from the CPU's and the user's ONEDNN_MAX_CPU_ISA, the feature
stage's cap, and the extractor formulation chosen from them."""

import pytest

from attention_clusters import device, onednn


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
    assert onednn.onednn_isa(isa, cap) == expected


def test_cap_falls_back_to_the_older_variable_name(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
    assert onednn.onednn_cap() == "AVX2"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert onednn.onednn_cap() == "AVX512_CORE"


def test_convolution_cap_is_avx2_unless_the_user_set_one(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert onednn.cap_for_convolutions() == "AVX2"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert onednn.cap_for_convolutions() == "AVX512_CORE"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "SSE41")
    assert onednn.cap_for_convolutions() == "SSE41"


def test_extractor_formulation_follows_the_isa_onednn_runs(monkeypatch):
    """Phase convolutions where oneDNN runs AVX2; banded products on AVX-512 and below AVX2."""
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    isa = device.cpu()["isa"]
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert device.phase_convolutions_fast() is (isa in ("avx2", "avx512"))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert device.phase_convolutions_fast() is (isa == "avx2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    assert device.phase_convolutions_fast() is False
