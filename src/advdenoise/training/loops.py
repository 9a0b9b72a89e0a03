"""Training loops for the classifier and the denoising autoencoders (Adam, seeded mini-batches).

Images stay uint8 (or float) tensors on the training device for the whole fit and are scaled per
batch; batches come from a seeded permutation (`torch.Generator(seed)`, on the CPU, so the order
and the augmentation do not depend on the device) instead of a DataLoader, which is faster on a
CPU and reproducible. Losses and counts add up on the device and are read once an epoch, so a GPU
never waits for the host inside an epoch. Both loops keep the weights of the best validation
epoch: a single test number from the last epoch can swing widely between epochs, validation-based
selection does not look at test. Without a validation set the last epoch's weights are kept.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from advdenoise.data.splits import to_float
from advdenoise.evaluation import metrics
from advdenoise.models.inference import batched_apply


@dataclass(frozen=True)
class FitResult:
    """Per-epoch history (keys: epoch, train.loss, [train.accuracy], [val.loss, val.accuracy])."""

    history: list[dict[str, float]]
    best_epoch: int  # 1-based epoch whose weights the model holds after fitting
    train_seconds: float  # optimisation steps only (no validation)
    images_per_second: (
        float  # training throughput, for benchmarks; varies with machine load, so never a metric
    )


@dataclass(frozen=True)
class DenoiserTraining:
    """A trained denoiser, its fit and its stage metrics (train_ae_adv, _guided, _gauss)."""

    model: nn.Module
    fit: FitResult
    metrics: dict[str, float]


def selection_metrics(fit: FitResult, epochs: int) -> dict[str, float]:
    """The kept epoch, the epochs run, and the validation loss of the kept epoch (if validated)."""
    best = fit.history[fit.best_epoch - 1]
    out = {"val.loss": best["val.loss"]} if "val.loss" in best else {}
    out.update(best_epoch=float(fit.best_epoch), epochs=float(epochs))
    return out


def augment_batch(x: torch.Tensor, generator: torch.Generator, max_shift: int = 4) -> torch.Tensor:
    """Light augmentation: random horizontal flips and shifts of up to `max_shift` px (reflect pad).

    Draws from `generator` only, so augmented runs reproduce.
    """
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1).to(x.device), x.flip(-1), x)
    if max_shift <= 0:
        return x
    shifts = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator).to(x.device)
    padded = F.pad(x, (max_shift,) * 4, mode="reflect")
    rows = (shifts[:, 0:1] + torch.arange(h, device=x.device))[:, None, :, None]  # n, 1, h, 1
    cols = (shifts[:, 1:2] + torch.arange(w, device=x.device))[:, None, None, :]  # n, 1, 1, w
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]  # one gather: each image cropped at its own shift


def adam(model: nn.Module, lr: float) -> torch.optim.Adam:
    """Adam over the model's parameters, updated together (`foreach`, torch's default on CUDA):
    the same arithmetic per tensor as one at a time (tests/test_training.py checks the weights
    bit for bit) with less Python per step, about 0.1 of 0.8 ms on a 2-core CPU."""
    return torch.optim.Adam(model.parameters(), lr=lr, foreach=True)


def _permutation(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=generator)


def _fit(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    n_train: int,
    step: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, int, torch.Tensor | None]],
    validate: Callable[[], dict[str, float]] | None,
    score: Callable[[dict[str, float]], tuple[float, ...]],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    progress: bool,
    desc: str,
    on_epoch: Callable[[dict[str, float]], None] | None,
) -> FitResult:
    """Shared loop: `step(idx, gen)` returns (loss, batch size, n_correct or None); keep the best.

    Trains in the channels-last layout (on a CPU the convolutions of these nets run 1.4x (CNN) to
    2.2x (autoencoder) faster; bench/training_throughput.py) and hands the model back contiguous.
    """
    if n_train == 0:
        raise ValueError("cannot train on an empty training set")
    model.to(memory_format=torch.channels_last)  # in place: the optimiser keeps its parameters
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(int(seed))
    history: list[dict[str, float]] = []
    best: tuple[float, ...] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch = epochs
    seconds = 0.0
    seen = 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = _permutation(n_train, generator)
        total_loss = torch.zeros((), dtype=torch.float64, device=device)  # read once an epoch
        total_correct: torch.Tensor | None = None
        bar = tqdm(
            range(0, n_train, batch_size),
            desc=f"{desc} epoch {epoch}/{epochs}",
            unit="batch",
            leave=False,
            disable=None if progress else True,
        )
        start = time.perf_counter()
        for s in bar:
            idx = order[s : s + batch_size]
            loss, n, correct = step(idx, generator)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total_loss += loss.detach().double() * n  # the sum of float(loss) * n, in float64
            if correct is not None:
                total_correct = correct if total_correct is None else total_correct + correct
        bar.close()
        seconds += time.perf_counter() - start
        seen += n_train
        record = {"epoch": float(epoch), "train.loss": float(total_loss) / n_train}
        if total_correct is not None:
            record["train.accuracy"] = float(total_correct) / n_train
        if validate is not None:
            record.update(validate())
            current = score(record)
            if best is None or current > best:
                best, best_epoch = current, epoch
                best_state = copy.deepcopy(model.state_dict())
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if progress:
            summary = " ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch")
            tqdm.write(f"{desc} epoch {epoch}/{epochs}: {summary}", file=sys.stderr)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format).eval()
    return FitResult(history, best_epoch, seconds, seen / max(seconds, 1e-9))


def fit_classifier(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: torch.device | str,
    augment: bool = False,
    eval_batch_size: int = 256,
    progress: bool = True,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Adam + cross-entropy; select the epoch with the best val accuracy (ties: lower val loss).

    x_* are uint8 or float images N x 1 x H x W, y_* int64 labels. The model ends in eval mode
    holding the selected weights.
    """
    model.to(device)
    optimiser = adam(model, lr)
    x_train, y_train = x_train.to(device), y_train.long().to(device)

    def step(idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, int, torch.Tensor]:
        idx = idx.to(device)
        x = to_float(x_train[idx])
        if augment:
            x = augment_batch(x, gen)
        y = y_train[idx]
        logits = model(x)
        correct = (logits.detach().argmax(1) == y).sum()
        return F.cross_entropy(logits, y), len(idx), correct

    def validate() -> dict[str, float]:
        model.eval()
        logits = batched_apply(model, x_val, eval_batch_size, device)
        y = y_val.long()
        return {
            "val.loss": float(F.cross_entropy(logits, y)),
            "val.accuracy": float((logits.argmax(1) == y).float().mean()),
        }

    return _fit(
        model,
        optimiser,
        len(y_train),
        step,
        validate if len(y_val) else None,
        lambda r: (r["val.accuracy"], -r["val.loss"]),
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        desc="train_cnn",
        on_epoch=on_epoch,
    )


