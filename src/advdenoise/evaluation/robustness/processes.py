"""The stage's (defence, eps) cells in worker processes, each reading the stage's inputs itself."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from advdenoise.attacks.sets import AdversarialSets, load_adversarial
from advdenoise.core.params import Params
from advdenoise.data.splits import evaluation_subset, load_splits, to_float
from advdenoise.defences.registry import build_defence
from advdenoise.evaluation.robustness.evaluation import (
    SUBSET_STREAM,
    DefenceResult,
    check_oblivious_sets,
    evaluate_defence,
    merge_results,
)
from advdenoise.models.files import MODEL_FILE, load_autoencoder, load_classifier


@dataclass(frozen=True)
class InputPaths:
    """The stage's inputs on disk (its dvc.yaml deps): each worker process reads them itself."""

    data: Path
    classifier: Path
    autoencoders: tuple[tuple[str, Path], ...]  # (defence name, model directory)
    adversarial: Path


@dataclass(frozen=True)
class Inputs:
    """What the evaluation reads: the models, the test subset and its oblivious sets."""

    cnn: nn.Module
    autoencoders: Mapping[str, nn.Module]
    x: np.ndarray  # float32 in [0, 1]
    y: np.ndarray
    oblivious: AdversarialSets
    nb_classes: int


def load_inputs(paths: InputPaths, params: Params, device: torch.device) -> Inputs:
    """The CNN, the autoencoders the defences need (and `ae`, the detector's), and the seeded
    subset of the test split (robustness.max_images) with the attack stage's sets for it."""
    cfg = params.robustness
    splits = load_splits(paths.data)
    cnn = load_classifier(paths.classifier / MODEL_FILE, device, splits.image_size)
    x, y = to_float(splits.test.x).numpy(), splits.test.y
    oblivious = load_adversarial(paths.adversarial, x)
    check_oblivious_sets(oblivious, cfg, str(paths.adversarial))
    subset = evaluation_subset(y, cfg.max_images, params.seed, SUBSET_STREAM)
    autoencoders = {
        name: load_autoencoder(path / MODEL_FILE, device, splits.image_size)
        for name, path in paths.autoencoders
        if name in cfg.defences or name == "ae"
    }
    return Inputs(
        cnn, autoencoders, x[subset], y[subset], oblivious.take(subset), len(splits.classes)
    )


_WORKER: dict[str, Any] = {}  # a worker process's params, device and inputs


def _start_worker(paths: InputPaths, params: Params) -> None:
    from advdenoise.core import runtime

    device = runtime.setup(params.seed, params.threads, params.device)
    _WORKER.update(params=params, device=device, inputs=load_inputs(paths, params, device))


def _evaluate_cell(name: str, eps: float) -> tuple[DefenceResult, float]:
    params: Params = _WORKER["params"]
    inputs: Inputs = _WORKER["inputs"]
    start = time.perf_counter()
    result = evaluate_defence(
        name, build_defence(name, params.robustness, inputs.autoencoders), inputs.cnn, inputs.x,
        inputs.y, inputs.oblivious, params.attack, params.robustness, seed=params.seed,
        device=_WORKER["device"], nb_classes=inputs.nb_classes, eps_values=(eps,),
        l2_radii=params.certify.radii,
    )  # fmt: skip
    return result, time.perf_counter() - start


def evaluate_in_processes(
    paths: InputPaths, params: Params, log: Callable[[str], None] = lambda _msg: None
) -> list[DefenceResult]:
    """`evaluate_defences` in robustness.workers processes, one (defence, eps) cell per task.

    Why: a cell's work off the device (JPEG through PIL, the Python and NumPy around each attack
    step) is one core's however fast the device (bench/host_floor.py). Each cell is seeded by
    (seed, defence, eps, attack) alone, so the results equal the single-process ones
    (tests/test_robustness.py compares the bytes). Spawned, not forked: a forked child cannot use
    CUDA.
    """
    cfg = params.robustness
    # smallest eps first: there the attacks break the fewest images, so they cost the most; the
    # cheap cells at large eps fill the gaps at the end
    cells = [(name, e) for e in cfg.eps_grid for name in cfg.defences]
    pool = ProcessPoolExecutor(
        min(cfg.workers, len(cells)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(paths, params),
    )
    parts: dict[tuple[str, float], DefenceResult] = {}
    try:
        futures = [pool.submit(_evaluate_cell, *cell) for cell in cells]
        for cell, future in zip(cells, futures, strict=True):
            parts[cell], seconds = future.result()
            log(f"{cell[0]} eps={cell[1]:g}: {seconds:.1f} s")
    finally:
        pool.shutdown(cancel_futures=True)
    return [merge_results([parts[(name, e)] for e in cfg.eps_grid]) for name in cfg.defences]
