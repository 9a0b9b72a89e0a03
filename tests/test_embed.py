"""The embed stage: separability numbers on features with a known answer, determinism, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from threadpoolctl import threadpool_limits

from advdenoise.attacks.sets import save_adversarial
from advdenoise.core.errors import PipelineError
from advdenoise.core.params import read_yaml
from advdenoise.data.splits import Split, Splits, save_splits, to_float
from advdenoise.evaluation import embed, projection
from advdenoise.models.autoencoder import Autoencoder
from advdenoise.models.classifier import Classifier
from advdenoise.models.files import MODEL_FILE, save_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield


def _gauss(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# --------------------------------------------------------------------------- separability


def test_identical_distributions_are_inseparable():
    clean, adv = _gauss(200, 16, 1), _gauss(200, 16, 2)
    strata = np.arange(200) % 2
    assert abs(embed.silhouette(clean, adv)) < 0.02
    assert abs(embed.probe_auroc(clean, adv, strata, 5, seed=0) - 0.5) < 0.1


def test_well_separated_distributions_are_separable():
    clean, adv = _gauss(100, 16, 1), _gauss(100, 16, 2, shift=3.0)
    assert embed.silhouette(clean, adv) > 0.5
    assert embed.probe_auroc(clean, adv, None, 5, seed=0) > 0.99


def test_a_shift_in_one_dimension_is_found_by_the_probe_not_by_silhouette():
    clean = _gauss(200, 32, 1)
    adv = clean.copy()
    adv[:, 0] += 1.5  # every twin moves the same way along one axis out of 32
    assert embed.silhouette(clean, adv) < 0.1
    assert embed.probe_auroc(clean, adv, None, 4, seed=0) > 0.8


def test_identical_points_give_chance_numbers():
    clean = _gauss(40, 8, 3)
    assert abs(embed.silhouette(clean, clean.copy())) < 0.05
    assert embed.probe_auroc(clean, clean.copy(), None, 4, seed=0) == pytest.approx(0.5, abs=0.05)


def test_probe_refuses_more_folds_than_images_per_class():
    clean = _gauss(10, 4, 0)
    strata = np.r_[np.zeros(8, int), np.ones(2, int)]
    with pytest.raises(PipelineError, match="embed.probe_folds=3"):
        embed.probe_auroc(clean, clean + 1, strata, 3, seed=0)


# --------------------------------------------------------------------------- detector


def test_detector_auroc_on_constructed_reconstruction_errors():
    clean = np.array([1.0, 2.0, 3.0])
    adv = np.array([2.5, 4.0, 5.0])
    roc = embed.detector_roc(clean, adv)
    assert roc.auroc == pytest.approx(8 / 9)  # 8 of 9 (clean, adv) pairs ordered correctly
    assert embed.detector_roc(clean, clean + 10).auroc == 1.0
    assert embed.detector_roc(clean + 10, clean).auroc == 0.0
    assert embed.detector_roc(clean, clean.copy()).auroc == pytest.approx(0.5)
    frame = roc.frame()
    assert list(frame.columns) == ["fpr", "tpr", "threshold"]
    assert np.isfinite(frame.to_numpy()).all()
    assert frame.fpr.is_monotonic_increasing and frame.tpr.is_monotonic_increasing
    assert roc.tpr_at(0.0) == pytest.approx(2 / 3)  # threshold 4.0 flags two adversarial, no clean


def test_detector_rejects_empty_and_nan():
    with pytest.raises(PipelineError, match="empty"):
        embed.detector_roc(np.array([]), np.array([1.0]))
    with pytest.raises(PipelineError, match="NaN"):
        embed.detector_roc(np.array([np.nan]), np.array([1.0]))


def test_reconstruction_error_is_per_image_mse():
    x = np.zeros((2, 1, 2, 2), np.float32)
    recon = x.copy()
    recon[1] = 0.5
    np.testing.assert_allclose(embed.reconstruction_error(x, recon), [0.0, 0.25])


# --------------------------------------------------------------------------- sampling, embeddings


def test_subsample_is_seeded_sorted_and_bounded():
    a = embed.subsample(100, 30, np.random.default_rng([0, 5]))
    b = embed.subsample(100, 30, np.random.default_rng([0, 5]))
    assert np.array_equal(a, b) and len(np.unique(a)) == 30 and np.all(np.diff(a) > 0)
    assert np.array_equal(embed.subsample(10, 30, np.random.default_rng(0)), np.arange(10))


@pytest.mark.parametrize("method", projection.EMBEDDINGS)
def test_embeddings_are_deterministic_with_a_seed(method):
    # two blobs plus exact duplicates (like the features of a collapsed denoiser's outputs); the
    # stage test below repeats a whole run and compares every output byte for byte
    x = np.vstack([_gauss(30, 10, 1), _gauss(30, 10, 2, shift=4.0), np.ones((20, 10))])
    runs = [projection.embed_2d(x, method, seed=3, perplexity=10, neighbors=8) for _ in range(3)]
    assert runs[0].shape == (80, 2)
    assert all(np.array_equal(runs[0], r) for r in runs[1:])
    a = runs[0]
    # the two blobs stay apart in 2-D
    assert embed.probe_auroc(a[:30], a[30:60], None, 3, seed=0) > 0.95


def test_unknown_embedding_is_an_error():
    with pytest.raises(PipelineError, match="unknown embedding"):
        projection.embed_2d(_gauss(10, 3, 0), "lle", seed=0)


# --------------------------------------------------------------------------- stage end to end

SIZE = 32
N_TEST = 24


def _tiny_project(tmp: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)

    def split(n: int) -> Split:
        return Split(
            rng.integers(0, 256, (n, 1, SIZE, SIZE), dtype=np.uint8),
            np.arange(n, dtype=np.int64) % 2,
            np.array([f"img{i}" for i in range(n)]),
        )

    save_splits(tmp / "prepare", Splits(split(8), split(4), split(N_TEST), ("non-COVID", "COVID")))
    torch.manual_seed(0)
    save_model(Classifier(SIZE, [4, 8, 8, 8]), tmp / "train_cnn" / MODEL_FILE)
    save_model(Autoencoder(SIZE, [4, 8, 8], 2), tmp / "train_ae" / MODEL_FILE)
    clean = to_float(split_x := np.load(tmp / "prepare" / "splits.npz")["x_test"]).numpy()
    assert split_x.shape == (N_TEST, 1, SIZE, SIZE)
    eps = (0.0, 0.03)
    images = {}
    for i, m in enumerate(("fgsm", "pgd")):
        noise = np.random.default_rng(i).choice([-1.0, 1.0], size=clean.shape).astype(np.float32)
        images[m] = np.stack([np.clip(clean + e * noise, 0, 1) for e in eps]).astype(np.float32)
    save_adversarial(tmp / "attack", eps, images, clean)
    params = read_yaml((ROOT / "params.yaml").read_text())
    params["data"]["image_size"] = SIZE
    params["train_cnn"]["paper"]["channels"] = [4, 8, 8, 8]
    params["attack"].update(eps=0.03, eps_grid=[0.0, 0.03])
    params["robustness"].update(eps=0.03, eps_grid=[0.03])
    params["embed"].update(max_points=20, probe_folds=2, tsne_perplexity=5.0, umap_neighbors=5)
    params["embed"]["tsne_max_iter"] = 250
    params["device"] = "cpu"
    params["threads"] = 1
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    return {
        "root": tmp,
        "metrics": tmp / "metrics" / "embed.json",
        "plots": tmp / "plots" / "embed",
    }


def _argv(p: dict[str, Path]) -> list[str]:
    t = p["root"]
    return [
        "--params", str(t / "params.yaml"), "--data", str(t / "prepare"),
        "--classifier", str(t / "train_cnn"), "--autoencoder", str(t / "train_ae"),
        "--adversarial", str(t / "attack"), "--metrics", str(p["metrics"]),
        "--plots", str(p["plots"]),
    ]  # fmt: skip


def _load_stage():
    import importlib.util

    spec = importlib.util.spec_from_file_location("stage_embed", ROOT / "stages" / "embed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_end_to_end_on_tiny_data(tmp_path, capsys):
    paths = _tiny_project(tmp_path)
    stage = _load_stage()
    assert stage.main(_argv(paths)) == 0
    metrics = json.loads(paths["metrics"].read_text())
    figures = {k: v for k, v in metrics.items() if not k.startswith("env.")}
    assert all(isinstance(v, (int, float)) and np.isfinite(v) for v in figures.values())
    for space in embed.SPACES:
        # what the figures mean is tested on constructed features above; here: all are reported
        for m in ("fgsm", "pgd"):
            keys = ["silhouette", *(f"probe_auroc.{w}" for w in ("full", *projection.EMBEDDINGS))]
            assert all(f"{space}.{m}.{k}" in figures for k in keys)
        frame = pd.read_csv(paths["plots"] / f"{space}_tsne.csv")
        assert list(frame.columns) == ["x", "y", "group", "label"]
        assert len(frame) == 5 * 20  # clean + 2 x (adversarial, denoised), 20 points each
        assert frame.groupby("group").size().to_dict() == {
            g: 20 for g in embed.group_names(("fgsm", "pgd"))
        }
        assert set(frame.label) == {"COVID", "non-COVID"}
        assert (paths["plots"] / f"{space}_embeddings.png").stat().st_size > 1000
    for m in ("fgsm", "pgd"):
        assert f"detector.{m}.auroc" in figures
        roc = pd.read_csv(paths["plots"] / f"detector_roc_{m}.csv")
        assert list(roc.columns) == ["fpr", "tpr", "threshold"] and len(roc) >= 2
    assert metrics["points_per_group"] == 20 and metrics["eps"] == 0.03
    assert "took" in capsys.readouterr().out
    # a second run reproduces every output byte for byte
    first = {f.name: f.read_bytes() for f in sorted(paths["plots"].iterdir())}
    first["metrics"] = paths["metrics"].read_bytes()
    assert stage.main(_argv(paths)) == 0
    second = {f.name: f.read_bytes() for f in sorted(paths["plots"].iterdir())}
    second["metrics"] = paths["metrics"].read_bytes()
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == []


def test_stage_reports_a_missing_headline_eps(tmp_path, capsys):
    paths = _tiny_project(tmp_path)
    params = read_yaml((tmp_path / "params.yaml").read_text())
    params["attack"].update(eps=0.05, eps_grid=[0.0, 0.05])
    params["robustness"].update(eps=0.05, eps_grid=[0.05])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert _load_stage().main(_argv(paths)) == 2
    assert "eps=0.05" in capsys.readouterr().err
    assert not paths["metrics"].exists()


def test_umap_on_exact_neighbours_equals_umaps_own_small_data_run():
    """The neighbours computed in C give UMAP the graph its own per-pair loop gives: same layout."""
    import warnings

    import umap

    x = np.vstack([_gauss(60, 12, 1), _gauss(60, 12, 2, shift=3.0), np.ones((20, 12))])
    idx, dist = projection.exact_neighbours(x, 8)
    assert (dist[:, 0] == 0).all() and (np.diff(dist, axis=1) >= 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = [
            umap.UMAP(
                n_neighbors=8, init="pca", random_state=3, n_jobs=1, precomputed_knn=knn
            ).fit_transform(x)
            for knn in ((None, None, None), (idx, dist))
        ]
    assert np.array_equal(runs[0], runs[1])


def test_umap_kernels_compile_once_per_environment():
    """A second process loads UMAP's kernels from numba's cache instead of compiling them."""
    import subprocess
    import sys

    code = (
        "import numpy as np; from advdenoise.evaluation import projection; from umap import umap_;"
        "projection.embed_2d(np.random.default_rng(0).normal(size=(30, 4)), 'umap', 0);"
        "print(sorted(projection.cache_umap_kernels()), bool(umap_.smooth_knn_dist.stats.cache_hits))"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    kernels = [
        "_nb_optimize_layout_euclidean_single_epoch",
        "compute_membership_strengths",
        "euclidean",
        "smooth_knn_dist",
    ]
    assert runs[1].stdout.strip() == f"{kernels} True"
