"""Seeded, deterministic 2-D embeddings (PCA, t-SNE, UMAP) of standardised feature vectors.

t-SNE and UMAP run on the first PRE_PCA_DIMS principal components of the standardised features
(the usual speed-up; PCA keeps most of the variance that matters for neighbourhoods). Both start
from a PCA layout (t-SNE init="pca", UMAP init="pca"), which keeps them reproducible byte for
byte. Below UMAP_EXACT_BELOW points UMAP gets its exact neighbours from one compiled loop, and its
compiled kernels are cached on disk (both give UMAP's own bits, faster).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import numpy as np

from advdenoise.core.errors import PipelineError

EMBEDDINGS = ("pca", "tsne", "umap")
PRE_PCA_DIMS = 50
UMAP_EXACT_BELOW = 4096  # umap-learn's own threshold for exact nearest neighbours


def standardise(features: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per dimension (constant dimensions stay 0)."""
    x = np.asarray(features, dtype=np.float64)
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _pca(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    k = min(k, x.shape[0], x.shape[1])
    return PCA(n_components=k, svd_solver="full", random_state=seed).fit_transform(x)


def exact_neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest neighbours of every row (a stable sort of all its distances) and their
    distances, exactly as umap-learn computes them for fewer than UMAP_EXACT_BELOW points.

    umap-learn gets those distances from scikit-learn's `pairwise_distances` with its numba
    Euclidean metric, which scikit-learn calls from Python once per pair (2 million calls, about
    3 s for 2000 points, plus compiling UMAP's own neighbour search). The same metric in a
    compiled loop gives the same bits in a fraction of a second (tests/test_embed.py).
    """
    dist = _all_distances()(np.ascontiguousarray(x, dtype=np.float32))  # as UMAP sees x
    index = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return index.astype(np.int32), np.take_along_axis(dist, index, axis=1)


@functools.cache
def _all_distances() -> Callable[[np.ndarray], np.ndarray]:
    """umap-learn's numba Euclidean metric over every pair, compiled once per process."""
    import numba
    from umap.distances import euclidean

    @numba.njit
    def all_distances(x: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
        n = x.shape[0]
        out = np.zeros((n, n))
        for i in range(n):
            for j in range(i + 1, n):
                out[i, j] = out[j, i] = euclidean(x[i], x[j])
        return out

    return all_distances  # type: ignore[no-any-return]


@functools.cache
def cache_umap_kernels() -> list[str]:
    """Let numba keep UMAP's compiled kernels on disk; returns the names of those it now caches.

    umap-learn compiles its neighbour-graph and layout kernels in every process (numba caching
    off), 4-6 s of each `embed` run on 2 CPU cores. numba's own cache (next to the package, or in
    the user's cache directory where that is read-only) compiles them once per environment and
    CPU; the compiled code and the embeddings are the same. Where no cache location is writable,
    the kernels compile per process as before.
    """
    from umap import distances, layouts, umap_

    kernels = {
        "smooth_knn_dist": umap_,
        "compute_membership_strengths": umap_,
        "_nb_optimize_layout_euclidean_single_epoch": layouts,
        "euclidean": distances,
    }
    cached = []
    for name, module in kernels.items():
        try:
            getattr(module, name).enable_caching()
        except (AttributeError, RuntimeError):  # renamed in umap-learn, or nowhere to write
            continue
        cached.append(name)
    return cached


def embed_2d(
    features: np.ndarray,
    method: str,
    seed: int,
    perplexity: float = 30.0,
    neighbors: int = 15,
    tsne_max_iter: int = 500,
) -> np.ndarray:
    """A seeded, deterministic 2-D embedding (pca / tsne / umap) of standardised features [N, 2]."""
    x = standardise(features)
    n = len(x)
    if n < 4:
        raise PipelineError(f"embed: {n} points are too few for a 2-D embedding")
    if x.shape[1] < 2:
        x = np.hstack([x, np.zeros((n, 2 - x.shape[1]))])
    if method == "pca":
        out = _pca(x, 2, seed)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        reduced = _pca(x, PRE_PCA_DIMS, seed)
        out = TSNE(
            n_components=2,
            perplexity=min(perplexity, (n - 1) / 3),
            init="pca",
            learning_rate="auto",
            max_iter=tsne_max_iter,
            random_state=seed,
            n_jobs=1,
        ).fit_transform(reduced)
    elif method == "umap":
        reduced = _pca(x, PRE_PCA_DIMS, seed)
        with warnings.catch_warnings():
            # umap announces that a random_state forces one thread, and warns on duplicate points
            warnings.simplefilter("ignore")
            import umap

            cache_umap_kernels()
            # init="pca", not the default "spectral": ARPACK's spectral initialisation gave
            # different layouts for the same input and seed (nearly degenerate eigenvectors)
            k = min(neighbors, n - 1)
            out = umap.UMAP(
                n_components=2,
                n_neighbors=k,
                init="pca",
                random_state=seed,
                n_jobs=1,
                precomputed_knn=exact_neighbours(reduced, k) if n < UMAP_EXACT_BELOW else None,
            ).fit_transform(reduced)
    else:
        raise PipelineError(f"unknown embedding {method!r}; use one of {list(EMBEDDINGS)}")
    out = np.asarray(out, dtype=np.float64)
    if out.shape != (n, 2) or not np.isfinite(out).all():
        raise PipelineError(f"embed: {method} produced a non-finite or misshaped embedding")
    return out
