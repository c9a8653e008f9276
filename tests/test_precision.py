"""Choosing bf16 only on CPUs that multiply bf16 natively (speechllm.pretrained.precision)."""

import torch

from speechllm.pretrained import precision
from speechllm.pretrained.precision import native_bf16_in_cpuinfo, preferred_cpu_dtype

EPYC_ZEN2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n\n" * 2
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\n" * 2
COOPER_LAKE = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU implementer\t: 0x41\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"


def test_bf16_is_native_only_where_the_cpu_flags_say_so():
    assert native_bf16_in_cpuinfo(SAPPHIRE_RAPIDS) and native_bf16_in_cpuinfo(COOPER_LAKE)
    assert native_bf16_in_cpuinfo(GRAVITON3)
    assert not native_bf16_in_cpuinfo(EPYC_ZEN2)  # avx512f alone (or avx2) emulates bf16: slower than fp32
    assert not native_bf16_in_cpuinfo(GRAVITON2)
    assert not native_bf16_in_cpuinfo("")  # nothing to tell by: fp32, the safe choice
    mixed = SAPPHIRE_RAPIDS + "processor\t: 2\nflags\t\t: avx2 avx512f\n"
    assert not native_bf16_in_cpuinfo(mixed)  # every core must have it


def test_preferred_dtype_follows_the_detection(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert preferred_cpu_dtype() == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert preferred_cpu_dtype() == torch.float32
