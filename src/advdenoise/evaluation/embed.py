"""Feature embeddings of clean, adversarial and denoised test images, with numbers for their overlap.

The paper looks at PCA and t-SNE plots of clean and adversarial features and concludes that they
overlap. This module draws the same pictures and measures the overlap, per feature space (the CNN's
penultimate layer, "cnn"; the autoencoder's flattened bottleneck, "ae") and attack method:

- silhouette score of clean vs adversarial points in the full, per-dimension standardised feature
  space (about 0 = the two clouds overlap, towards 1 = separate clusters);
- AUROC of a cross-validated linear probe (standardise + logistic regression) that tells clean from
  adversarial, in the full feature space and in each 2-D embedding (0.5 = chance);
- AUROC of the MagNet-style detector that flags an input x by its autoencoder reconstruction error
  mean((AE(x) - x)^2), with its ROC curve (computed on the whole test split).

Pairs stay paired: every group (clean, adversarial_<m>, denoised_<m>) holds the same subsample of test
indices, and the probe's folds split test images, not points, so an image and its adversarial twin are
never on opposite sides of a fold. The 2-D embeddings (seeded, reproducible byte for byte) come
from `projection`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from advdenoise.core.errors import PipelineError
from advdenoise.core.params import EmbedParams
from advdenoise.core.seeding import named_seed
from advdenoise.evaluation.projection import EMBEDDINGS, embed_2d, standardise
from advdenoise.models.autoencoder import Autoencoder
from advdenoise.models.classifier import ClassifierNet
from advdenoise.models.inference import batched_apply, reconstruct

SPACES = ("cnn", "ae")
CLEAN = "clean"
ROC_FPR_POINT = 0.05  # the detector's TPR is also reported at this false-positive rate
SUBSAMPLE_STREAM = "embed.subsample"  # the stream of this stage's subsample


def adversarial_group(method: str) -> str:
    return f"adversarial_{method}"


def denoised_group(method: str) -> str:
    return f"denoised_{method}"


def group_names(methods: Sequence[str]) -> tuple[str, ...]:
    """Fixed group order: clean, then adversarial and denoised per method."""
    names = [CLEAN]
    for m in methods:
        names += [adversarial_group(m), denoised_group(m)]
    return tuple(names)


# --------------------------------------------------------------------------- sampling and features


def subsample(n: int, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most `max_points` of `n` items, drawn without replacement."""
    if n <= 0:
        raise PipelineError("embed: the test split is empty")
    if n <= max_points:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_points, replace=False))


def cnn_features(
    model: ClassifierNet, x: np.ndarray, batch_size: int, device: torch.device | str
) -> np.ndarray:
    """Penultimate-layer features [N, D] (float32)."""
    return batched_apply(model.features, torch.from_numpy(x), batch_size, device).numpy()


def ae_features(
    model: Autoencoder, x: np.ndarray, batch_size: int, device: torch.device | str
) -> np.ndarray:
    """Flattened bottleneck [N, C*h*w] (float32)."""
    encode: Callable[[torch.Tensor], torch.Tensor] = lambda b: model.encode(b).flatten(1)  # noqa: E731
    return batched_apply(encode, torch.from_numpy(x), batch_size, device).numpy()


def denoise(
    model: Autoencoder, x: np.ndarray, batch_size: int, device: torch.device | str
) -> np.ndarray:
    """AE(x) [N, 1, H, W] in [0, 1] (float32)."""
    return reconstruct(model, torch.from_numpy(x), batch_size, device).numpy()


