"""The prepare stage end to end: outputs, determinism, and a clean failure (exit 2, nothing written)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import write_params
from PIL import Image

from advdenoise.core.params import read_yaml
from advdenoise.data.splits import SPLITS, Split, Splits, load_splits, mean_intensity_baseline

ROOT = Path(__file__).parents[1]
REAL_DATA = (ROOT / "../shared/datasets/sarscov2-ct").resolve()


def _stage():
    spec = importlib.util.spec_from_file_location("prepare_stage", ROOT / "stages" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare = _stage()


def _params(tmp_path: Path, data_lines: str) -> Path:
    """The project's params with the `data:` lines given (YAML) in place of its own."""
    return write_params(tmp_path / "params.yaml", read_yaml(f"data:\n{data_lines}"))


TINY = (
    "  image_size: 32\n  synthetic_counts: {non-COVID: 20, COVID: 24}\n  synthetic_slices: [1, 1]\n"
)


def _run(tmp_path: Path, params: Path, out: str = "out") -> tuple[int, dict[str, Path]]:
    o = tmp_path / out
    paths = {
        "out": o / "data" / "prepare",
        "metrics": o / "metrics" / "prepare.json",
        "plots": o / "plots" / "prepare",
    }
    argv = ["--params", str(params), "--data-root", str(tmp_path / "raw")]
    argv += [x for key, p in paths.items() for x in (f"--{key}", str(p))]
    return prepare.main(argv), paths


def _written(paths: dict[str, Path]) -> list[Path]:
    return [p for p in paths.values() if p.exists()]


def test_synthetic_end_to_end(tmp_path: Path) -> None:
    code, paths = _run(tmp_path, _params(tmp_path, TINY))
    assert code == 0
    splits = load_splits(paths["out"])
    assert splits.classes == ("non-COVID", "COVID") and splits.image_size == 32
    metrics = json.loads(paths["metrics"].read_text())
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    assert metrics["all.COVID"] == 24 and metrics["all.non-COVID"] == 20
    assert metrics["all.total"] == sum(metrics[f"{s}.total"] for s in SPLITS) == 44
    assert metrics["test.COVID"] == 5 and metrics["test.non-COVID"] == 4
    assert metrics["duplicate_groups"] == 0 and metrics["skipped_files"] == 0
    assert metrics["image_size"] == 32
    assert metrics["baseline.mean_intensity_accuracy"] == round(mean_intensity_baseline(splits), 6)
    for s in SPLITS:
        assert len(getattr(splits, s).y) == metrics[f"{s}.total"]
    counts = pd.read_csv(paths["plots"] / "counts.csv")
    assert list(counts.columns) == ["split", "class", "count"] and counts["count"].sum() == 44
    with Image.open(paths["plots"] / "samples.png") as im:
        assert im.format == "PNG" and im.size[0] > 300


def test_two_runs_are_byte_identical(tmp_path: Path) -> None:
    params = _params(tmp_path, TINY)
    _, a = _run(tmp_path, params, "a")
    _, b = _run(tmp_path, params, "b")
    for pa, pb in [
        (a["out"] / "splits.npz", b["out"] / "splits.npz"),
        (a["metrics"], b["metrics"]),
        (a["plots"] / "counts.csv", b["plots"] / "counts.csv"),
        (a["plots"] / "samples.png", b["plots"] / "samples.png"),
    ]:
        assert pa.read_bytes() == pb.read_bytes(), pa.name


