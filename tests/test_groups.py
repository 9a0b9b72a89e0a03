"""Scan groups and the grouped split: inference, CSV groups, the splitter's guarantee, the probe."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.ndimage import gaussian_filter
from sklearn.metrics import adjusted_rand_score

from advdenoise.core.errors import PipelineError
from advdenoise.data import splits as data
from advdenoise.data.folders import load_image_folder
from advdenoise.data.groups import (
    canonical,
    infer_groups,
    merge,
    natural_key,
    scan_groups,
    thumbnails,
)
from advdenoise.data.leakage import probe
from advdenoise.data.splits import LabelledImages

CLASSES = {"non-COVID": 0, "COVID": 1}
PREFIX = {"non-COVID": "Non-Covid", "COVID": "Covid"}


def write_scans(root, scans: dict[str, list[int]], seed: int = 0, size: int = 48):
    """A Kaggle-layout folder of scans: per class, runs of slices numbered in slice order.

    Slices of one scan drift smoothly from a shared random anatomy; scans are independent. Returns
    {file id: scan id}. Numbers run 1..N per class, so '(10)' follows '(9)' only in natural order.
    """
    rng = np.random.default_rng(seed)
    truth: dict[str, str] = {}
    for cls, lengths in scans.items():
        (root / cls).mkdir(parents=True)
        number = 1
        for s, length in enumerate(lengths):
            anatomy = gaussian_filter(rng.normal(size=(size, size)), 3)
            drift = gaussian_filter(rng.normal(size=(size, size)), 3)
            for k in range(length):
                a = anatomy + 0.15 * k * drift
                a = (a - a.min()) / (a.max() - a.min() + 1e-9)
                file = f"{cls}/{PREFIX[cls]} ({number}).png"
                Image.fromarray((a * 255).astype(np.uint8)).save(root / file)
                truth[file] = f"{cls}-scan{s}"
                number += 1
    return truth


def test_natural_order_reads_numbers() -> None:
    names = ["Covid (10).png", "Covid (9).png", "Covid (100).png", "Covid (1).png"]
    assert sorted(names, key=natural_key) == [
        "Covid (1).png",
        "Covid (9).png",
        "Covid (10).png",
        "Covid (100).png",
    ]


def test_merge_joins_groups_of_either_partition() -> None:
    a = np.array([0, 0, 1, 2, 3, 3])
    b = np.array([5, 6, 6, 7, 8, 9])
    assert merge(a, b).tolist() == [0, 0, 0, 1, 2, 2]
    assert canonical(np.array([7, 3, 7, 1])).tolist() == [0, 1, 0, 2]


def test_inference_recovers_known_scans(tmp_path) -> None:
    scans = {"COVID": [7, 12, 3, 9, 5], "non-COVID": [4, 11, 8, 6]}
    truth = write_scans(tmp_path / "d", scans)
    images = load_image_folder(tmp_path / "d", CLASSES, 32)
    found = infer_groups(images.files, images.y, thumbnails(images.x), threshold=1.0)
    expected = [truth[str(f)] for f in images.files]
    assert adjusted_rand_score(expected, found) == 1.0
    assert len(np.unique(found)) == 9
    # a threshold above any distance merges every class folder into one group
    assert len(np.unique(infer_groups(images.files, images.y, thumbnails(images.x), 2.0))) == 2


def test_thumbnails_are_z_scored_and_constant_images_are_zero() -> None:
    x = np.random.default_rng(0).integers(0, 256, (3, 1, 64, 64), dtype=np.uint8)
    x[2] = 7
    t = thumbnails(x)
    assert t.shape == (3, 1024)
    np.testing.assert_allclose(t[:2].mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(t[:2].std(axis=1), 1, atol=1e-12)
    assert not t[2].any()


def _images(y: np.ndarray, files: list[str] | None = None) -> LabelledImages:
    n = len(y)
    return LabelledImages(
        x=np.zeros((n, 1, 4, 4), dtype=np.uint8),
        y=y,
        files=np.array(files or [f"f{i:05d}" for i in range(n)]),
        groups=np.arange(n, dtype=np.int64),
        classes=("non-COVID", "COVID"),
    )


@st.composite
def layouts(draw):
    """Per class, 3-40 groups of 1-15 images; a seed and fractions."""
    sizes = [draw(st.lists(st.integers(1, 15), min_size=3, max_size=40)) for _ in range(2)]
    return (
        sizes,
        draw(st.integers(0, 2**32 - 1)),
        draw(st.floats(0.05, 0.4)),
        draw(st.sampled_from([0.0, 0.1, 0.25])),
    )


@settings(max_examples=150, deadline=None)
@given(layouts())
def test_grouped_split_never_shares_a_group_and_stays_stratified(layout) -> None:
    sizes, seed, test_fraction, val_fraction = layout
    y = np.concatenate([np.full(sum(s), c, dtype=np.int64) for c, s in enumerate(sizes)])
    groups = np.repeat(np.arange(sum(map(len, sizes))), np.concatenate(sizes))
    images = _images(y)
    try:
        idx = data.split_indices(y, groups, images.classes, seed, test_fraction, val_fraction)
    except PipelineError as exc:  # only when the dealing leaves a side empty, and then named
        assert "too few to split" in str(exc)
        return
    side = {}
    for name, i in idx.items():
        for g in np.unique(groups[i]):
            assert side.setdefault(int(g), name) == name, f"group {g} in {side[g]} and {name}"
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(len(y)))
    # class balance: each class's test (val) count reaches its share and overshoots by less than
    # one group, so every class keeps its proportion within one group's size
    for c, s in enumerate(sizes):
        n, biggest = sum(s), max(s)
        n_test = max(1, int(np.floor(test_fraction * n + 0.5)))
        got = int((y[idx["test"]] == c).sum())
        assert n_test <= got < n_test + biggest
        if val_fraction > 0:
            n_val = max(1, int(np.floor(val_fraction * (n - n_test) + 0.5)))
            assert n_val <= int((y[idx["val"]] == c).sum()) < n_val + biggest


def test_too_few_groups_of_a_class_says_how_many() -> None:
    y = np.repeat([0, 1], [30, 30])
    groups = np.concatenate([np.arange(30), np.repeat([100, 101], 15)])
    with pytest.raises(PipelineError, match=r"class 'COVID' has only 30 images in 2 group\(s\)"):
        data.split_indices(y, groups, ("non-COVID", "COVID"), 0, 0.2, 0.1)
    with pytest.raises(PipelineError, match="need at least 3 groups"):
        data.split_indices(y, groups, ("non-COVID", "COVID"), 0, 0.2, 0.1)


def test_probe_sees_the_leak_of_a_random_split(tmp_path) -> None:
    truth = write_scans(tmp_path / "d", {"COVID": [12] * 8, "non-COVID": [12] * 8}, seed=3)
    images = load_image_folder(tmp_path / "d", CLASSES, 32)
    groups = scan_groups(images, "auto", 1.0, tmp_path / "d")
    assert adjusted_rand_score([truth[str(f)] for f in images.files], groups) == 1.0
    random = data.split_images(images, 0, 0.25, 0.0)
    grouped = data.split_images(images, 0, 0.25, 0.0, groups=groups)
    thumbs = thumbnails(images.x)
    leak_r, leak_g = (probe(images, thumbs, groups, s) for s in (random, grouped))
    assert leak_r.groups == leak_g.groups == 16 and leak_r.group_size_median == 12
    assert leak_g.groups_shared == 0 and leak_r.groups_shared >= 8
    # neighbouring slices are near-copies: a lookup is right under random, a coin under grouped
    assert leak_r.nn_accuracy == 1.0 and leak_g.nn_accuracy < 1.0
    assert leak_r.nn_distance["distance"].median() < leak_g.nn_distance["distance"].median()
    assert list(leak_r.nn_distance.columns) == ["rank", "file", "class", "distance"]
    assert leak_r.nn_distance["distance"].is_monotonic_increasing


def test_inference_recovers_the_generators_scans_from_a_folder(tmp_path) -> None:
    """Synthetic scans written in the Kaggle layout, numbered in slice order: inference, which
    knows nothing of the generator, finds its scans. Slices of different synthetic scans are more
    alike than real CT slices of different patients (one generator draws them all), so the
    threshold is lower than the real data's 1.0."""
    from advdenoise.data.synthetic import generate

    images = generate({"non-COVID": 70, "COVID": 70}, tuple(CLASSES), 64, 0, slices=(8, 24))
    truth = {}
    for k, (x, label, scan) in enumerate(zip(images.x, images.y, images.scans, strict=True)):
        cls = images.classes[label]
        file = f"{cls}/{PREFIX[cls]} ({k + 1}).png"
        (tmp_path / cls).mkdir(exist_ok=True)
        Image.fromarray(x[0]).save(tmp_path / file)
        truth[file] = int(scan)
    loaded = load_image_folder(tmp_path, CLASSES, 64)
    found = infer_groups(loaded.files, loaded.y, thumbnails(loaded.x), threshold=0.4)
    assert adjusted_rand_score([truth[str(f)] for f in loaded.files], found) >= 0.9
