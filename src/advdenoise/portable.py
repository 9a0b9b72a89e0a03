"""Portable CPU kernels, on request: pin the instruction set the numerical libraries dispatch on.

MKL (torch's BLAS), oneDNN (torch's convolutions), ATen's vectorised kernels and OpenBLAS (numpy,
scikit-learn) each pick kernels by the CPU's instruction set, and their AVX-512 and AVX2 kernels
round differently. With `ADVDENOISE_PORTABLE_KERNELS=1` in the environment all four are pinned to
AVX2, which every x86-64 CPU since 2015 has, which removes that one difference between machines.

It is off by default because it costs up to a third of a convolution-heavy stage on an AVX-512
CPU and does not buy identical bits across machines anyway: a pinned cold run on an AMD EPYC machine
reproduced `prepare` but not `train_cnn` of a pinned run on another machine (oneDNN and MKL still
choose blocking and code paths by cache sizes and vendor). What does reproduce bit for bit is a
run on the same CPU model with the same threads; across machines `make verify` compares within the
seed-to-seed spread. `runtime.environment` records the CPU and the kernels in every stage's metrics.

Every stage imports this module first, before numpy or torch load (OpenBLAS reads its variable
when it loads; the others on first use). A variable already set in the environment wins.
"""

from __future__ import annotations

import os
import platform

SWITCH = "ADVDENOISE_PORTABLE_KERNELS"
PINNED = {
    "MKL_CBWR": "AVX2,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "OPENBLAS_CORETYPE": "Haswell",
}

if os.environ.get(SWITCH) == "1" and platform.machine().lower() in {"x86_64", "amd64"}:
    for _name, _value in PINNED.items():
        os.environ.setdefault(_name, _value)
