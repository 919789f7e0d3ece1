"""The compiled part of the decoder (csrc/), built by ``pip install`` with the machine's C
compiler; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "coolchic_pl._native",
    sources=["csrc/module.c", "csrc/entropy.c", "csrc/synthesis.c", "csrc/armtrain.c", "csrc/upsampling.c", "csrc/convtrain.c"],
    depends=["csrc/native.h"],
    # -fwrapv: int64 arithmetic wraps as NumPy's does, on files whose values would overflow.
    # -Wno-psabi: the vector helpers are inlined, so no vector crosses a call between clones.
    extra_compile_args=["-O3", "-fwrapv", "-std=gnu11", "-Wno-psabi"],
)])