def reconstruction_error(x: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Per-image mean squared reconstruction error, the MagNet detector's score (float64, [N])."""
    if x.shape != recon.shape:
        raise PipelineError(f"reconstruction shape {recon.shape} does not match inputs {x.shape}")
    diff = x.astype(np.float64) - recon.astype(np.float64)
    return (diff**2).reshape(len(x), -1).mean(axis=1)


# --------------------------------------------------------------------------- separability numbers


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape or a.ndim != 2:
        raise PipelineError(
            f"paired feature arrays must be equal [N, D], got {a.shape} and {b.shape}"
        )
    if len(a) < 2:
        raise PipelineError("embed: need at least two paired points per group")
    return np.vstack([a, b]), np.r_[np.zeros(len(a), int), np.ones(len(b), int)]


def silhouette(clean: np.ndarray, adv: np.ndarray) -> float:
    """Silhouette score of the two groups in the standardised feature space (0 = overlap)."""
    from sklearn.metrics import silhouette_score

    x, y = _pair(clean, adv)
    x = standardise(x)
    if np.ptp(x, axis=0).max(initial=0.0) == 0.0:
        return 0.0  # every point identical: no structure at all
    return float(silhouette_score(x, y, metric="euclidean"))


def probe_auroc(
    clean: np.ndarray,
    adv: np.ndarray,
    strata: np.ndarray | None,
    folds: int,
    seed: int,
) -> float:
    """Mean held-out AUROC of a standardised logistic-regression probe, clean (0) vs adversarial (1).

    `clean[i]` and `adv[i]` come from the same test image; folds are drawn over images
    (StratifiedKFold on `strata`, e.g. the class label), so both members of a pair are always in the
    same fold and the probe cannot score a point by remembering its twin.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _pair(clean, adv)
    n = len(clean)
    strata = np.zeros(n, int) if strata is None else np.asarray(strata)
    if len(strata) != n:
        raise PipelineError(f"probe strata have {len(strata)} entries for {n} pairs")
    smallest = int(np.unique(strata, return_counts=True)[1].min())
    if smallest < folds:
        raise PipelineError(
            f"embed.probe_folds={folds} needs at least {folds} test images per class in the "
            f"subsample, the smallest class has {smallest}"
        )
    splitter = StratifiedKFold(
        n_splits=folds, shuffle=True, random_state=named_seed(seed, "embed.probe")
    )
    scores = []
    for train_img, test_img in splitter.split(np.zeros(n), strata):
        train = np.r_[train_img, train_img + n]
        test = np.r_[test_img, test_img + n]
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        probe.fit(x[train], y[train])
        scores.append(roc_auc_score(y[test], probe.decision_function(x[test])))
    return float(np.mean(scores))


@dataclass(frozen=True)
class Roc:
    """ROC of a detector that flags an input when its score >= threshold (positives = adversarial)."""

    auroc: float
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    def tpr_at(self, fpr: float) -> float:
        """Highest TPR reachable with a false-positive rate <= `fpr`."""
        return float(self.tpr[self.fpr <= fpr + 1e-12].max())

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"fpr": self.fpr, "tpr": self.tpr, "threshold": self.thresholds})


def detector_roc(clean_scores: np.ndarray, adv_scores: np.ndarray) -> Roc:
    """ROC and AUROC of scoring inputs by e.g. reconstruction error: high score = adversarial."""
    from sklearn.metrics import roc_auc_score, roc_curve

    clean_scores = np.asarray(clean_scores, dtype=np.float64)
    adv_scores = np.asarray(adv_scores, dtype=np.float64)
    if len(clean_scores) == 0 or len(adv_scores) == 0:
        raise PipelineError("detector ROC needs clean and adversarial scores (got an empty set)")
    scores = np.r_[clean_scores, adv_scores]
    if not np.isfinite(scores).all():
        raise PipelineError("detector scores contain NaN or infinite values")
    y = np.r_[np.zeros(len(clean_scores), int), np.ones(len(adv_scores), int)]
    fpr, tpr, thr = roc_curve(y, scores)
    # the first threshold is +inf ("flag nothing"); keep the CSV finite with the next float above max
    thr = np.where(np.isfinite(thr), thr, np.nextafter(scores.max(), np.inf))
    return Roc(float(roc_auc_score(y, scores)), fpr, tpr, thr)


def probe_notes(metrics: Mapping[str, float], space: str, methods: Sequence[str]) -> dict[str, str]:
    """Per embedding, a one-line summary of its probe AUROCs for the figure titles."""
    return {
        emb: "probe AUROC "
        + ", ".join(f"{m} {metrics[f'{space}.{m}.probe_auroc.{emb}']:.2f}" for m in methods)
        for emb in EMBEDDINGS
    }


# --------------------------------------------------------------------------- the whole analysis


@dataclass
class EmbedResult:
    """Everything the stage writes: flat numeric metrics, plot frames, and (unwritten) timings."""

    metrics: dict[str, float] = field(default_factory=dict)
    scatter: dict[str, pd.DataFrame] = field(
        default_factory=dict
    )  # "<space>_<embedding>" -> x,y,group,label
    coords: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # space -> emb -> [N, 2]
    groups: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    labels: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    rocs: dict[str, Roc] = field(default_factory=dict)  # method -> detector ROC
    errors: dict[str, np.ndarray] = field(default_factory=dict)  # clean / method -> recon errors
    seconds: dict[str, float] = field(default_factory=dict)  # "<space>.<embedding>" -> wall time


def analyse_space(
    space: str,
    features: Mapping[str, np.ndarray],
    methods: Sequence[str],
    strata: np.ndarray,
    params: EmbedParams,
    seed: int,
    result: EmbedResult,
) -> None:
    """Embed one feature space (all groups jointly) and add its numbers to `result`."""
    names = group_names(methods)
    pooled = np.vstack([features[g] for g in names])
    clean = features[CLEAN]
    result.metrics[f"{space}.dim"] = float(clean.shape[1])
    coords: dict[str, np.ndarray] = {}
    for emb in EMBEDDINGS:
        start = time.perf_counter()
        coords[emb] = embed_2d(
            pooled,
            emb,
            named_seed(seed, "embed.projection", emb),
            params.tsne_perplexity,
            params.umap_neighbors,
            params.tsne_max_iter,
        )
        result.seconds[f"{space}.{emb}"] = time.perf_counter() - start
    result.coords[space] = coords
    n = len(clean)
    where = {g: slice(i * n, (i + 1) * n) for i, g in enumerate(names)}
    for m in methods:
        adv, den = features[adversarial_group(m)], features[denoised_group(m)]
        key = f"{space}.{m}"
        result.metrics[f"{key}.silhouette"] = silhouette(clean, adv)
        result.metrics[f"{key}.probe_auroc.full"] = probe_auroc(
            clean, adv, strata, params.probe_folds, seed
        )
        for emb in EMBEDDINGS:
            c = coords[emb]
            result.metrics[f"{key}.probe_auroc.{emb}"] = probe_auroc(
                c[where[CLEAN]], c[where[adversarial_group(m)]], strata, params.probe_folds, seed
            )
        result.metrics[f"{key}.denoised.silhouette"] = silhouette(clean, den)
        result.metrics[f"{key}.denoised.probe_auroc.full"] = probe_auroc(
            clean, den, strata, params.probe_folds, seed
        )
    for emb in EMBEDDINGS:
        c = coords[emb]
        result.scatter[f"{space}_{emb}"] = pd.DataFrame(
            {"x": c[:, 0], "y": c[:, 1], "group": result.groups, "label": result.labels}
        )


def run_embed(
    cnn: ClassifierNet,
    ae: Autoencoder,
    clean: np.ndarray,
    y: np.ndarray,
    adversarial: Mapping[str, np.ndarray],
    classes: Sequence[str],
    params: EmbedParams,
    seed: int,
    rng: np.random.Generator,
    device: torch.device | str = "cpu",
) -> EmbedResult:
    """Features, embeddings, probes and the reconstruction-error detector for every method.

    `clean` is the float test split [N, 1, H, W] in [0, 1], `adversarial[m]` its adversarial version
    at the headline eps (same order). The detector uses every test image; features and embeddings use
    a seeded subsample of `params.max_points` images, the same in every group.
    """
    methods = tuple(adversarial)
    if not methods:
        raise PipelineError("embed: no adversarial sets to analyse")
    for m, adv in adversarial.items():
        if adv.shape != clean.shape:
            raise PipelineError(f"embed: {m} set has shape {adv.shape}, clean {clean.shape}")
    bs = params.batch_size
    result = EmbedResult()
    idx = subsample(len(clean), params.max_points, rng)
    names = group_names(methods)
    images: dict[str, np.ndarray] = {CLEAN: clean}
    recon_clean = denoise(ae, clean, bs, device)
    result.errors[CLEAN] = reconstruction_error(clean, recon_clean)
    for m in methods:
        adv = np.ascontiguousarray(adversarial[m], dtype=np.float32)
        recon = denoise(ae, adv, bs, device)
        images[adversarial_group(m)] = adv
        images[denoised_group(m)] = recon
        result.errors[m] = reconstruction_error(adv, recon)
        roc = detector_roc(result.errors[CLEAN], result.errors[m])
        result.rocs[m] = roc
        result.metrics[f"detector.{m}.auroc"] = roc.auroc
        result.metrics[f"detector.{m}.tpr_at_5pct_fpr"] = roc.tpr_at(ROC_FPR_POINT)
        result.metrics[f"detector.{m}.mean_error"] = float(result.errors[m].mean())
    result.metrics["detector.clean.mean_error"] = float(result.errors[CLEAN].mean())
    result.metrics["points_per_group"] = float(len(idx))
    result.metrics["test_images"] = float(len(clean))
    class_names = np.asarray(classes, dtype=str)[y[idx]]
    result.groups = np.repeat(np.asarray(names, dtype=str), len(idx))
    result.labels = np.tile(class_names, len(names))
    extract = {
        "cnn": lambda x: cnn_features(cnn, x, bs, device),
        "ae": lambda x: ae_features(ae, x, bs, device),
    }
    for space in SPACES:
        feats = {g: extract[space](np.ascontiguousarray(images[g][idx])) for g in names}
        analyse_space(space, feats, methods, y[idx], params, seed, result)
    bad = [k for k, v in result.metrics.items() if not np.isfinite(v)]
    if bad:
        raise PipelineError(f"embed: non-finite metrics {bad}")
    return result
