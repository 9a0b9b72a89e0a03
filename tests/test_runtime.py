"""Runtime setup: device choice, the pinned CPU kernels and the environment recorded in metrics."""

from __future__ import annotations

import ast
import platform
from pathlib import Path

import pytest
import torch

from advdenoise import runtime
from advdenoise.errors import ParamsError

ROOT = Path(__file__).resolve().parents[1]
X86 = platform.machine().lower() in {"x86_64", "amd64"}


def test_cuda_without_a_gpu_is_an_error_not_a_fallback() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ParamsError, match="no CUDA device"):
        runtime.select_device("cuda")
    assert runtime.select_device("auto").type == "cpu"


@pytest.mark.parametrize("stage", sorted(p.stem for p in (ROOT / "stages").glob("*.py")))
def test_every_stage_imports_the_kernel_pin_before_anything_else(stage: str) -> None:
    """OpenBLAS reads OPENBLAS_CORETYPE when numpy loads: the pin must come first."""
    tree = ast.parse((ROOT / "stages" / f"{stage}.py").read_text())
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    after_future = [
        n for n in imports if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")
    ]
    first = after_future[0]
    assert isinstance(first, ast.Import) and first.names[0].name == "advdenoise.portable"


@pytest.mark.skipif(not X86, reason="the pin applies to x86-64 only")
def test_environment_records_the_pinned_kernels_in_effect() -> None:
    env = runtime.environment(torch.device("cpu"))
    assert env["env.device"] == "cpu" and env["env.torch"] == torch.__version__
    assert env["env.art"].startswith("1.20.")
    kernels = dict(item.split("=") for item in env["env.cpu_kernels"].split())
    # conftest imports advdenoise.portable first, as every stage does
    assert kernels == {
        "aten": "AVX2",
        "onednn": "AVX2",
        "mkl": "AVX2,STRICT",
        "openblas": "Haswell",
    }


def test_setup_keeps_kernels_deterministic_without_the_nan_fill() -> None:
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    fill = torch.utils.deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]
    try:
        assert runtime.setup(seed=0, threads=1, device="cpu") == torch.device("cpu")
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False  # type: ignore[attr-defined]
        a = torch.nn.functional.conv2d(torch.ones(2, 1, 8, 8), torch.ones(3, 1, 3, 3))
        assert bool((a == 9).all())  # every output element written (no NaN left from a fill)
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.set_num_threads(before[1])
        torch.utils.deterministic.fill_uninitialized_memory = fill  # type: ignore[attr-defined]
