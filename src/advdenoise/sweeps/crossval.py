"""K-fold cross-validation of the paper's CNN under the random and the grouped split.

One split per seed tests a handful of scans, and which scans land in the test set moves accuracy
by many points. Here every image is tested exactly once per seed: the folds come from
scikit-learn's `StratifiedGroupKFold`, over byte-identical duplicates for `random` (the paper's
slice-level split, as the `prepare` stage makes it) and over scans for `grouped`; the validation
set is carved from the training folds the same way. The pooled accuracy gets a 95% confidence
interval from a bootstrap over scans, not slices, since the slices of one scan are not
independent evidence.

Each fold's outcome is one row (`FoldResult`), and the per-scan counts the bootstrap needs are
kept beside it, so a results file can be resumed fold by fold.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.neighbors import KNeighborsClassifier

from advdenoise.core.params import TrainCnnParams
from advdenoise.core.seeding import named_seed
from advdenoise.data.splits import LabelledImages
from advdenoise.evaluation import metrics
from advdenoise.models.classifier import build_classifier
from advdenoise.models.inference import predict_logits
from advdenoise.training.loops import fit_classifier

SPLITS = ("random", "grouped")


def fold_groups(images: LabelledImages, scans: np.ndarray, split: str) -> np.ndarray:
    """What may not straddle train and test: duplicates (random) or whole scans (grouped)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return images.groups if split == "random" else scans


