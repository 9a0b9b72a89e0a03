"""Embedded default data: seeded CT-like axial lung slices, "non-COVID" (clean) and "COVID" (lesions).

Why: the pipeline must run end to end on a fresh clone with no dataset. The generator mimics what the
SARS-CoV-2 CT-scan dataset looks like (axial chest slices cropped to the thorax, lung window) closely
enough that a classifier has to look at lung texture, not at global statistics.

What each image models (Hounsfield-like units, rendered straight at the target size in normalised
coordinates [-1, 1], so every `image_size` shows the same anatomy, only sharper):

- Patient pose: small rotation, shift and scale of the whole slice.
- Body: an ellipse of soft tissue (+40 HU) with a subcutaneous fat rim (-100 HU) in air (-1000 HU);
  a vertebral body with its spinal canal, and rib cross-sections along the chest wall (bone).
- Lungs: two dark fields (about -880 HU) whose size, position, tilt and outline (low-order Fourier
  wobble of an ellipse) vary; the mediastinum flattens their medial borders and, on lower slices, the
  heart indents them. Trachea (upper slices) or main bronchi (lower slices) as air. A gravity-dependent
  gradient (posterior lung denser) and fine correlated parenchymal texture.
- Vessels: tapering, curved branches fanning out from each hilum, side branches, and vessel
  cross-sections (dots), splatted and blurred to sub-pixel width.
- Confounders in both classes with the same probability, so that "something bright in the lungs" is
  not the label: benign small nodules, a dependent posterior density band (atelectasis-like) and a
  per-slice shift of the overall lung density.
- "COVID" (label 1) only: ground-glass opacities -- diffuse, blurred, patchy, anisotropic blobs,
  peripheral- and posterior-leaning, 1 to 8 per slice, one or both lungs -- and in some slices a
  dense consolidation patch. Severity is drawn per slice and a fraction of slices is faint (contrast
  near the noise level), so the task is learnable but not trivially separable.
- Scanner: correlated quantum noise of varying strength, a point-spread blur and a random lung
  window (level/width). A slice with lesions is re-levelled by half of the brightness its lesions add
  to its mean, so that neither the mean intensity nor the soft-tissue brightness gives the class away
  (each alone gives a logistic regression about 55-60% on balanced classes; see tests).

Each slice with lesions has a lesion-free twin: lesions draw from their own random stream, so the
anatomy, noise and window of image i do not depend on its label (tests use this). Image i of label c
comes from its own generator seeded with (seed, SYNTHETIC_STREAM, c, i): it does not change when the
counts change. Rendering is vectorised over batches of images (float32).

Scans (`data.synthetic_slices` other than [1, 1]): the images of a class come in runs of slices of
one scan (`scan_layout`); a scan's anatomy and lesions are drawn from (seed, SCAN_STREAM, c, scan)
and move smoothly along its slices, while each slice keeps its own noise (`_blend_scan_slice`).

Difficulty is set by `Style` (see its fields); `DEFAULT_STYLE` aims at a small CNN reaching roughly
85-95% while global brightness statistics stay near chance. Raise `faint_fraction` or lower `ggo_hu`
to make the task harder.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from advdenoise.core.errors import PipelineError
from advdenoise.core.seeding import named_rng
from advdenoise.data.phantom import SIDES as _SIDES
from advdenoise.data.phantom import render
from advdenoise.data.splits import LabelledImages

SYNTHETIC_STREAM = "synthetic.slice"  # each slice's own draws
SCAN_STREAM = "synthetic.scan"  # the scans: their lengths and their shared anatomy
SCAN_DRIFT = 1.0  # how far a scan's slices move from its first anatomy towards a second draw
# Structure that one scan keeps on every slice (on/off masks, indices, flags); the other parameters
# move smoothly from slice to slice.
_SCAN_FIXED = frozenset(
    (
        "heart",
        "trachea",
        "rib_on",
        "v_on",
        "b_on",
        "b_parent",
        "d_on",
        "nod_side",
        "les_side",
        "cons_k",
    )
)
SYNTHETIC_PREFIX = "synthetic"


@dataclass(frozen=True)
class Style:
    """Knobs of the generator that set how hard the task is (HU = Hounsfield-like units)."""

    ggo_hu: tuple[float, float] = (230.0, 560.0)  # peak ground-glass contrast of a typical slice
    faint_fraction: float = 0.15  # fraction of COVID slices whose lesions are faint ...
    faint_hu: tuple[float, float] = (70.0, 200.0)  # ... with a contrast in this range
    lesion_count_mean: float = 2.5  # lesions per COVID slice = 1 + Poisson(mean), at most 8
    consolidation_prob: float = 0.25  # chance a COVID slice also has a dense consolidation patch
    nodule_prob: float = 0.35  # benign nodules, both classes
    dependent_density_prob: float = 0.35  # posterior atelectasis-like band, both classes
    noise_hu: tuple[float, float] = (14.0, 38.0)  # per-image noise standard deviation
    lesion_relevel: float = 0.5  # 0: lesions raise the mean; 1: mean of the lesion-free twin
    match_mean: bool = False  # shift each image to a class-independent mean intensity
    mean_target: tuple[float, float] = (0.62, 0.04)  # mean and sd of that target (in [0, 1])


DEFAULT_STYLE = Style()


def synthetic_id(class_name: str, index: int) -> str:
    """The file id of a synthetic image, e.g. "synthetic/COVID/000123"."""
    return f"{SYNTHETIC_PREFIX}/{class_name}/{index:06d}"


# --------------------------------------------------------------------------- rendering helpers
#
# Images are rendered in batches: every array has a leading batch axis B, per-image parameters are
# (B, 1, 1) columns, and a variable number of structures (vessels, ribs, lesions) is a fixed maximum
# with an on/off mask, so that one NumPy call draws a feature in every image of the batch.

_MAX_VESSELS, _MAX_BRANCHES, _MAX_DOTS, _MAX_RIBS, _MAX_LESIONS = 19, 11, 79, 5, 8
_BATCH_PIXELS = 262_144  # pixels per batch: small temporaries (large ones cost page faults)


def _draw(
    rng: np.random.Generator, lesions: bool, style: Style, noise: np.ndarray
) -> dict[str, np.ndarray]:
    """All random choices of one slice (fixed shapes); fills `noise` (4, S, S) with its noise fields.

    Filling a preallocated batch array avoids a fresh large allocation per image.
    """
    # Lesions and pixel noise draw from their own streams: a slice with and without lesions has
    # the same anatomy, noise and window (the label is the only difference), and the anatomy does
    # not depend on image_size.
    lesion_rng, noise_rng, patchy_rng = (np.random.default_rng(rng.integers(2**63)) for _ in "abc")
    u = rng.uniform
    nv, nb, nd, nr, nl = _MAX_VESSELS, _MAX_BRANCHES, _MAX_DOTS, _MAX_RIBS, _MAX_LESIONS
    p: dict[str, np.ndarray | float] = {}
    # Pose, body, spine.
    p["theta"], p["scale"] = np.deg2rad(u(-7, 7)), u(0.9, 1.08)
    p["shift_x"], p["shift_y"] = u(-0.05, 0.05), u(-0.05, 0.05)
    p["body_a"], p["body_b"], p["body_y"], p["fat"] = (
        u(1.1, 1.3),
        u(0.95, 1.1),
        u(0.02, 0.1),
        u(0.04, 0.1),
    )
    p["vert_y"], p["vert_r"] = p["body_y"] + p["body_b"] - u(0.22, 0.3), u(0.11, 0.15)
    # Lungs, mediastinum, heart.
    p["med"], p["lung_y"], lung_ry = u(0.09, 0.18), u(-0.06, 0.04), u(0.62, 0.76)
    p["lung_ry"] = lung_ry
    p["heart"] = float(rng.random() < 0.5)
    p["heart_x"], p["heart_y"] = u(0.05, 0.18), u(-0.55, -0.3)
    p["heart_a"], p["heart_b"] = u(0.25, 0.4), u(0.25, 0.4)
    p["cx"], p["cy"] = _SIDES * u(0.46, 0.54, 2), p["lung_y"] + u(-0.04, 0.04, 2)
    p["rx"], p["ry"] = u(0.33, 0.41, 2), lung_ry * u(0.92, 1.05, 2)
    p["tilt"] = _SIDES * np.deg2rad(u(-4, 12, 2))
    p["wobble_amp"], p["wobble_phase"] = u(0, 0.05, (2, 3)), u(0, 2 * np.pi, (2, 3))
    p["lung_hu"], p["gradient"], p["texture"] = -880.0 + u(-40, 50), u(0, 45), u(8, 18)
    # Airway: trachea on upper slices, main bronchi on lower ones.
    p["trachea"] = float(rng.random() < 0.6)
    p["tr"], p["tr_x"], p["tr_y"] = u(0.045, 0.07), u(-0.04, 0.04), u(-0.3, -0.1)
    p["br"], p["br_y"] = u(0.025, 0.04), u(-0.05, 0.1)
    # Ribs along the lateral and posterior chest wall.
    p["rib_on"] = (np.arange(nr) < rng.integers(3, nr + 1, 2)[:, None]).astype(float)
    p["rib_ang"], p["rib_r"] = u(-0.45 * np.pi, 0.55 * np.pi, (2, nr)), u(1.12, 1.22, (2, nr))
    p["rib_half"] = u(0.02, 0.04, (2, nr))
    # Vessels: branches fanning out from each hilum, side branches, cross-sections.
    n_v = rng.integers(12, nv + 1, 2)
    p["v_on"] = (np.arange(nv) < n_v[:, None]).astype(float)
    p["hilum_dx"] = u(0.05, 0.1, 2)
    p["hilum_y"] = u(-0.08, 0.1, 2)[:, None] + u(-0.12, 0.12, (2, nv))
    p["v_ang"], p["v_len"] = u(-0.5 * np.pi, 0.5 * np.pi, (2, nv)), u(0.3, 0.8, (2, nv))
    p["v_curve"], p["v_start"] = u(-0.8, 0.8, (2, nv)), u(0.05, 0.35, (2, nv))
    p["b_on"] = (np.arange(nb) < rng.integers(6, nb + 1, 2)[:, None]).astype(float)
    p["b_parent"] = np.floor(u(0, 1, (2, nb)) * n_v[:, None])
    p["b_at"] = u(0.25, 0.75, (2, nb))
    p["b_turn"] = rng.choice([-1.0, 1.0], (2, nb)) * u(0.4, 0.9, (2, nb))
    p["b_len"] = u(0.2, 0.45, (2, nb))
    p["d_on"] = (np.arange(nd) < rng.integers(40, nd + 1, 2)[:, None]).astype(float)
    p["d_r"], p["d_phi"], p["d_w"] = (
        np.sqrt(u(0, 1, (2, nd))),
        u(0, 2 * np.pi, (2, nd)),
        u(0.3, 1.0, (2, nd)),
    )
    # Confounders present in both classes.
    n_nod = rng.integers(1, 3)
    nod_on = (rng.random() < style.nodule_prob) * (np.arange(2) < n_nod)
    p["nod_amp"], p["nod_side"] = nod_on * u(450, 800, 2), rng.integers(0, 2, 2).astype(float)
    p["nod_r"], p["nod_phi"], p["nod_s"] = (
        np.sqrt(u(0.05, 0.8, 2)),
        u(0, 2 * np.pi, 2),
        u(0.012, 0.025, 2),
    )
    p["dep_amp"] = (rng.random() < style.dependent_density_prob) * u(60, 220)
    p["dep_y"], p["dep_w"] = u(0.55, 0.8), u(0.03, 0.07)
    # Scanner.
    p["noise_sd"], p["psf"] = u(*style.noise_hu), u(0.35, 0.7)
    p["level"], p["width"] = u(-560, -460), u(1300, 1500)
    p["mean_target"] = rng.normal(*style.mean_target)
    # COVID lesions: ground glass (+ consolidation), peripheral and posterior leaning.
    lr = lesion_rng
    faint = lr.random() < style.faint_fraction
    severity = lr.uniform(*(style.faint_hu if faint else style.ggo_hu))
    n_les = min(1 + lr.poisson(style.lesion_count_mean), nl)
    bilateral, first = lr.random() < 0.6, lr.integers(0, 2)
    side = np.where(bilateral, lr.integers(0, 2, nl), first)
    phi = lr.vonmises(np.pi / 2, 0.6, nl)  # posterior
    phi = np.where(side == 1, phi, np.pi - phi)  # toward the lateral wall of each lung
    phi = np.where(lr.random(nl) < 0.5, phi, lr.uniform(0, 2 * np.pi, nl))
    p["les_side"], p["les_phi"], p["les_r"] = side.astype(float), phi, lr.beta(3.0, 1.4, nl) * 0.9
    ls = lr.uniform(0.07, 0.2, nl)
    p["les_s"], p["les_sx"], p["les_sy"] = (
        ls,
        ls * lr.uniform(0.7, 1.4, nl),
        ls * lr.uniform(0.7, 1.4, nl),
    )
    p["les_ang"] = lr.uniform(0, np.pi, nl)
    p["les_amp"] = lesions * (np.arange(nl) < n_les) * severity * lr.uniform(0.6, 1.0, nl)
    cons = lesions and lr.random() < style.consolidation_prob
    p["cons_k"], p["cons_ang"] = float(lr.integers(0, n_les)), lr.uniform(0, np.pi)
    p["cons_amp"] = cons * lr.uniform(450, 750)
    # Pixel-noise fields: lung texture, scanner (correlated and white), lesion patchiness.
    for j in range(3):
        noise_rng.standard_normal(out=noise[j], dtype=np.float32)
    if lesions:
        patchy_rng.standard_normal(out=noise[3], dtype=np.float32)
    else:
        noise[3] = 0.0
    return {k: np.asarray(v, dtype=np.float64) for k, v in p.items()}


# --------------------------------------------------------------------------- rendering


def _render(p: dict[str, np.ndarray], noise: np.ndarray, size: int, style: Style) -> np.ndarray:
    return render(p, noise, size, lesion_relevel=style.lesion_relevel, match_mean=style.match_mean)


def render_slice(
    rng: np.random.Generator, size: int, lesions: bool, style: Style = DEFAULT_STYLE
) -> np.ndarray:
    """Draw one CT-like slice (uint8, size x size); `lesions` adds COVID-like opacities."""
    noise = np.empty((1, 4, size, size), dtype=np.float32)
    p = _draw(rng, lesions, style, noise[0])
    return _render({k: v[None] for k, v in p.items()}, noise, size, style)[0]


# --------------------------------------------------------------------------- scans


def scan_layout(n_images: int, label: int, slices: tuple[int, int], seed: int) -> np.ndarray:
    """(scan, position, length) of each of a class's `n_images` slices, in image order.

    Scan lengths are drawn uniformly from `slices` (named_rng(seed, SCAN_STREAM, label)); the
    last scan is cut where the class's count ends.
    """
    rng = named_rng(seed, SCAN_STREAM, label)
    rows: list[tuple[int, int, int]] = []
    while len(rows) < n_images:
        n = int(rng.integers(slices[0], slices[1] + 1))
        scan = rows[-1][0] + 1 if rows else 0
        rows += [(scan, k, n) for k in range(n)]
    return np.asarray(rows[:n_images], dtype=np.int64).reshape(-1, 3)


def _scan_ends(
    seed: int, label: int, scan: int, style: Style, size: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A scan's anatomy, drawn twice (its two ends) from (seed, SCAN_STREAM, label, scan)."""
    scratch = np.empty((4, size, size), dtype=np.float32)  # noise fields: each slice has its own
    first, second = (
        _draw(named_rng(seed, SCAN_STREAM, label, scan, end), label == 1, style, scratch)
        for end in (0, 1)
    )
    return first, second