def _folder(root: Path, bad: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for cls, n in (("COVID", 12), ("non-COVID", 10)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / cls / f"{cls} ({i}).png")
    (root / "COVID" / "copy.png").write_bytes((root / "COVID" / "COVID (3).png").read_bytes())
    if bad:
        (root / "non-COVID" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    return root


def test_real_folder_with_skipped_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = _folder(tmp_path / "dataset", bad=True)
    params = _params(tmp_path, f"  source: '{source}'\n  image_size: 32\n  skip_bad_files: true\n")
    code, paths = _run(tmp_path, params)
    assert code == 0
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["all.COVID"] == 13 and metrics["all.non-COVID"] == 10
    assert metrics["duplicate_groups"] == 1 and metrics["skipped_files"] == 1
    err = capsys.readouterr().err
    assert "non-COVID/broken.png" in err and "DVC will not notice" in err
    splits = load_splits(paths["out"])
    where = [
        s
        for s in SPLITS
        for f in getattr(splits, s).files
        if f in ("COVID/copy.png", "COVID/COVID (3).png")
    ]
    assert len(where) == 2 and where[0] == where[1]


@pytest.mark.parametrize(
    ("data_lines", "make", "message"),
    [
        ("  source: '{root}/missing'\n", None, "missing' does not exist"),
        ("  source: '{root}/dataset'\n", "one_class", "only one class present"),
        ("  source: '{root}/dataset'\n", "bad", "1 bad image file(s)"),
        ("  source: '{root}/dataset/COVID/COVID (0).png'\n", "good", "is a file"),
        ("  sources: synthetic\n", None, "unknown key 'data.sources'"),
        ("  image_size: 30\n", None, "data.image_size"),
    ],
)
def test_errors_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, data_lines: str, make: str | None, message: str
) -> None:
    if make:
        _folder(tmp_path / "dataset", bad=make == "bad")
    if make == "one_class":
        for f in (tmp_path / "dataset" / "non-COVID").iterdir():
            f.unlink()
        (tmp_path / "dataset" / "non-COVID").rmdir()
    code, paths = _run(tmp_path, _params(tmp_path, data_lines.format(root=tmp_path)))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert _written(paths) == []


def test_a_failing_run_leaves_previous_outputs_intact(tmp_path: Path) -> None:
    code, paths = _run(tmp_path, _params(tmp_path, TINY))
    assert code == 0
    before = {p: p.read_bytes() for p in paths["out"].parent.parent.rglob("*") if p.is_file()}
    code, _ = _run(tmp_path, _params(tmp_path, "  source: /nonexistent/dir\n"))
    assert code == 2
    after = {p: p.read_bytes() for p in paths["out"].parent.parent.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"{REAL_DATA} not present")
def test_real_dataset(tmp_path: Path) -> None:
    params = _params(tmp_path, f"  source: '{REAL_DATA}'\n  image_size: 64\n")
    code, paths = _run(tmp_path, params)
    assert code == 0
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["all.COVID"] == 1252 and metrics["all.non-COVID"] == 1229
    assert metrics["duplicate_groups"] == 2 and metrics["skipped_files"] == 0
    splits = load_splits(paths["out"])
    split_of_digest: dict[str, str] = {}
    for s in SPLITS:
        for f in getattr(splits, s).files:
            digest = hashlib.sha256((REAL_DATA / f).read_bytes()).hexdigest()
            assert split_of_digest.setdefault(digest, s) == s, f"{f} crosses splits"
    assert len(split_of_digest) == 1252 + 1229 - 2


def test_another_dataset_by_params_alone_with_nested_images_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Other class-folder names: data.source and data.classes suffice (synthetic_counts unused)."""
    root = tmp_path / "other"
    rng = np.random.default_rng(1)
    for cls in ("normal", "pneumonia"):
        (root / cls / "extra").mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (36, 36), dtype=np.uint8)).save(
                root / cls / f"{i}.png"
            )
        Image.fromarray(rng.integers(0, 256, (36, 36), dtype=np.uint8)).save(
            root / cls / "extra" / "x.png"
        )
    lines = f"  source: '{root}'\n  image_size: 32\n  classes: {{normal: 0, pneumonia: 1}}\n"
    code, paths = _run(tmp_path, _params(tmp_path, lines))
    assert code == 0
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["all.normal"] == 10 and metrics["all.pneumonia"] == 10
    assert "2 image(s) in sub-folders" in capsys.readouterr().err


def test_max_pixels_governs_above_pillows_own_limit(tmp_path: Path) -> None:
    from advdenoise.data.folders import BadImageError, decode_image

    with Image.open(_folder(tmp_path / "d") / "COVID" / "COVID (0).png") as im:
        data = (tmp_path / "d" / "COVID" / "COVID (0).png").read_bytes()
        pixels = im.size[0] * im.size[1]
    assert decode_image(data, 16, max_pixels=pixels).shape == (16, 16)
    with pytest.raises(BadImageError, match="data.max_pixels"):
        decode_image(data, 16, max_pixels=pixels - 1)
    Image.MAX_IMAGE_PIXELS = 10  # a lower Pillow limit left by anyone must not refuse the image
    assert decode_image(data, 16, max_pixels=400_000_000).shape == (16, 16)


def _groups_csv(root: Path, rows: list[str]) -> Path:
    path = root / "groups.csv"
    path.write_text("file,group\n" + "".join(f"{r}\n" for r in rows))
    return path


def _scan_rows(root: Path) -> list[str]:
    """Every image of `_folder` in a group of three consecutive files of its class."""
    return [
        f"{cls}/{f.name},{cls}-{i // 3}"
        for cls in ("COVID", "non-COVID")
        for i, f in enumerate(sorted((root / cls).iterdir()))
    ]


@pytest.mark.parametrize("where", ["auto", "path"])
def test_grouped_split_from_a_groups_csv(tmp_path: Path, where: str) -> None:
    source = _folder(tmp_path / "dataset")
    rows = _scan_rows(source)
    csv = _groups_csv(source if where == "auto" else tmp_path, rows)
    groups = "auto" if where == "auto" else f"'{csv}'"
    lines = f"  source: '{source}'\n  image_size: 32\n  split: grouped\n  groups: {groups}\n"
    code, paths = _run(tmp_path, _params(tmp_path, lines))
    assert code == 0
    metrics = json.loads(paths["metrics"].read_text())
    # 13 COVID images in 5 groups, 10 non-COVID in 4; copy.png's group and its twin's merge
    assert metrics["leakage.groups"] == 8 and metrics["leakage.groups_shared"] == 0
    group = dict(r.split(",") for r in rows)
    splits = load_splits(paths["out"])
    side = {group[f]: s for s in SPLITS for f in getattr(splits, s).files}
    assert len(side) == 9
    for s in SPLITS:
        assert all(side[group[f]] == s for f in getattr(splits, s).files)
    table = pd.read_csv(paths["plots"] / "nn_distance.csv")
    assert len(table) == metrics["test.total"] and table["distance"].is_monotonic_increasing
    assert (paths["plots"] / "nn_distance.png").is_file()


def _bad_csv(root: Path, case: str) -> None:
    rows = _scan_rows(root)
    if case == "missing_file":
        rows.insert(2, "COVID/nope.png,x")
    elif case == "no_row":
        rows = [r for r in rows if not r.startswith("non-COVID/non-COVID (4).png")]
    elif case == "two_classes":
        rows = [r.replace("non-COVID-0", "COVID-0") for r in rows]
    elif case == "malformed":
        rows[2] = "COVID/COVID (1).png"
    elif case == "few_groups":
        rows = [r.rsplit(",", 1)[0] + ("," + r.split("/")[0]) for r in rows]
    _groups_csv(root, rows)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_file", "line 4: 'COVID/nope.png'"),
        ("no_row", "has no row for 1 image(s): 'non-COVID/non-COVID (4).png'"),
        (
            "two_classes",
            "group 'COVID-0' holds two classes: 'non-COVID/non-COVID (0).png' (non-COVID), "
            "'COVID/COVID (0).png' (COVID)",
        ),
        ("malformed", "groups.csv line 4: expected 'file,group'"),
        ("few_groups", "class 'non-COVID' has only 10 images in 1 group(s): too few to split"),
    ],
)
def test_bad_groups_exit_2_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, case: str, message: str
) -> None:
    source = _folder(tmp_path / "dataset")
    _bad_csv(source, case)
    lines = f"  source: '{source}'\n  image_size: 32\n  split: grouped\n"
    code, paths = _run(tmp_path, _params(tmp_path, lines))
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert _written(paths) == []


def test_a_groups_csv_with_synthetic_images_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, paths = _run(tmp_path, _params(tmp_path, TINY + "  groups: ids.csv\n"))
    err = capsys.readouterr().err
    assert code == 2 and "data.groups must be 'auto' when data.source is synthetic" in err
    assert _written(paths) == []


# The paper's protocol on the embedded data, as it was before synthetic scans and the grouped
# default: images drawn one by one, the slice-level split. Its splits.npz must not change.
PAPER_SPLIT = "  synthetic_slices: [1, 1]\n  split: random\n"
PAPER_SPLIT_HASH = "4c5d695a8ccd8c1456379f78004e8b4d.dir"  # named random streams


def _committed_prepare_hash() -> str:
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]["prepare"]
    return {o["path"]: o["md5"] for o in lock["outs"]}["data/prepare"]


@pytest.mark.parametrize(
    ("data_lines", "expected"),
    [("", _committed_prepare_hash()), (PAPER_SPLIT, PAPER_SPLIT_HASH)],
    ids=["default", "paper"],
)
def test_prepare_writes_the_pinned_splits(tmp_path: Path, data_lines: str, expected: str) -> None:
    """The default's splits are the committed dvc.lock's data/prepare (DVC: md5 of the JSON listing
    of the folder's files); the paper's protocol on images drawn one by one still gives its own."""
    params = _params(tmp_path, data_lines) if data_lines else ROOT / "params.yaml"
    code, paths = _run(tmp_path, params)
    assert code == 0
    npz = hashlib.md5((paths["out"] / "splits.npz").read_bytes()).hexdigest()
    listing = json.dumps([{"md5": npz, "relpath": "splits.npz"}], sort_keys=True)
    assert hashlib.md5(listing.encode()).hexdigest() + ".dir" == expected
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["leakage.groups_shared"] == 0  # grouped: no scan on both sides; [1, 1]: no scans
    one_per_image = metrics["leakage.groups"] == metrics["all.total"]
    assert one_per_image == (data_lines == PAPER_SPLIT)


def test_synthetic_scans_are_the_groups_and_the_random_split_leaks(tmp_path: Path) -> None:
    scans = "  image_size: 32\n  synthetic_counts: {non-COVID: 60, COVID: 60}\n"
    scans += "  synthetic_slices: [6, 10]\n"
    found = {}
    for split in ("random", "grouped"):
        code, paths = _run(tmp_path, _params(tmp_path, scans + f"  split: {split}\n"), split)
        assert code == 0
        found[split] = json.loads(paths["metrics"].read_text())
    random, grouped = found["random"], found["grouped"]
    assert 12 <= random["leakage.groups"] == grouped["leakage.groups"] <= 20
    assert grouped["leakage.groups_shared"] == 0 < random["leakage.groups_shared"]
    assert random["leakage.nn_accuracy"] > grouped["leakage.nn_accuracy"]
    # each run probes both splits: the other split's figures are those of a run with it
    for key in ("nn_accuracy", "groups_shared"):
        for run in (random, grouped):
            assert run[f"leakage.random.{key}"] == random[f"leakage.{key}"]
            assert run[f"leakage.grouped.{key}"] == grouped[f"leakage.{key}"]


def test_a_grouped_split_that_cannot_be_made_leaves_a_random_run_alone(tmp_path: Path) -> None:
    source = _folder(tmp_path / "dataset")
    _bad_csv(source, "few_groups")  # one group per class: no grouped split
    data = f"  source: '{source}'\n  image_size: 32\n  split: random\n"
    code, paths = _run(tmp_path, _params(tmp_path, data))
    assert code == 0
    metrics = json.loads(paths["metrics"].read_text())
    assert "leakage.random.nn_accuracy" in metrics and "leakage.grouped.nn_accuracy" not in metrics


@pytest.mark.parametrize("slices", ["[0, 4]", "[5, 4]", "[8]", "[1, 65]"])
def test_bad_synthetic_slices_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture, slices: str
) -> None:
    code, paths = _run(tmp_path, _params(tmp_path, TINY + f"  synthetic_slices: {slices}\n"))
    assert code == 2 and "data.synthetic_slices must be [min, max]" in capsys.readouterr().err
    assert _written(paths) == []


def test_the_mean_intensity_baseline_finds_a_brightness_shortcut() -> None:
    """Classes that differ in brightness alone: the baseline scores 100% on a test set that keeps
    the shortcut and 0% on one whose labels are swapped (a shortcut, not the class, is learnt)."""
    rng = np.random.default_rng(0)

    def split(n: int, swap: bool = False) -> Split:
        y = np.arange(n) % 2
        level = np.where(y == 1, 150, 90) + rng.integers(-20, 20, n)
        x = np.broadcast_to(level[:, None, None, None], (n, 1, 4, 4)).astype(np.uint8)
        return Split(x, 1 - y if swap else y, np.array([f"i{k}" for k in range(n)]))

    classes = ("non-COVID", "COVID")
    assert mean_intensity_baseline(Splits(split(40), split(4), split(20), classes)) == 1.0
    assert mean_intensity_baseline(Splits(split(40), split(4), split(20, True), classes)) == 0.0
