"""Portable CPU kernels: pin the instruction set that the numerical libraries dispatch on.

MKL (torch's BLAS), oneDNN (torch's convolutions), ATen's vectorised kernels and OpenBLAS (numpy,
scikit-learn) each pick kernels by the CPU's instruction set, and their AVX-512 and AVX2 kernels
round differently: the same seed trained different weights on two x86-64 machines. Pinning all four
to AVX2, which every x86-64 CPU since 2015 has, gives every such machine the same kernels.

Every stage imports this module first, before numpy or torch load (OpenBLAS reads its variable
when it loads; the others on first use). A variable already set in the environment wins, e.g.
`ONEDNN_MAX_CPU_ISA=ALL` for the machine's fastest kernels at the price of portability.
`runtime.environment` records the kernels actually in effect in every stage's metrics.
"""

from __future__ import annotations

import os
import platform

PINNED = {
    "MKL_CBWR": "AVX2,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "OPENBLAS_CORETYPE": "Haswell",
}

if platform.machine().lower() in {"x86_64", "amd64"}:
    for _name, _value in PINNED.items():
        os.environ.setdefault(_name, _value)