def _blend_scan_slice(
    own: dict[str, np.ndarray],
    ends: tuple[dict[str, np.ndarray], dict[str, np.ndarray]],
    position: int,
    length: int,
) -> dict[str, np.ndarray]:
    """Slice `position` of a scan of `length`: the scan's anatomy, moved along it.

    Slice k of n lies SCAN_DRIFT * k / (n - 1) of the way from the first end to the second, with
    the structure of `_SCAN_FIXED` kept from the first, so lungs, vessels and lesions change
    smoothly from one slice to the next, as in a CT volume. `own` (the slice's own draw, whose
    noise fields it keeps) gives only the keys.
    """
    w = SCAN_DRIFT * (position / (length - 1) if length > 1 else 0.0)
    first, second = ends
    return {
        key: first[key] if key in _SCAN_FIXED else (1 - w) * first[key] + w * second[key]
        for key in own
    }


# --------------------------------------------------------------------------- whole sets


def generate(
    counts: dict[str, int],
    classes: Sequence[str],
    image_size: int,
    seed: int,
    style: Style = DEFAULT_STYLE,
    workers: int = 1,
    slices: tuple[int, int] = (1, 1),
) -> LabelledImages:
    """Generate `counts[name]` slices per class (x uint8 N x 1 x S x S), in the loader's form: every
    image its own duplicate group, its file name the generator id, and the generator's scan of each
    image.

    `classes[label]` is the class name of `label`; label 0 is clean lungs, label 1 has lesions.
    `slices` bounds the slices per scan (`scan_layout`); (1, 1) draws every image on its own.
    Every slice draws from its own generators, so `workers` threads render batches of slices at
    once (NumPy computes outside the GIL) and the images do not depend on `workers`.
    """
    if len(classes) != 2:
        raise PipelineError(
            f"data.source 'synthetic' generates two classes (clean, lesions); data.classes has "
            f"{len(classes)}: {list(classes)}"
        )
    jobs = [(label, i) for label, name in enumerate(classes) for i in range(counts[name])]
    layout = {
        label: scan_layout(counts[name], label, slices, seed) for label, name in enumerate(classes)
    }
    batch = max(1, _BATCH_PIXELS // image_size**2)

    @functools.lru_cache(maxsize=64)  # a scan's slices are rendered together, in image order
    def ends(label: int, scan: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return _scan_ends(seed, label, scan, style, image_size)

    def draw(label: int, i: int, noise: np.ndarray) -> dict[str, np.ndarray]:
        own = _draw(named_rng(seed, SYNTHETIC_STREAM, label, i), label == 1, style, noise)
        if slices == (1, 1):  # independent images, as drawn before scans existed
            return own
        scan, position, length = (int(v) for v in layout[label][i])
        return _blend_scan_slice(own, ends(label, scan), position, length)

    def render_batch(todo: Sequence[tuple[int, int]]) -> np.ndarray:
        noise = np.empty((len(todo), 4, image_size, image_size), dtype=np.float32)
        drawn = [draw(label, i, noise[j]) for j, (label, i) in enumerate(todo)]
        stacked = {k: np.stack([d[k] for d in drawn]) for k in drawn[0]}
        return _render(stacked, noise, image_size, style)

    x = np.zeros((len(jobs), 1, image_size, image_size), dtype=np.uint8)
    starts = range(0, len(jobs), batch)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        rendered = pool.map(render_batch, [jobs[s : s + batch] for s in starts])
        for start, images in zip(starts, rendered, strict=True):
            x[start : start + len(images), 0] = images
    y = np.asarray([label for label, _ in jobs], dtype=np.int64)
    ids = np.asarray([synthetic_id(classes[label], i) for label, i in jobs], dtype=str)
    scans, first = [], 0
    for label in range(len(classes)):  # scans numbered across classes, in image order
        scan = layout[label][:, 0]
        scans.append(first + scan)
        first += int(scan[-1]) + 1
    return LabelledImages(
        x=x,
        y=y,
        files=ids,
        groups=np.arange(len(y), dtype=np.int64),
        classes=tuple(classes),
        scans=np.concatenate(scans),
    )


# Another scanner and protocol: noisier, lower lesion contrast. With a seed of its own, an external
# test set (data.external) that shares nothing with the default data and sits off its distribution.
ANOTHER_SITE = Style(ggo_hu=(170.0, 420.0), noise_hu=(30.0, 60.0))


def write_folder(images: LabelledImages, root: Path) -> None:
    """Write `images` as PNGs in the Kaggle layout <root>/<class>/<n>.png (data.source's and
    data.external's), e.g. a generated external set: `generate(..., style=ANOTHER_SITE)`."""
    from PIL import Image

    for n, (img, label) in enumerate(zip(images.x, images.y, strict=True)):
        folder = root / images.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0]).save(folder / f"{n:06d}.png")
