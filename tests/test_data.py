"""Reading Kaggle-layout folders (every mode, every kind of bad file) and the group-aware splitter."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from advdenoise.core.errors import PipelineError
from advdenoise.data import splits as data
from advdenoise.data.folders import BadImageError, decode_image, load_image_folder
from advdenoise.data.splits import LabelledImages

CLASSES = {"non-COVID": 0, "COVID": 1}


# --------------------------------------------------------------------------- file makers


def _save(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def _grey(value: int, size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("L", size, value)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose pixel data is a few bytes (a bomb)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _sixteen_bit(value: int) -> Image.Image:
    im = Image.fromarray(np.full((30, 40), value, dtype=np.uint16))
    assert im.mode.startswith("I;16")
    return im


def _noise() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8))


def _palette(grey: int) -> Image.Image:
    im = Image.new("P", (40, 30), 0)
    im.putpalette([grey, grey, grey] + [0, 0, 0] * 255)
    return im


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for name, payload in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
    return root


def _good_dataset(root: Path) -> Path:
    """Both classes, every supported mode and format, odd names, a duplicate pair, clutter."""
    dup = _save(_grey(77))
    return _write(
        root,
        {
            "COVID/Covid (1).png": _save(Image.new("RGB", (50, 40), (10, 200, 30))),
            "COVID/Covid (2).png": _save(Image.new("RGBA", (40, 40), (100, 150, 200, 0))),
            "COVID/é ü.png": _save(_grey(60)),
            "COVID/sixteen.png": _save(_sixteen_bit(32768)),
            "COVID/palette.png": _save(_palette(200)),
            "COVID/cmyk.jpg": _save(Image.new("CMYK", (40, 40), (0, 0, 0, 128)), "JPEG"),
            "COVID/la.png": _save(Image.new("LA", (40, 40), (90, 255))),
            "COVID/PHOTO.JPG": _save(_grey(120), "JPEG"),
            "COVID/dup a.png": dup,
            "COVID/dup b.png": dup,
            "COVID/notes.txt": b"not an image, ignored",
            "COVID/.hidden.png": b"hidden files are skipped",
            "COVID/sub/inner.png": _save(_grey(5)),  # sub-folders are not read
            "non-COVID/Non-Covid (1).png": _save(_grey(30)),
            "non-COVID/scan.bmp": _save(_grey(40), "BMP"),
            "non-COVID/scan.tiff": _save(_grey(50), "TIFF"),
            "non-COVID/scan.TIF": _save(_grey(55), "TIFF"),
            "non-COVID/scan.jpeg": _save(_grey(65), "JPEG"),
            "other/extra.png": _save(_grey(1)),  # not a class folder
        },
    )


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("image", "fmt", "expected"),
    [
        (_grey(60), "PNG", 60),
        (Image.new("RGB", (50, 40), (10, 200, 30)), "PNG", 126),  # ITU-R 601 luma
        (Image.new("RGBA", (40, 40), (100, 150, 200, 0)), "PNG", 141),  # alpha dropped
        (Image.new("LA", (40, 40), (90, 0)), "PNG", 90),
        (_palette(200), "PNG", 200),
        (_sixteen_bit(32768), "PNG", 128),
        (_sixteen_bit(1000), "PNG", 4),  # scaled by bit depth, not stretched to its maximum
        (Image.new("CMYK", (40, 40), (0, 0, 0, 128)), "JPEG", 127),
        (_grey(50), "TIFF", 50),
        (_grey(40), "BMP", 40),
        (Image.new("1", (40, 40), 1), "PNG", 255),
    ],
)
def test_every_mode_becomes_one_grey_channel(image: Image.Image, fmt: str, expected: int) -> None:
    out = decode_image(_save(image, fmt), image_size=32, min_side=16)
    assert out.shape == (32, 32) and out.dtype == np.uint8
    assert abs(int(np.median(out)) - expected) <= 2


def test_resize_stretches_to_a_square_and_keeps_content() -> None:
    a = np.zeros((40, 80), dtype=np.uint8)
    a[:, 40:] = 255  # left half black, right half white
    out = decode_image(_save(Image.fromarray(a)), image_size=32)
    assert out.shape == (32, 32)
    assert out[:, :14].max() < 10 and out[:, 18:].min() > 245


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty file"),
        (b"this is text, not a PNG\n", "not an image"),
        (_save(_grey(3))[:60], "cannot decode|not an image"),  # truncated in the header
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not an image"),  # corrupt after signature
        (_save(_noise())[:-300], "cannot decode"),  # cut in the pixel data
        (_save(_grey(3, (8, 40))), "smaller than data.min_side"),
        (_png_header_only(10_000, 10_000), "exceeds data.max_pixels"),
        (
            _png_header_only(20_000, 20_000),
            "exceeds data.max_pixels",
        ),  # our limit governs, not Pillow's
    ],
)
def test_bad_files_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(BadImageError, match=reason):
        decode_image(payload, image_size=32, min_side=16, max_pixels=40_000_000)


def test_pixel_limit_is_checked_before_decoding() -> None:
    # The header-only file has no valid pixel data: refusing it by size proves nothing was decoded.
    with pytest.raises(BadImageError, match="refused before decoding"):
        decode_image(_png_header_only(1000, 1000), image_size=32, max_pixels=999_999)
    assert decode_image(_save(_grey(9, (100, 100))), image_size=32, max_pixels=10_000).max() == 9


# --------------------------------------------------------------------------- folders


def test_loads_a_mixed_folder(tmp_path: Path) -> None:
    images = load_image_folder(_good_dataset(tmp_path), CLASSES, image_size=32, min_side=16)
    files = list(images.files)
    assert images.classes == ("non-COVID", "COVID")
    assert len(files) == 15 and images.x.shape == (15, 1, 32, 32)
    assert (images.y == 1).sum() == 10 and (images.y == 0).sum() == 5
    assert (
        "COVID/Covid (1).png" in files and "COVID/é ü.png" in files and "COVID/PHOTO.JPG" in files
    )
    assert files == sorted(files[:5]) + sorted(files[5:])  # non-COVID then COVID, each sorted
    assert images.duplicate_groups == 1
    a, b = files.index("COVID/dup a.png"), files.index("COVID/dup b.png")
    assert images.groups[a] == images.groups[b]
    assert len(set(images.groups)) == 14
    assert images.ignored_folders == ("other",)
    assert images.ignored_files == 2  # notes.txt and the sub-folder; the hidden file is silent
    assert images.skipped == ()


def test_file_ids_are_unicode_nfc(tmp_path: Path) -> None:
    _write(tmp_path, {"COVID/cafe\u0301.png": _save(_grey(9)), "non-COVID/a.png": _save(_grey(8))})
    images = load_image_folder(tmp_path, CLASSES, image_size=16)
    assert "COVID/caf\u00e9.png" in list(images.files)


def _with_bad_files(root: Path) -> Path:
    _good_dataset(root)
    return _write(
        root,
        {
            "COVID/zero.png": b"",
            "COVID/text.png": b"hello",
            "COVID/truncated.png": _save(_noise())[:-300],
            "COVID/tiny.png": _save(_grey(3, (4, 4))),
            "non-COVID/bomb.png": _png_header_only(10_000, 10_000),
            "non-COVID/corrupt.jpg": b"\xff\xd8\xff" + b"\x00" * 50,
        },
    )


def test_all_bad_files_are_listed_in_one_error(tmp_path: Path) -> None:
    with pytest.raises(PipelineError) as err:
        load_image_folder(_with_bad_files(tmp_path), CLASSES, image_size=32, min_side=16)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("6 bad image file(s)")
    assert "data.skip_bad_files" in msg and "... and 1 more" in msg
    for name in ("non-COVID/bomb.png", "non-COVID/corrupt.jpg", "COVID/text.png", "COVID/tiny.png"):
        assert name in msg


def test_bad_files_can_be_skipped_and_are_counted(tmp_path: Path) -> None:
    images = load_image_folder(
        _with_bad_files(tmp_path), CLASSES, image_size=32, min_side=16, skip_bad_files=True
    )
    assert len(images.skipped) == 6 and len(images.files) == 15
    assert any(s.startswith("COVID/zero.png (empty file") for s in images.skipped)


def test_threads_change_nothing_but_speed(tmp_path: Path) -> None:
    root = _with_bad_files(tmp_path)
    one = load_image_folder(root, CLASSES, image_size=32, min_side=16, skip_bad_files=True)
    four = load_image_folder(
        root, CLASSES, image_size=32, min_side=16, skip_bad_files=True, workers=4
    )
    assert np.array_equal(one.x, four.x) and np.array_equal(one.groups, four.groups)
    assert list(one.files) == list(four.files) and one.skipped == four.skipped


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        ({}, "does not exist"),
        ({"COVID/a.png": b"x"}, "only one class present"),
        ({"covid/a.png": b"x", "noncovid/b.png": b"x"}, "class folder .*non-COVID.* is missing"),
        ({"COVID/a.txt": b"x", "non-COVID/b.png": b"x"}, "class folder .*COVID.* is empty"),
    ],
)
def test_folder_problems_name_the_path(
    tmp_path: Path, layout: dict[str, bytes], match: str
) -> None:
    root = tmp_path / "dataset"
    if layout:
        _write(root, layout)
    with pytest.raises(PipelineError, match=match):
        load_image_folder(root, CLASSES, image_size=32)


def test_root_that_is_a_file_and_empty_class_folder(tmp_path: Path) -> None:
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(PipelineError, match="is a file"):
        load_image_folder(tmp_path / "file.png", CLASSES, image_size=32)
    (tmp_path / "d" / "COVID").mkdir(parents=True)
    _write(tmp_path / "d", {"non-COVID/a.png": _save(_grey(1))})
    with pytest.raises(PipelineError, match="COVID' is empty"):
        load_image_folder(tmp_path / "d", CLASSES, image_size=32)


def test_class_with_only_bad_files_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    _write(tmp_path, {"COVID/a.png": b"junk", "non-COVID/b.png": _save(_grey(1))})
    with pytest.raises(PipelineError, match="no readable images"):
        load_image_folder(tmp_path, CLASSES, image_size=32, skip_bad_files=True)


def test_identical_files_in_two_classes_are_an_error(tmp_path: Path) -> None:
    same = _save(_grey(11))
    _write(tmp_path, {"COVID/a.png": same, "non-COVID/b.png": same})
    with pytest.raises(PipelineError, match="contradictory labels.*non-COVID/b.png = COVID/a.png"):
        load_image_folder(tmp_path, CLASSES, image_size=32)


# --------------------------------------------------------------------------- splitting


def _labelled(n0: int, n1: int, groups: np.ndarray | None = None) -> LabelledImages:
    n = n0 + n1
    y = np.repeat(np.array([0, 1], dtype=np.int64), [n0, n1])
    return LabelledImages(
        x=np.zeros((n, 1, 4, 4), dtype=np.uint8),
        y=y,
        files=np.array([f"f{i:04d}" for i in range(n)]),
        groups=np.arange(n, dtype=np.int64) if groups is None else groups,
        classes=("non-COVID", "COVID"),
    )


def test_split_is_stratified_with_the_requested_fractions() -> None:
    splits = data.split_images(_labelled(500, 300), seed=0, test_fraction=0.2, val_fraction=0.1)
    c = data.split_counts(splits)
    assert (c["test.non-COVID"], c["test.COVID"]) == (100, 60)
    assert (c["val.non-COVID"], c["val.COVID"]) == (40, 24)
    assert (c["train.non-COVID"], c["train.COVID"]) == (360, 216)
    assert c["all.total"] == 800
    every = np.concatenate([splits.train.files, splits.val.files, splits.test.files])
    assert len(set(every)) == 800  # a partition
    assert 0 < splits.test.y[:20].sum() < 20  # classes mixed within a split


def test_split_is_deterministic_and_seeded() -> None:
    images = _labelled(60, 40)
    a = data.split_images(images, seed=1, test_fraction=0.2, val_fraction=0.1)
    b = data.split_images(images, seed=1, test_fraction=0.2, val_fraction=0.1)
    c = data.split_images(images, seed=2, test_fraction=0.2, val_fraction=0.1)
    assert list(a.test.files) == list(b.test.files) and list(a.train.files) == list(b.train.files)
    assert set(a.test.files) != set(c.test.files)


def test_duplicate_groups_never_cross_splits() -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 4, 300)  # groups of 1-3 identical files, each inside one class
    groups = np.repeat(np.arange(300), sizes)
    n = len(groups)
    n0 = int(np.repeat(np.arange(300) < 160, sizes).sum())
    images = _labelled(n0, n - n0, groups)
    for seed in range(3):
        splits = data.split_images(images, seed=seed, test_fraction=0.2, val_fraction=0.1)
        where = {}
        for name in data.SPLITS:
            for f in getattr(splits, name).files:
                g = int(images.groups[int(f[1:])])
                assert where.setdefault(g, name) == name
        test_share = len(splits.test.y) / n
        assert abs(test_share - 0.2) < 0.02


def test_no_validation_split_when_its_fraction_is_zero() -> None:
    splits = data.split_images(_labelled(30, 30), seed=0, test_fraction=0.2, val_fraction=0.0)
    assert len(splits.val.y) == 0 and len(splits.test.y) == 12


def test_too_few_images_to_split_is_an_error() -> None:
    with pytest.raises(PipelineError, match="class 'COVID' has only 2 images"):
        data.split_images(_labelled(20, 2), seed=0, test_fraction=0.2, val_fraction=0.1)


def test_shared_tiny_splits_fixture(tiny_splits_dir: Path) -> None:
    splits = data.load_splits(tiny_splits_dir)
    assert [len(getattr(splits, s).y) for s in data.SPLITS] == [60, 16, 24]
    assert splits.image_size == 32 and splits.classes == ("non-COVID", "COVID")
    for s in data.SPLITS:
        assert set(getattr(splits, s).y.tolist()) == {0, 1}
