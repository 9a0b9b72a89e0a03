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


def generator(seed: int, *offsets: int) -> np.random.Generator:
    """A NumPy generator derived from the run seed and a stage-specific offset, independent of order."""
    return np.random.default_rng([seed, *offsets])