def folds(
    y: np.ndarray, groups: np.ndarray, k: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k stratified folds (train indices, test indices) that keep every group on one side."""
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in splitter.split(np.zeros(len(y)), y, groups)]


def carve_validation(
    train: np.ndarray, y: np.ndarray, groups: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) indices out of `train`: one stratified group fold of about val_fraction (larger
    where the training folds hold fewer groups than 1 / val_fraction)."""
    n_splits = min(max(2, round(1 / val_fraction)), len(np.unique(groups[train])))
    fit, val = folds(y[train], groups[train], n_splits, seed)[0]
    return train[fit], train[val]


@dataclass(frozen=True)
class FoldResult:
    split: str
    seed: int
    fold: int
    n: int
    correct: int
    accuracy: float
    auroc: float
    nn_accuracy: float  # 1-NN of test thumbnails among the training folds' (the leakage probe)
    groups_shared: int  # scans with slices on both sides of this fold
    best_epoch: int
    seconds: float

    def row(self) -> dict[str, float | int | str]:
        return asdict(self)


@dataclass(frozen=True)
class FoldOutcome:
    result: FoldResult
    scan_counts: dict[int, tuple[int, int]]  # scan -> (test images, correct)


def run_fold(
    images: LabelledImages,
    thumbs: np.ndarray,
    scans: np.ndarray,
    split: str,
    seed: int,
    fold: int,
    k: int,
    val_fraction: float,
    cfg: TrainCnnParams,
    device: torch.device,
) -> FoldOutcome:
    """Train the CNN on the other folds (validation carved from them), test on fold `fold`."""
    start = time.perf_counter()
    groups = fold_groups(images, scans, split)
    train, test = folds(images.y, groups, k, named_seed(seed, "crossval.folds"))[fold]
    fit_idx, val_idx = carve_validation(
        train, images.y, groups, val_fraction, named_seed(seed, "crossval.validation", fold)
    )
    x, y = torch.from_numpy(images.x), torch.from_numpy(images.y)
    torch.manual_seed(named_seed(seed, "crossval.init", fold))  # the model's initial weights
    model = build_classifier(cfg, images.x.shape[-1], len(images.classes))
    fit = fit_classifier(
        model, x[fit_idx], y[fit_idx], x[val_idx], y[val_idx],
        epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
        seed=named_seed(seed, "crossval.training", fold), device=device, augment=cfg.augment,
        progress=False,
    )  # fmt: skip
    logits = predict_logits(model, x[test], 256, device)
    scores = metrics.classification_metrics(logits, y[test])
    hit = (logits.argmax(1).cpu().numpy() == images.y[test]).astype(int)
    knn = KNeighborsClassifier(n_neighbors=1).fit(thumbs[train], images.y[train])
    counts: dict[int, tuple[int, int]] = {}
    for scan, h in zip(scans[test].tolist(), hit.tolist(), strict=True):
        n, c = counts.get(scan, (0, 0))
        counts[scan] = (n + 1, c + h)
    result = FoldResult(
        split=split, seed=seed, fold=fold, n=len(test), correct=int(hit.sum()),
        accuracy=float(hit.mean()), auroc=float(scores["roc_auc"]),
        nn_accuracy=float(knn.score(thumbs[test], images.y[test])),
        groups_shared=len(np.intersect1d(scans[train], scans[test])),
        best_epoch=fit.best_epoch, seconds=round(time.perf_counter() - start, 1),
    )  # fmt: skip
    return FoldOutcome(result, counts)


def pending(
    done: set[tuple[str, int, int]], splits: Sequence[str], seeds: Sequence[int], k: int
) -> Iterator[tuple[str, int, int]]:
    """(split, seed, fold) of the grid that `done` does not hold yet, seed by seed (so a stopped
    grid leaves whole seeds of both splits)."""
    for seed in seeds:
        for split in splits:
            for fold in range(k):
                if (split, seed, fold) not in done:
                    yield split, seed, fold


def bootstrap_accuracy(
    counts: Mapping[int, tuple[int, int]], seed: int, draws: int = 2000
) -> tuple[float, float, float]:
    """Pooled accuracy and its 95% percentile interval, resampling scans with replacement."""
    table = np.array(list(counts.values()), dtype=np.int64)  # rows: (images, correct)
    if len(table) == 0:
        raise ValueError("no scans to resample")
    rng = np.random.default_rng(named_seed(seed, "crossval.bootstrap"))
    picks = rng.integers(0, len(table), size=(draws, len(table)))
    sampled = table[picks].sum(axis=1)  # draws x (images, correct)
    estimates = sampled[:, 1] / sampled[:, 0]
    low, high = np.percentile(estimates, [2.5, 97.5])
    return float(table[:, 1].sum() / table[:, 0].sum()), float(low), float(high)


def summarise(
    results: Sequence[FoldResult],
    scan_counts: Mapping[tuple[str, int, int], Mapping[int, tuple[int, int]]],
    k: int,
) -> dict[str, dict[str, float]]:
    """Per split: pooled CV accuracy per seed with its scan-bootstrap CI, then mean ± sd over the
    seeds whose k folds are all done; the mean fold AUROC and 1-NN accuracy beside them."""
    out: dict[str, dict[str, float]] = {}
    for split in SPLITS:
        seeds = sorted({r.seed for r in results if r.split == split})
        complete = [s for s in seeds if sum(r.split == split and r.seed == s for r in results) == k]
        if not complete:
            continue
        row: dict[str, float] = {"seeds": len(complete), "folds": k}
        pooled = []
        for s in complete:
            merged: dict[int, tuple[int, int]] = {}
            for fold in range(k):
                for scan, (n, c) in scan_counts[(split, s, fold)].items():
                    n0, c0 = merged.get(scan, (0, 0))
                    merged[scan] = (n0 + n, c0 + c)
            acc, low, high = bootstrap_accuracy(merged, s)
            row |= {f"seed_{s}.accuracy": acc, f"seed_{s}.ci_low": low, f"seed_{s}.ci_high": high}
            pooled.append(acc)
        mine = [r for r in results if r.split == split and r.seed in complete]
        row |= _mean_sd("accuracy", pooled)
        row |= _mean_sd("auroc", [r.auroc for r in mine])
        row |= _mean_sd("nn_accuracy", [r.nn_accuracy for r in mine])
        row["images"] = float(sum(r.n for r in mine) / len(complete))
        out[split] = row
    return out


def _mean_sd(name: str, values: Sequence[float]) -> dict[str, float]:
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {f"{name}.mean": float(np.mean(values)), f"{name}.sd": sd}
