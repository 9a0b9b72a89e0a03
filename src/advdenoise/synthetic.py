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

Difficulty is set by `Style` (see its fields); `DEFAULT_STYLE` aims at a small CNN reaching roughly
85-95% while global brightness statistics stay near chance. Raise `faint_fraction` or lower `ggo_hu`
to make the task harder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from advdenoise.data import LabelledImages
from advdenoise.errors import PipelineError
from advdenoise.runtime import generator

SYNTHETIC_STREAM = 202  # RNG stream offset for the generator (the splitter uses another one)
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
_SIDES = np.array([-1.0, 1.0])  # image-left lung (patient's right), image-right lung
_BATCH_PIXELS = 262_144  # pixels per batch: small temporaries (large ones cost page faults)


def _col(v: np.ndarray, ndim: int = 3) -> np.ndarray:
    """Per-image values (B,) -> shape (B, 1, ..., 1) with `ndim` axes, to broadcast over pixels."""
    v = np.asarray(v, dtype=np.float32)
    return v.reshape(v.shape[:1] + (1,) * (ndim - 1))


def _kernels(sigmas_px: np.ndarray) -> np.ndarray:
    """Normalised Gaussian kernels, one row per image, on a common support."""
    sig = np.maximum(np.asarray(sigmas_px, dtype=np.float64), 0.2)
    radius = max(1, int(np.ceil(3 * sig.max())))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1)[None, :] / sig[:, None]) ** 2)
    return (k / k.sum(axis=1, keepdims=True)).astype(np.float32)


def _blur(img: np.ndarray, sigma_px: float | np.ndarray) -> np.ndarray:
    """Separable Gaussian blur of (B, S, S) with mirrored borders, per-image sigma allowed.

    Shifted sums instead of BLAS: fast for small kernels and bit-identical on every machine.
    """
    b, h, w = img.shape
    k = _kernels(np.broadcast_to(sigma_px, (b,)))
    r = k.shape[1] // 2
    p = np.pad(img, ((0, 0), (r, r), (0, 0)), mode="symmetric")
    out = sum(k[:, i, None, None] * p[:, i : i + h] for i in range(k.shape[1]))
    p = np.pad(out, ((0, 0), (0, 0), (r, r)), mode="symmetric")
    return sum(k[:, i, None, None] * p[:, :, i : i + w] for i in range(k.shape[1]))


def _unit(noise: np.ndarray) -> np.ndarray:
    """Scale each image of a (B, S, S) noise field to unit standard deviation."""
    return noise / (noise.std(axis=(1, 2), keepdims=True) + 1e-12)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _ellipse(x, y, cx, cy, ax, ay, edge):  # noqa: ANN001, ANN202 - arrays broadcasting to (B,S,S)
    """Soft (anti-aliased) inside-mask of an axis-aligned ellipse; `edge` is the transition width."""
    rho = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    return _sigmoid((1.0 - rho) * np.minimum(ax, ay) / edge)


def _gaussians(x, y, cx, cy, sx, sy, angle, amp) -> np.ndarray:  # noqa: ANN001
    """Sum over K of anisotropic Gaussian blobs; parameters (B, K), grid (B, S, S) -> (B, S, S).

    Only blobs with a non-zero amplitude are evaluated (most of the K slots are usually empty).
    """
    out = np.zeros(x.shape, dtype=np.float32)
    bi, ki = np.nonzero(amp)
    if len(bi) == 0:
        return out
    c, s = np.cos(angle[bi, ki])[:, None, None], np.sin(angle[bi, ki])[:, None, None]
    dx, dy = x[bi] - cx[bi, ki][:, None, None], y[bi] - cy[bi, ki][:, None, None]
    u = (c * dx + s * dy) / sx[bi, ki][:, None, None]
    v = (c * dy - s * dx) / sy[bi, ki][:, None, None]
    blobs = amp[bi, ki][:, None, None] * np.exp(-0.5 * (u * u + v * v))
    starts = np.flatnonzero(np.r_[True, bi[1:] != bi[:-1]])  # bi is sorted by image
    out[bi[starts]] = np.add.reduceat(blobs, starts, axis=0)
    return out


