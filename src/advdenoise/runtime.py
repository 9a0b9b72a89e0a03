"""Device choice, seeding and thread settings: everything that decides whether a run reproduces."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from advdenoise.errors import ParamsError


def select_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; `cuda` without a GPU is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def setup(seed: int, threads: int, device: str = "auto") -> torch.device:
    """Seed every generator, fix threads, make kernels deterministic; return the device to use."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - ART draws random PGD starts from the global state
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
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


def generator(seed: int, *offsets: int) -> np.random.Generator:
    """A NumPy generator derived from the run seed and a stage-specific offset, independent of order."""
    return np.random.default_rng([seed, *offsets])
