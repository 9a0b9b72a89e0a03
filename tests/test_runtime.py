"""Runtime setup: device choice, the pinned CPU kernels and the environment recorded in metrics."""

from __future__ import annotations

import ast
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from advdenoise import portable
from advdenoise.core import runtime
from advdenoise.core.errors import ParamsError

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
    """OpenBLAS reads OPENBLAS_CORETYPE when numpy loads: the (optional) pin must come first."""
    tree = ast.parse((ROOT / "stages" / f"{stage}.py").read_text())
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    after_future = [
        n for n in imports if not (isinstance(n, ast.ImportFrom) and n.module == "__future__")
    ]
    first = after_future[0]
    assert isinstance(first, ast.Import) and first.names[0].name == "advdenoise.portable"


def _kernels_in_a_fresh_process(**env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in {portable.SWITCH, *portable.PINNED}}
    code = (
        "import advdenoise.portable, torch; from advdenoise.core import runtime;"
        "print(runtime.environment(torch.device('cpu'))['env.cpu_kernels'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(item.split("=") for item in out.stdout.split())


def test_environment_records_the_machine_and_its_libraries() -> None:
    env = runtime.environment(torch.device("cpu"))
    assert env["env.device"] == "cpu" and env["env.torch"] == torch.__version__
    assert env["env.cpu"] == runtime.cpu_model() and env["env.cpu"] not in {"", "unknown"}
    assert env["env.art"].startswith("1.20.")


@pytest.mark.skipif(not X86, reason="the pin applies to x86-64 only")
def test_kernels_are_pinned_to_avx2_only_on_request() -> None:
    assert _kernels_in_a_fresh_process(**{portable.SWITCH: "1"}) == {
        "aten": "AVX2",
        "onednn": "AVX2",
        "mkl": "AVX2,STRICT",
        "openblas": "Haswell",
    }
    native = _kernels_in_a_fresh_process()
    assert native["onednn"] == "native" and native["mkl"] == "native"


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


def test_setup_switches_kernels_to_deterministic_without_loading_the_compiler() -> None:
    """use_deterministic_algorithms imports torch._inductor (1-2 s per stage); setup must not."""
    code = (
        "import sys, torch; from advdenoise.core import runtime; runtime.setup(0, 1, 'cpu');"
        "print(torch.are_deterministic_algorithms_enabled(),"
        " torch.is_deterministic_algorithms_warn_only_enabled(), 'torch._inductor' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "False"]


def test_setup_freezes_the_collector_at_exit() -> None:
    """The shutdown collections are skipped: gc is frozen when the process exits, not before."""
    code = (
        "import atexit, gc; from advdenoise.core import runtime;"
        "atexit.register(lambda: print('at exit', gc.get_freeze_count() > 0));"  # runs after setup's
        "runtime.setup(0, 1, 'cpu'); runtime.setup(0, 1, 'cpu');"
        "print('running', gc.get_freeze_count() > 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["running", "False", "at", "exit", "True"]