def _splat(size: int, px: np.ndarray, py: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Bilinear splatting of weighted points, (B, M) pixel coordinates -> (B, S, S) images."""
    b = px.shape[0]
    n = size + 2  # one pixel of border on each side, cropped at the end
    fx, fy = px + 1.0, py + 1.0
    ix, iy = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    tx, ty = fx - ix, fy - iy
    ok = (ix >= 0) & (iy >= 0) & (ix < n - 1) & (iy < n - 1)
    flat = (np.arange(b)[:, None] * n * n + iy * n + ix)[ok]
    tx, ty, w = tx[ok], ty[ok], w[ok]
    idx = np.concatenate([flat, flat + 1, flat + n, flat + n + 1])
    wts = np.concatenate(
        [w * (1 - tx) * (1 - ty), w * tx * (1 - ty), w * (1 - tx) * ty, w * tx * ty]
    )
    img = np.bincount(idx, weights=wts, minlength=b * n * n).reshape(b, n, n).astype(np.float32)
    return img[:, 1:-1, 1:-1]


# --------------------------------------------------------------------------- parameters


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
    """Render a batch of drawn slices -> uint8 (B, S, S); `p` arrays and `noise` lead with B."""
    b = len(p["theta"])
    px = 2.0 / size  # one pixel in normalised units
    grid = ((np.arange(size) + 0.5) * px - 1.0).astype(np.float32)
    gx, gy = grid[None, None, :], grid[None, :, None]
    c = _col  # (B,) -> (B, 1, 1)
    scale, ct, st = c(p["scale"]), c(np.cos(p["theta"])), c(np.sin(p["theta"]))
    sx0, sy0 = c(p["shift_x"]), c(p["shift_y"])
    x = (ct * (gx - sx0) + st * (gy - sy0)) / scale  # patient frame
    y = (-st * (gx - sx0) + ct * (gy - sy0)) / scale
    epx = 0.7 * px / scale  # soft-edge width: about one pixel

    def to_pixels(xp: np.ndarray, yp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patient-frame points (B, M) -> (column, row) pixel coordinates."""
        s_, cs, sn = scale[:, :, 0], ct[:, :, 0], st[:, :, 0]
        xs, ys = xp * s_, yp * s_
        ix, iy = cs * xs - sn * ys + sx0[:, :, 0], sn * xs + cs * ys + sy0[:, :, 0]
        return (ix + 1.0) / px - 0.5, (iy + 1.0) / px - 0.5

    # Body: air -1000 HU, fat rim -100, soft tissue +40; spine (bone) with its canal.
    by, ba, bb, fat = c(p["body_y"]), c(p["body_a"]), c(p["body_b"]), c(p["fat"])
    body = _ellipse(x, y, 0.0, by, ba, bb, epx)
    hu = -1000.0 + 900.0 * body + 140.0 * _ellipse(x, y, 0.0, by, ba - fat, bb - fat, epx)
    vy, vr = c(p["vert_y"]), c(p["vert_r"])
    hu += 650.0 * _ellipse(x, y, 0.0, vy - 0.05, vr, vr * 0.9, epx)
    hu -= 600.0 * _ellipse(x, y, 0.0, vy + vr * 0.9, vr * 0.4, vr * 0.35, epx)

    # Lung fields: wobbly tilted ellipses, flat medial border, heart and spine cut out.
    med = c(p["med"])
    lungs = np.zeros((b, size, size), dtype=np.float32)
    for i, side in enumerate(_SIDES):
        cx, cy, rx, ry = c(p["cx"][:, i]), c(p["cy"][:, i]), c(p["rx"][:, i]), c(p["ry"][:, i])
        cos_t, sin_t = c(np.cos(p["tilt"][:, i])), c(np.sin(p["tilt"][:, i]))
        dx, dy = x - cx, y - cy
        u, v = cos_t * dx + sin_t * dy, -sin_t * dx + cos_t * dy
        r = np.sqrt(u**2 + v**2) + 1e-12
        c1, s1 = u / r, v / r  # cos/sin of the angle; harmonics by recurrence (no trig per pixel)
        ck, sk, wobble = c1, s1, 1.0
        for k in range(3):
            ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1  # harmonic k + 2
            amp, ph = c(p["wobble_amp"][:, i, k]), p["wobble_phase"][:, i, k]
            wobble = wobble + amp * (ck * c(np.cos(ph)) - sk * c(np.sin(ph)))
        rho = np.sqrt((u / rx) ** 2 + (v / ry) ** 2) / wobble
        m = _sigmoid((1.0 - rho) * rx / epx) * _sigmoid((side * x - med) / epx)
        lungs = np.maximum(lungs, m)
    heart = _ellipse(x, y, c(p["heart_x"]), c(p["heart_y"]), c(p["heart_a"]), c(p["heart_b"]), epx)
    lungs = lungs * (1.0 - c(p["heart"]) * heart)
    lungs = lungs * (1.0 - _ellipse(x, y, 0.0, vy - 0.05, vr * 1.35, vr * 1.25, epx))
    gradient = c(p["gradient"]) * np.clip((y - c(p["lung_y"])) / c(p["lung_ry"]), -1, 1)
    texture = c(p["texture"]) * _unit(_blur(noise[:, 0], 0.9))
    hu = hu * (1.0 - lungs) + (c(p["lung_hu"]) + gradient + texture) * lungs

    # Airway.
    tr, br, bry = c(p["tr"]), c(p["br"]), c(p["br_y"])
    trachea = _ellipse(x, y, c(p["tr_x"]), c(p["tr_y"]), tr, tr, epx)
    bronchi = np.maximum(
        _ellipse(x, y, -med - 0.05, bry, br, br * 1.2, epx),
        _ellipse(x, y, med + 0.05, bry, br, br * 1.2, epx),
    )
    airway = c(p["trachea"]) * trachea + (1.0 - c(p["trachea"])) * bronchi
    hu = hu * (1.0 - airway) - 990.0 * airway

    # Per-lung geometry as (B, 2, 1) columns for the point-based structures below.
    cx2, cy2 = p["cx"][:, :, None], p["cy"][:, :, None]
    rx2, ry2 = p["rx"][:, :, None], p["ry"][:, :, None]
    side2 = _SIDES[None, :, None]

    # Ribs: short bright bars outside the lungs, splatted then blurred.
    a = (
        p["rib_ang"][..., None]
        + p["rib_half"][..., None] * np.linspace(-1, 1, 5) / p["rib_r"][..., None]
    )
    r = p["rib_r"][..., None]
    rib_x = cx2[..., None] + side2[..., None] * r * rx2[..., None] * np.cos(a)
    rib_y = cy2[..., None] + r * ry2[..., None] * np.sin(a)
    rib_w = np.broadcast_to(p["rib_on"][..., None], rib_x.shape)
    rib_px = np.maximum(0.018 * p["scale"] / px, 0.7)
    ribs = _blur(
        _splat(size, *to_pixels(rib_x.reshape(b, -1), rib_y.reshape(b, -1)), rib_w.reshape(b, -1)),
        rib_px,
    )
    hu += 700.0 * np.minimum(ribs * c(2 * np.pi * rib_px**2 / 2.5), 1.0) * (1.0 - lungs) * body

    # Vessels: tapering polylines from the hilum, side branches and dots, splatted then blurred.
    steps = int(np.ceil(1.4 / px))  # <= half-pixel spacing (branches are shorter than 0.7)
    t = np.linspace(0.0, 1.0, steps)
    hx = side2[..., None] * (p["med"][:, None, None, None] + p["hilum_dx"][:, :, None, None])
    ang = p["v_ang"]
    length = p["v_len"] * np.sqrt((rx2 * 2 * np.cos(ang)) ** 2 + (ry2 * np.sin(ang)) ** 2)
    va = ang[..., None] + p["v_curve"][..., None] * t  # (B, 2, V, steps)
    dl = (length / steps)[..., None]
    vx = hx + side2[..., None] * np.cumsum(dl * np.cos(va), axis=-1)
    vyy = (cy2 + p["hilum_y"])[..., None] + np.cumsum(dl * np.sin(va), axis=-1)
    vw = 0.22 * (1.0 - 0.8 * t) * (t > p["v_start"][..., None]) * dl / (0.5 * px)
    vw = vw * p["v_on"][..., None]
    parent = p["b_parent"].astype(np.int64)
    at = np.clip((p["b_at"] * steps).astype(np.int64), 0, steps - 1)
    flat = parent * steps + at

    def pick(arr: np.ndarray) -> np.ndarray:
        return np.take_along_axis(arr.reshape(b, 2, -1), flat, axis=-1)

    b_ang = pick(va) + p["b_turn"]
    dlb = (np.take_along_axis(length, parent, axis=-1) * p["b_len"] / steps)[..., None]
    ramp = np.arange(1, steps + 1)
    bx = pick(vx)[..., None] + side2[..., None] * dlb * np.cos(b_ang)[..., None] * ramp
    byy = pick(vyy)[..., None] + dlb * np.sin(b_ang)[..., None] * ramp
    bw = 0.16 * (1.0 - 0.7 * t) * dlb / (0.5 * px) * p["b_on"][..., None]
    dx_ = cx2 + p["d_r"] * rx2 * np.cos(p["d_phi"])
    dy_ = cy2 + p["d_r"] * ry2 * np.sin(p["d_phi"])
    dw = p["d_w"] * (1.0 - 0.5 * p["d_r"]) * (size / 64) * p["d_on"]
    pts_x = np.concatenate([vx.reshape(b, -1), bx.reshape(b, -1), dx_.reshape(b, -1)], axis=1)
    pts_y = np.concatenate([vyy.reshape(b, -1), byy.reshape(b, -1), dy_.reshape(b, -1)], axis=1)
    pts_w = np.concatenate([vw.reshape(b, -1), bw.reshape(b, -1), dw.reshape(b, -1)], axis=1)
    vessel = _blur(_splat(size, *to_pixels(pts_x, pts_y), pts_w), 0.65 * size / 64) * (size / 64)
    hu += 1000.0 * np.minimum(vessel, 1.0) * lungs

    def on_lung(side_idx: np.ndarray, radius: np.ndarray, phi: np.ndarray):  # noqa: ANN202
        """Points at (radius, phi) in lung coordinates of the lung `side_idx` (all (B, K))."""
        s_ = side_idx.astype(np.int64)
        pick_ = lambda key: np.take_along_axis(p[key], s_, axis=1)  # noqa: E731
        return pick_("cx") + radius * pick_("rx") * np.cos(phi), pick_("cy") + radius * pick_(
            "ry"
        ) * np.sin(phi)

    # Confounders: benign nodules and a dependent (posterior) density band.
    ncx, ncy = on_lung(p["nod_side"], p["nod_r"], p["nod_phi"])
    ns = np.maximum(p["nod_s"], 0.6 * px)
    hu += lungs * _gaussians(x, y, ncx, ncy, ns, ns, np.zeros_like(ns), p["nod_amp"])
    band = c(p["lung_y"]) + c(p["lung_ry"]) * c(p["dep_y"])
    hu += lungs * c(p["dep_amp"]) * _sigmoid((y - band) / c(p["dep_w"]))

    # COVID: ground-glass opacities, patchy, and sometimes a consolidation patch.
    lcx, lcy = on_lung(p["les_side"], p["les_r"], p["les_phi"])
    ggo = _gaussians(x, y, lcx, lcy, p["les_sx"], p["les_sy"], p["les_ang"], p["les_amp"])
    patchy = 1.0 + 0.6 * _unit(_blur(noise[:, 3], 1.2 * size / 64))
    lesion = lungs * ggo * np.clip(patchy, 0.2, None)
    cons = p["cons_k"].astype(np.int64)[:, None]
    kc = lambda key: np.take_along_axis(key, cons, axis=1)  # noqa: E731
    g = _gaussians(
        x,
        y,
        kc(lcx),
        kc(lcy),
        kc(p["les_s"]) * 1.1,
        kc(p["les_s"]) * 0.8,
        p["cons_ang"][:, None],
        (p["cons_amp"][:, None] > 0).astype(np.float32),
    )
    lesion += lungs * c(p["cons_amp"]) * _sigmoid((g * patchy - 0.4) / 0.06)
    hu += lesion

    # Scanner: correlated noise, point-spread blur, lung window.
    scanner = 0.9 * _unit(_blur(noise[:, 1], 0.7)) + 0.45 * noise[:, 2]
    hu = _blur(hu + c(p["noise_sd"]) * scanner, p["psf"] * max(size / 64, 1.0) ** 0.5)
    width = c(p["width"])
    img = (hu - (c(p["level"]) - width / 2)) / width
    # Re-level: remove this fraction of the brightness the lesions add to the slice's mean.
    img = img - style.lesion_relevel * lesion.mean(axis=(1, 2), keepdims=True) / width
    if style.match_mean:
        img = img + (c(p["mean_target"]) - np.clip(img, 0, 1).mean(axis=(1, 2), keepdims=True))
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def render_slice(
    rng: np.random.Generator, size: int, lesions: bool, style: Style = DEFAULT_STYLE
) -> np.ndarray:
    """Draw one CT-like slice (uint8, size x size); `lesions` adds COVID-like opacities."""
    noise = np.empty((1, 4, size, size), dtype=np.float32)
    p = _draw(rng, lesions, style, noise[0])
    return _render({k: v[None] for k, v in p.items()}, noise, size, style)[0]


# --------------------------------------------------------------------------- whole sets


def generate(
    counts: dict[str, int],
    classes: Sequence[str],
    image_size: int,
    seed: int,
    style: Style = DEFAULT_STYLE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate `counts[name]` slices per class; returns (x uint8 N x 1 x S x S, y int64, ids).

    `classes[label]` is the class name of `label`; label 0 is clean lungs, label 1 has lesions.
    """
    if len(classes) != 2:
        raise PipelineError(
            f"data.source 'synthetic' generates two classes (clean, lesions); data.classes has "
            f"{len(classes)}: {list(classes)}"
        )
    jobs = [(label, i) for label, name in enumerate(classes) for i in range(counts[name])]
    x = np.zeros((len(jobs), 1, image_size, image_size), dtype=np.uint8)
    batch = max(1, _BATCH_PIXELS // image_size**2)
    noise = np.empty((batch, 4, image_size, image_size), dtype=np.float32)
    for start in range(0, len(jobs), batch):
        todo = jobs[start : start + batch]
        drawn = [
            _draw(generator(seed, SYNTHETIC_STREAM, label, i), label == 1, style, noise[j])
            for j, (label, i) in enumerate(todo)
        ]
        stacked = {k: np.stack([d[k] for d in drawn]) for k in drawn[0]}
        x[start : start + len(todo), 0] = _render(stacked, noise[: len(todo)], image_size, style)
    y = np.asarray([label for label, _ in jobs], dtype=np.int64)
    ids = np.asarray([synthetic_id(classes[label], i) for label, i in jobs], dtype=str)
    return x, y, ids


def generate_images(
    counts: dict[str, int],
    classes: Sequence[str],
    image_size: int,
    seed: int,
    style: Style = DEFAULT_STYLE,
) -> LabelledImages:
    """The synthetic dataset in the loader's form (every image its own duplicate group)."""
    x, y, ids = generate(counts, classes, image_size, seed, style)
    return LabelledImages(
        x=x, y=y, files=ids, groups=np.arange(len(y), dtype=np.int64), classes=tuple(classes)
    )