def fit_denoiser(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    val_inputs: torch.Tensor,
    val_targets: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: torch.device | str,
    target_index: torch.Tensor | None = None,
    val_target_index: torch.Tensor | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    corrupt: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    eval_batch_size: int = 256,
    progress: bool = True,
    desc: str = "train_ae",
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Adam on `loss_fn(model(input), target)` (default MSE); select the lowest val loss.

    inputs[i] is paired with targets[target_index[i]] (default: targets[i]); the index lets many
    noisy copies share one clean target without duplicating it in memory. Tensors are uint8 or
    float images in [0, 1]. `corrupt(batch, generator)` (float batch on the training device) draws
    fresh corruption of each training batch from the (CPU) training generator, so it is seeded too.
    """
    model.to(device)
    loss_fn = loss_fn or F.mse_loss
    optimiser = adam(model, lr)
    t_index = target_index if target_index is not None else torch.arange(len(inputs))
    v_index = val_target_index if val_target_index is not None else torch.arange(len(val_inputs))
    if len(t_index) != len(inputs) or len(v_index) != len(val_inputs):
        raise ValueError("target index length must equal the number of inputs")
    inputs, targets, t_index = inputs.to(device), targets.to(device), t_index.to(device)

    def step(idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, int, None]:
        idx = idx.to(device)
        x = to_float(inputs[idx])
        if corrupt is not None:
            x = corrupt(x, gen)
        t = to_float(targets[t_index[idx]])
        return loss_fn(model(x), t), len(idx), None

    def validate() -> dict[str, float]:
        model.eval()
        total = torch.zeros((), dtype=torch.float64, device=device)
        with torch.inference_mode():
            for s in range(0, len(val_inputs), eval_batch_size):
                x = to_float(val_inputs[s : s + eval_batch_size]).to(device)
                t = to_float(val_targets[v_index[s : s + eval_batch_size]]).to(device)
                total += loss_fn(model(x), t).double() * len(x)
        return {"val.loss": float(total) / len(val_inputs)}

    return _fit(
        model,
        optimiser,
        len(inputs),
        step,
        validate if len(val_inputs) else None,
        lambda r: (-r["val.loss"],),
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        desc=desc,
        on_epoch=on_epoch,
    )


@contextmanager
def live_curves(directory: str | Path) -> Iterator[Callable[[dict[str, float]], None]]:
    """A per-epoch logger for `fit_*(on_epoch=...)`: dvclive TSVs under <directory>/plots/metrics/
    and a summary, written as each epoch ends, so `dvc plots show` follows a long run.

    dvclive writes no dvc.yaml, report or experiment here, and no timestamps: DVC's pipeline owns
    the files (and removes them before the stage re-runs).
    """
    from dvclive import Live

    live = Live(dir=str(directory), dvcyaml=None, save_dvc_exp=False, report=None)

    def log(record: dict[str, float]) -> None:
        live.step = int(record["epoch"])
        for key, value in record.items():
            if key != "epoch":
                live.log_metric(key.replace(".", "/"), float(value))
        live.make_summary()

    try:
        yield log
    finally:
        live.end()


def write_denoiser_outputs(
    run: DenoiserTraining,
    *,
    model_path: Path,
    plots: Path,
    title: str,
) -> None:
    """What a denoiser-training stage writes besides its live curves and metrics: the model, the
    history CSV and the training curves (the shared tail of train_ae_adv, _guided and _gauss)."""
    from advdenoise.core.io import save_figure, write_csv
    from advdenoise.figures.training import training_curves
    from advdenoise.models.files import save_model

    history = run.fit.history
    save_model(run.model, model_path)  # type: ignore[arg-type]
    write_csv(plots / "history.csv", pd.DataFrame(history))
    save_figure(plots / "training_curves.png", training_curves(history, run.fit.best_epoch, title))


def classifier_tables(
    logits: torch.Tensor, y: torch.Tensor, classes: tuple[str, ...], positive: int = 1
) -> dict[str, pd.DataFrame]:
    """Plot data for DVC: confusion (one row per image, class names), ROC, reliability bins."""
    probs = metrics.softmax(logits)
    y_np = metrics.as_numpy(y, np.int64)
    names = np.asarray(classes)
    fpr, tpr, thr = metrics.roc_curve(y_np, probs[:, positive], positive)
    _, conf, acc, count = metrics.reliability_bins(probs, y_np)
    keep = count > 0
    return {
        "confusion": pd.DataFrame(
            {"actual": names[y_np], "predicted": names[probs.argmax(axis=1)]}
        ),
        "roc": pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thr}),
        "reliability": pd.DataFrame(
            {"confidence": conf[keep], "accuracy": acc[keep], "count": count[keep]}
        ),
    }
