"""Device choice, seeding and thread settings: everything that decides whether a run reproduces,
and the allocator and exit settings that decide how fast it runs on a CPU."""

from __future__ import annotations

import atexit
import ctypes
import gc
import os
import platform
import random
import sys
from pathlib import Path

import numpy as np
import torch

from advdenoise.core.errors import ParamsError


def select_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; `cuda` without a GPU is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def keep_freed_memory() -> None:
    """Let glibc reuse freed memory instead of handing it back to the OS and faulting it in again.

    Blocks above glibc's mmap threshold (128 KB, raised by itself later) are mapped afresh for every
    allocation, so each convolution, batch-norm or upsampling output of a batch paid page faults:
    a third of a denoise stage's time in torch ops on the CPU (torch.profiler). A fixed 32 MB
    threshold (glibc's maximum) and no trimming keep those blocks in the heap for reuse; peak memory
    is unchanged. Results do not depend on it. Nothing happens where glibc is not the C library.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # <malloc.h>
    mallopt(m_mmap_threshold, 32 * 2**20)
    mallopt(m_trim_threshold, 2**31 - 1)
    mallopt(m_top_pad, 64 * 2**20)


def skip_final_collection() -> None:
    """Freeze the garbage collector when the process exits, before Python tears its modules down.

    Shutdown runs collections over every object of the imported libraries (torch, ART, scipy,
    scikit-learn, pandas) while it clears them: 0.5-0.9 s of each stage's exit on 2 CPU cores,
    twelve times a run. Frozen objects are still freed by reference counting; only reference
    cycles still alive at exit stay uncollected, as the process ends. Stages close their outputs
    before they return, so nothing waits on a collection.
    """
    atexit.unregister(gc.freeze)  # once per process, however often a test runs setup
    atexit.register(gc.freeze)


def deterministic_kernels() -> None:
    """`torch.use_deterministic_algorithms(True, warn_only=True)` without importing the compiler.

    The public call also sets torch._inductor's `deterministic` flag, and importing that config
    loads torch's compiler stack: 1.2-1.8 s of every stage's start on a 2-core CPU, for a
    compiler the pipeline never runs. The kernel switch is the private call below (torch >= 1.8);
    where it is missing, the public call is made.
    """
    switch = getattr(torch._C, "_set_deterministic_algorithms", None)  # noqa: SLF001
    if switch is None:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        switch(True, warn_only=True)


def setup(seed: int, threads: int, device: str = "auto") -> torch.device:
    """Seed every generator, fix threads, make kernels deterministic; return the device to use."""
    keep_freed_memory()
    skip_final_collection()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - ART draws random PGD starts from the global state
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    deterministic_kernels()
    # Deterministic mode also fills every new tensor with NaN (a guard against reading memory no
    # kernel wrote). The kernels here write every output element, so the fill only costs time:
    # a quarter of a denoise stage on the CPU (torch.profiler: aten::fill_ under batch norm).
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    torch.backends.cudnn.benchmark = False
    return select_device(device)


def environment(device: torch.device) -> dict[str, str]:
    """What decides a run's bits beyond params and code: device, library versions and the CPU
    kernels in effect (see advdenoise.portable). Every stage adds it to its metrics, so
    `dvc metrics diff` shows when two runs differ because their environments do."""
    from importlib.metadata import version

    from threadpoolctl import threadpool_info

    openblas = [
        i.get("architecture", "?") for i in threadpool_info() if i["internal_api"] == "openblas"
    ]
    env = {
        "env.device": device.type,
        "env.cpu": cpu_model(),
        "env.torch": torch.__version__,
        "env.art": version("adversarial-robustness-toolbox"),
        "env.numpy": np.__version__,
        "env.cpu_kernels": " ".join(
            [
                f"aten={torch.backends.cpu.get_cpu_capability()}",
                f"onednn={os.environ.get('ONEDNN_MAX_CPU_ISA', 'native')}",
                f"mkl={os.environ.get('MKL_CBWR', 'native')}",
                f"openblas={','.join(sorted(set(openblas))) or 'none'}",
            ]
        ),
    }
    if device.type == "cuda":
        env["env.gpu"] = torch.cuda.get_device_name(device)
    return env


def cpu_model() -> str:
    """The CPU's model name: the same kernels can still round differently on another CPU model
    (cache-dependent blocking, vendor code paths), so runs record it beside the kernels."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
