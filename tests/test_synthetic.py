"""The embedded CT-like generator: deterministic, balanced as asked, learnable but not by brightness."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from advdenoise.core.errors import PipelineError
from advdenoise.core.seeding import named_rng
from advdenoise.data import synthetic

CLASSES = ("non-COVID", "COVID")


def generate(*args: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, ids) of `synthetic.generate`."""
    images = synthetic.generate(*args, **kwargs)
    return images.x, images.y, images.files


def test_deterministic_and_seed_dependent() -> None:
    counts = {"non-COVID": 4, "COVID": 5}
    x1, y1, ids1 = generate(counts, CLASSES, 32, seed=3)
    x2, y2, ids2 = generate(counts, CLASSES, 32, seed=3)
    x3, _, _ = generate(counts, CLASSES, 32, seed=4)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and list(ids1) == list(ids2)
    assert not np.array_equal(x1, x3)


def test_images_do_not_depend_on_the_number_of_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic, "_BATCH_PIXELS", 3 * 32 * 32)  # batches of 3 slices
    counts = {"non-COVID": 5, "COVID": 6}
    x1, y1, ids1 = generate(counts, CLASSES, 32, seed=3, workers=1)
    x4, y4, ids4 = generate(counts, CLASSES, 32, seed=3, workers=4)
    assert np.array_equal(x1, x4) and np.array_equal(y1, y4) and list(ids1) == list(ids4)
    for k, (label, name) in enumerate(zip(y4, ids4, strict=True)):  # each slice in its place
        rng = named_rng(3, synthetic.SYNTHETIC_STREAM, int(label), int(name.split("/")[-1]))
        assert np.array_equal(x4[k, 0], synthetic.render_slice(rng, 32, lesions=label == 1))


def test_counts_labels_ids_and_format() -> None:
    x, y, ids = generate({"non-COVID": 3, "COVID": 7}, CLASSES, 48, seed=0)
    assert x.shape == (10, 1, 48, 48) and x.dtype == np.uint8
    assert y.dtype == np.int64 and (y == 0).sum() == 3 and (y == 1).sum() == 7
    assert ids[0] == "synthetic/non-COVID/000000" and ids[-1] == "synthetic/COVID/000006"
    assert len(set(ids)) == 10
    assert x.std() > 20  # not blank: air, tissue and lungs are all there


def test_an_image_does_not_depend_on_the_counts() -> None:
    xa, _, ida = generate({"non-COVID": 2, "COVID": 3}, CLASSES, 32, seed=1)
    xb, _, idb = generate({"non-COVID": 5, "COVID": 1}, CLASSES, 32, seed=1)
    assert np.array_equal(xa[:2], xb[:2])  # non-COVID 0 and 1
    assert np.array_equal(xa[2], xb[5]) and ida[2] == idb[5]  # COVID 0


def test_lesions_are_the_only_difference_and_stay_inside_the_lungs() -> None:
    for i in range(4):
        clean = synthetic.render_slice(named_rng(0, "test.render", i), 64, lesions=False).astype(
            int
        )
        covid = synthetic.render_slice(named_rng(0, "test.render", i), 64, lesions=True).astype(int)
        diff = covid - clean
        assert diff.max() > 20  # something visible was added ...
        assert (np.abs(diff) > 8).mean() < 0.5  # ... locally, not as a global change
        # Soft tissue away from the lungs only moves by the small re-levelling offset.
        window = np.lib.stride_tricks.sliding_window_view(clean, (7, 7))
        tissue = (window.min(axis=(2, 3)) > 180) & (window.max(axis=(2, 3)) < 250)
        offset = diff[3:-3, 3:-3][tissue]
        assert tissue.sum() > 50
        assert offset.max() - offset.min() <= 2 and offset.min() >= -15 and offset.max() <= 0


def test_anatomy_is_the_same_at_every_resolution() -> None:
    big = synthetic.render_slice(named_rng(0, "test.render", 0), 128, lesions=True).astype(float)
    small = synthetic.render_slice(named_rng(0, "test.render", 0), 32, lesions=True).astype(float)
    pooled = big.reshape(32, 4, 32, 4).mean(axis=(1, 3))
    assert np.corrcoef(pooled.ravel(), small.ravel())[0, 1] > 0.9


def test_needs_exactly_two_classes() -> None:
    with pytest.raises(PipelineError, match="two classes"):
        generate({"a": 10, "b": 10, "c": 10}, ("a", "b", "c"), 32, seed=0)


def _cv_accuracy(features: np.ndarray, y: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(cross_val_score(model, features, y, cv=5).mean())


def test_mean_intensity_does_not_give_the_class_away_but_texture_does() -> None:
    x, y, _ = generate({"non-COVID": 200, "COVID": 200}, CLASSES, 64, seed=0)
    images = x[:, 0].astype(np.float64) / 255.0
    mean_acc = _cv_accuracy(images.mean(axis=(1, 2))[:, None], y)
    # A simple learnable baseline: the grey-level histogram (opacities fill the mid-grey range).
    hist = np.stack([np.histogram(im, bins=16, range=(0, 1))[0] for im in images]) / 64**2
    hist_acc = _cv_accuracy(hist, y)
    assert mean_acc < 0.7
    assert hist_acc > mean_acc + 0.1


def test_scans_have_bounded_lengths_and_number_every_image() -> None:
    layout = synthetic.scan_layout(100, 1, (8, 24), seed=0)
    scans, positions, lengths = layout.T
    assert len(layout) == 100 and scans[0] == 0 and np.all(np.diff(scans) >= 0)
    assert np.all((lengths >= 8) & (lengths <= 24))
    for s in np.unique(scans)[:-1]:  # every scan but the last (cut at the count) is whole
        assert positions[scans == s].tolist() == list(range(int(lengths[scans == s][0])))
    assert synthetic.scan_layout(5, 0, (1, 1), seed=0)[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_slices_of_a_scan_are_near_copies_and_scans_differ() -> None:
    from advdenoise.data.groups import rms_distance, thumbnails

    counts = {"non-COVID": 60, "COVID": 60}
    images = synthetic.generate(counts, CLASSES, 32, seed=0, slices=(8, 24))
    assert len(np.unique(images.scans)) >= 6
    assert all(len(np.unique(images.y[images.scans == s])) == 1 for s in np.unique(images.scans))
    t = thumbnails(images.x)
    step = rms_distance(t[1:], t[:-1])
    same = images.scans[1:] == images.scans[:-1]
    assert step[same].max() < step[~same].min()  # a scan boundary is the largest step
    independent = synthetic.generate(counts, CLASSES, 32, seed=0)
    assert independent.scans.tolist() == list(range(120))
    # the first slice of each scan is that scan's anatomy, not the independent image's
    assert not np.array_equal(images.x, independent.x)
