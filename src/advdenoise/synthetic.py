"""Embedded default data: seeded CT-like axial lung slices, "non-COVID" (clean) and "COVID" (lesions).

Why: the pipeline must run end to end on a fresh clone with no dataset. The generator mimics what the
SARS-CoV-2 CT-scan dataset looks like (axial chest slices cropped to the thorax, lung window) closely
enough that a classifier has to look at lung texture, not at global statistics.

What each image models (all in Hounsfield-like units, rendered straight at the target size in
normalised coordinates [-1, 1], so every `image_size` shows the same anatomy):

- Patient pose: small rotation, shift and scale of the whole slice.
- Body: an ellipse of soft tissue (+40 HU) with a subcutaneous fat rim (-100 HU) in air (-1000 HU);
  a vertebral body with its spinal canal, and rib cross-sections along the chest wall (bone).
- Lungs: two dark fields (about -860 HU) whose size, position, tilt and outline (low-order Fourier
  wobble of an ellipse) vary; the mediastinum flattens their medial borders and, on lower slices, a
  heart lobe indents them. Trachea (upper slices) or main bronchi (lower slices) as air.
  A gravity-dependent gradient (posterior lung denser) and fine correlated parenchymal texture.
- Vessels: branching, tapering polylines fanning out from each hilum plus vessel cross-sections (dots),
  splatted and blurred to sub-pixel width.
- Confounders present in both classes with the same probability, so that "any brightness in the
  lungs" is not the label: benign small nodules, dependent posterior density (atelectasis-like band),
  and a per-image shift of the overall lung density.
- Class "COVID" (label 1) only: ground-glass opacities -- faint, diffuse, blurred, patchy blobs,
  anisotropic, peripheral- and posterior-leaning, 1 to 8 per slice, uni- or bilateral -- and in some
  slices a denser consolidation patch. The severity is drawn per slice and a fraction of slices is
  faint (contrast near the noise level), so the task is learnable but not trivially separable.
- Scanner: correlated quantum noise of varying strength, a point-spread blur, and a random lung
  window (level/width). Finally every image is shifted to a mean intensity drawn from one
  class-independent distribution ("auto-levelled export"), so mean intensity carries no label.

Difficulty is set by `Style` (see its fields); `DEFAULT_STYLE` aims at a small CNN reaching roughly
85-95% while a logistic regression on mean intensity stays near chance. Raise `faint_fraction` or lower
`ggo_hu` to make the task harder.

Determinism: image `i` of label `c` is drawn from its own generator seeded with (seed, stream, c, i),
so an image does not change when the counts of the other class or of later images change.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from advdenoise.errors import PipelineError
from advdenoise.runtime import generator

SYNTHETIC_STREAM = 202  # RNG stream offset for the generator (the splitter uses another one)
SYNTHETIC_PREFIX = "synthetic"


@dataclass(frozen=True)
class Style:
    """Knobs of the generator that set how hard the task is (HU = Hounsfield-like units)."""

    ggo_hu: tuple[float, float] = (200.0, 520.0)  # peak ground-glass contrast of a typical slice
    faint_fraction: float = 0.2  # fraction of COVID slices whose lesions are faint ...
    faint_hu: tuple[float, float] = (70.0, 200.0)  # ... with a contrast in this range
    lesion_count_mean: float = 2.0  # lesions per COVID slice = 1 + Poisson(mean), at most 8
    consolidation_prob: float = 0.25  # chance a COVID slice also has a dense consolidation patch
    nodule_prob: float = 0.35  # benign nodules, both classes
    dependent_density_prob: float = 0.35  # posterior atelectasis-like band, both classes
    noise_hu: tuple[float, float] = (14.0, 38.0)  # per-image noise standard deviation
    match_mean: bool = False  # shift each image to a class-independent mean intensity
    mean_target: tuple[float, float] = (0.62, 0.04)  # mean and sd of that target (in [0, 1])


DEFAULT_STYLE = Style()


def synthetic_id(class_name: str, index: int) -> str:
    """The file id of a synthetic image, e.g. "synthetic/COVID/000123"."""
    return f"{SYNTHETIC_PREFIX}/{class_name}/{index:06d}"


# --------------------------------------------------------------------------- rendering helpers


@functools.lru_cache(maxsize=64)
def _blur_matrix(size: int, sigma_px: float) -> np.ndarray:
    """Row operator G of a Gaussian blur with reflecting borders: blurred = G @ img @ G.T."""
    radius = max(1, int(np.ceil(3 * sigma_px)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma_px) ** 2)
    kernel /= kernel.sum()
    g = np.zeros((size, size))
    rows = np.arange(size)[:, None]
    cols = rows + offsets[None, :]
    cols = np.where(cols < 0, -cols - 1, cols)  # reflect
    cols = np.where(cols >= size, 2 * size - cols - 1, cols)
    cols = np.clip(cols, 0, size - 1)
    np.add.at(g, (np.broadcast_to(rows, cols.shape), cols), np.broadcast_to(kernel, cols.shape))
    return g


def _blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    # Quantised sigma keeps the matrix cache small.
    g = _blur_matrix(img.shape[0], round(max(sigma_px, 0.2), 2))
    return g @ img @ g.T


def _smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Correlated Gaussian noise with unit standard deviation."""
    n = _blur(rng.standard_normal((size, size)), sigma_px)
    return n / (n.std() + 1e-12)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _ellipse_mask(
    x: np.ndarray,
    y: np.ndarray,
    cx: float,
    cy: float,
    ax: float,
    ay: float,
    edge: float,
    angle: float = 0.0,
) -> np.ndarray:
    """Soft (anti-aliased) inside-mask of a rotated ellipse; `edge` is the transition width."""
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = x - cx, y - cy
    u, v = c * dx + s * dy, -s * dx + c * dy
    rho = np.sqrt((u / ax) ** 2 + (v / ay) ** 2)
    return _sigmoid((1.0 - rho) * min(ax, ay) / edge)


def _gaussians(
    x: np.ndarray,
    y: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    sx: np.ndarray,
    sy: np.ndarray,
    angle: np.ndarray,
    amp: np.ndarray,
) -> np.ndarray:
    """Sum of K anisotropic Gaussian blobs evaluated on the grid (vectorised over K)."""
    if len(cx) == 0:
        return np.zeros_like(x)
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    dx, dy = x[None] - cx[:, None, None], y[None] - cy[:, None, None]
    u, v = c * dx + s * dy, -s * dx + c * dy
    q = (u / sx[:, None, None]) ** 2 + (v / sy[:, None, None]) ** 2
    return np.einsum("k,khw->hw", amp, np.exp(-0.5 * q))


def _splat(size: int, px: np.ndarray, py: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Bilinear splatting of weighted points (pixel coordinates) onto a size x size grid."""
    img = np.zeros((size + 2, size + 2))
    fx, fy = px + 0.5, py + 0.5  # +1 border, -0.5 pixel-centre convention
    ix, iy = np.floor(fx).astype(int), np.floor(fy).astype(int)
    tx, ty = fx - ix, fy - iy
    ok = (ix >= 0) & (iy >= 0) & (ix < size + 1) & (iy < size + 1)
    ix, iy, tx, ty, w = ix[ok], iy[ok], tx[ok], ty[ok], w[ok]
    np.add.at(img, (iy, ix), w * (1 - tx) * (1 - ty))
    np.add.at(img, (iy, ix + 1), w * tx * (1 - ty))
    np.add.at(img, (iy + 1, ix), w * (1 - tx) * ty)
    np.add.at(img, (iy + 1, ix + 1), w * tx * ty)
    return img[1:-1, 1:-1]


# --------------------------------------------------------------------------- one slice


def render_slice(
    rng: np.random.Generator, size: int, lesions: bool, style: Style = DEFAULT_STYLE
) -> np.ndarray:
    """Draw one CT-like slice (uint8, size x size); `lesions` adds COVID-like opacities."""
    # Lesions draw from their own stream, so a slice with and without lesions has the same anatomy,
    # noise and window: the label is the only difference.
    lesion_rng = np.random.default_rng(rng.integers(2**63))
    # Pixel-noise fields draw from separate streams, so the anatomy does not depend on image_size.
    noise_rng = np.random.default_rng(rng.integers(2**63))
    lesion_noise_rng = np.random.default_rng(rng.integers(2**63))
    px = 2.0 / size  # one pixel in normalised units
    edge = 0.7 * px
    grid = (np.arange(size) + 0.5) * px - 1.0
    gx, gy = np.meshgrid(grid, grid)

    # Patient pose: rotate/shift/scale the coordinate frame.
    theta = np.deg2rad(rng.uniform(-7, 7))
    scale = rng.uniform(0.9, 1.08)
    sx0, sy0 = rng.uniform(-0.05, 0.05, size=2)
    ct, st = np.cos(theta), np.sin(theta)
    x = (ct * (gx - sx0) + st * (gy - sy0)) / scale
    y = (-st * (gx - sx0) + ct * (gy - sy0)) / scale
    epx = edge / scale

    # Body: air outside, fat rim, soft tissue inside.
    body_a, body_b, body_y = rng.uniform(1.1, 1.3), rng.uniform(0.95, 1.1), rng.uniform(0.02, 0.1)
    fat = rng.uniform(0.04, 0.1)
    body = _ellipse_mask(x, y, 0.0, body_y, body_a, body_b, epx)
    inner = _ellipse_mask(x, y, 0.0, body_y, body_a - fat, body_b - fat, epx)
    hu = -1000.0 + body * 900.0 + inner * 140.0  # air -1000, fat -100, soft tissue +40

    # Spine (vertebral body + canal) at the posterior midline.
    vy = body_y + body_b - rng.uniform(0.22, 0.3)
    vr = rng.uniform(0.11, 0.15)
    hu += 650.0 * _ellipse_mask(x, y, 0.0, vy - 0.05, vr, vr * 0.9, epx)
    hu -= 600.0 * _ellipse_mask(x, y, 0.0, vy + vr * 0.9, vr * 0.4, vr * 0.35, epx)

    # Lung fields.
    mediastinum = rng.uniform(0.09, 0.18)
    lung_y = rng.uniform(-0.06, 0.04)
    lung_ry = rng.uniform(0.62, 0.76)
    heart = rng.random() < 0.5
    hx, hy = rng.uniform(0.05, 0.18), rng.uniform(-0.55, -0.3)
    hax, hay = rng.uniform(0.25, 0.4), rng.uniform(0.25, 0.4)
    heart_mask = _ellipse_mask(x, y, hx, hy, hax, hay, epx) if heart else 0.0
    lungs = np.zeros_like(x)
    lung_geo = []
    for side in (-1.0, 1.0):
        cx = side * rng.uniform(0.46, 0.54)
        cy = lung_y + rng.uniform(-0.04, 0.04)
        rx = rng.uniform(0.33, 0.41)
        ry = lung_ry * rng.uniform(0.92, 1.05)
        tilt = side * np.deg2rad(rng.uniform(-4, 12))
        k = np.arange(2, 5)
        amp, phase = rng.uniform(0, 0.05, 3), rng.uniform(0, 2 * np.pi, 3)
        dx, dy = x - cx, y - cy
        ang = np.arctan2(dy, dx) - tilt
        wobble = 1.0 + np.einsum("k,khw->hw", amp, np.cos(k[:, None, None] * ang + phase[:, None, None]))
        c, s = np.cos(tilt), np.sin(tilt)
        u, v = c * dx + s * dy, -s * dx + c * dy
        rho = np.sqrt((u / rx) ** 2 + (v / ry) ** 2) / wobble
        m = _sigmoid((1.0 - rho) * rx / epx)
        m = m * _sigmoid((side * x - mediastinum) / epx)  # flat medial border
        lungs = np.maximum(lungs, m)
        lung_geo.append((side, cx, cy, rx, ry, tilt))
    lungs = lungs * (1.0 - heart_mask)
    # Keep the spine out of the lungs.
    lungs = lungs * (1.0 - _ellipse_mask(x, y, 0.0, vy - 0.05, vr * 1.35, vr * 1.25, epx))

    lung_hu = -880.0 + rng.uniform(-40, 50)
    gradient = rng.uniform(0, 45) * np.clip((y - lung_y) / lung_ry, -1, 1)
    texture = rng.uniform(8, 18) * _smooth_noise(noise_rng, size, 0.9)
    lung_level = lung_hu + gradient + texture
    hu = hu * (1.0 - lungs) + lung_level * lungs

    # Airway: trachea on upper slices, main bronchi on lower ones.
    if rng.random() < 0.6:
        tr = rng.uniform(0.045, 0.07)
        airway = _ellipse_mask(x, y, rng.uniform(-0.04, 0.04), rng.uniform(-0.3, -0.1), tr, tr, epx)
    else:
        br = rng.uniform(0.025, 0.04)
        by = rng.uniform(-0.05, 0.1)
        airway = np.maximum(
            _ellipse_mask(x, y, -mediastinum - 0.05, by, br, br * 1.2, epx),
            _ellipse_mask(x, y, mediastinum + 0.05, by, br, br * 1.2, epx),
        )
    hu = hu * (1.0 - airway) - 990.0 * airway

    # Ribs along the chest wall, outside the lungs.
    rib_cx, rib_cy, rib_s = [], [], []
    for side, cx, cy, rx, ry, _ in lung_geo:
        n_ribs = rng.integers(3, 6)
        ang = rng.uniform(-0.45 * np.pi, 0.55 * np.pi, n_ribs)  # lateral and posterior wall
        r = rng.uniform(1.12, 1.22, n_ribs)
        rib_cx.append(cx + side * r * rx * np.cos(ang))
        rib_cy.append(cy + r * ry * np.sin(ang))
        rib_s.append(rng.uniform(0.018, 0.03, n_ribs))
    rs = np.maximum(np.concatenate(rib_s), 0.7 * px)
    ribs = _gaussians(x, y, np.concatenate(rib_cx), np.concatenate(rib_cy), rs, rs * 1.6,
                      rng.uniform(0, np.pi, len(rs)), np.full(len(rs), 700.0))
    hu += ribs * (1.0 - lungs) * body

    # Vessels: tapering branches from each hilum plus cross-sections, splatted then blurred.
    pts_x, pts_y, pts_w = [], [], []
    steps = int(np.ceil(2.4 / px))  # <= half-pixel spacing for the longest branch
    for side, cx, cy, rx, ry, _ in lung_geo:
        hilum_x = side * (mediastinum + rng.uniform(0.05, 0.1))
        n_v = rng.integers(12, 20)
        hilum_y = cy + rng.uniform(-0.08, 0.1) + rng.uniform(-0.12, 0.12, n_v)[:, None]
        ang = rng.uniform(-0.5 * np.pi, 0.5 * np.pi, n_v)
        length = rng.uniform(0.3, 0.8, n_v) * np.sqrt(
            (rx * 2 * np.cos(ang)) ** 2 + (ry * np.sin(ang)) ** 2
        )
        curve = rng.uniform(-0.8, 0.8, n_v)
        t = np.linspace(0.0, 1.0, steps)[None, :]
        a = ang[:, None] + curve[:, None] * t
        dl = length[:, None] / steps
        vx = hilum_x + side * np.cumsum(dl * np.cos(a), axis=1)
        vy_ = hilum_y + np.cumsum(dl * np.sin(a), axis=1)
        start = rng.uniform(0.05, 0.35, n_v)[:, None]  # do not all converge on one point
        w = 0.22 * (1.0 - 0.8 * t) * (t > start) * (dl / (0.5 * px))
        pts_x.append(vx.ravel())
        pts_y.append(vy_.ravel())
        pts_w.append(w.ravel())
        # Branches: shorter, thinner, starting part-way along a parent.
        nb = rng.integers(6, 12)
        parent = rng.integers(0, n_v, nb)
        at = rng.integers(steps // 4, 3 * steps // 4, nb)
        b_ang = a[parent, at] + rng.choice([-1.0, 1.0], nb) * rng.uniform(0.4, 0.9, nb)
        b_len = length[parent] * rng.uniform(0.2, 0.45, nb)
        dl_b = np.repeat(b_len[:, None] / steps, steps, axis=1)
        bx = vx[parent, at][:, None] + side * np.cumsum(dl_b * np.cos(b_ang)[:, None], axis=1)
        by = vy_[parent, at][:, None] + np.cumsum(dl_b * np.sin(b_ang)[:, None], axis=1)
        wb = np.broadcast_to(0.16 * (1.0 - 0.7 * t) * (dl_b / (0.5 * px)), bx.shape)
        pts_x += [bx.ravel()]
        pts_y += [by.ravel()]
        pts_w += [wb.ravel()]
        # Cross-sections: dots scattered over the lung.
        nd = rng.integers(40, 80)
        r, phi = np.sqrt(rng.uniform(0, 1, nd)), rng.uniform(0, 2 * np.pi, nd)
        pts_x.append(cx + r * rx * np.cos(phi))
        pts_y.append(cy + r * ry * np.sin(phi))
        pts_w.append(rng.uniform(0.3, 1.0, nd) * (1.0 - 0.5 * r) * (size / 64))
    # Points are in the patient frame; map them into pixel coordinates of the image.
    vx_all, vy_all = np.concatenate(pts_x) * scale, np.concatenate(pts_y) * scale
    ix = ct * vx_all - st * vy_all + sx0
    iy = st * vx_all + ct * vy_all + sy0
    vessel = _splat(size, (ix + 1.0) / px - 0.5, (iy + 1.0) / px - 0.5, np.concatenate(pts_w))
    vessel = _blur(vessel, 0.65 * size / 64) * (size / 64)
    hu += 1000.0 * np.minimum(vessel, 1.0) * lungs

    # Confounders (both classes).
    if rng.random() < style.nodule_prob:
        n_nod = rng.integers(1, 3)
        side_i = rng.integers(0, 2, n_nod)
        geo = np.array(lung_geo)[side_i]
        r, phi = np.sqrt(rng.uniform(0.05, 0.8, n_nod)), rng.uniform(0, 2 * np.pi, n_nod)
        ns = np.maximum(rng.uniform(0.012, 0.025, n_nod), 0.6 * px)
        hu += lungs * _gaussians(
            x, y, geo[:, 1] + r * geo[:, 3] * np.cos(phi), geo[:, 2] + r * geo[:, 4] * np.sin(phi),
            ns, ns, np.zeros(n_nod), rng.uniform(450, 800, n_nod),
        )
    if rng.random() < style.dependent_density_prob:
        band_y = lung_y + lung_ry * rng.uniform(0.55, 0.8)
        hu += lungs * rng.uniform(60, 220) * _sigmoid((y - band_y) / rng.uniform(0.03, 0.07))

    # COVID: ground-glass opacities (+ sometimes consolidation), peripheral and posterior leaning.
    if lesions:
        faint = lesion_rng.random() < style.faint_fraction
        severity = lesion_rng.uniform(*(style.faint_hu if faint else style.ggo_hu))
        n_les = min(1 + lesion_rng.poisson(style.lesion_count_mean), 8)
        bilateral = lesion_rng.random() < 0.6
        first = lesion_rng.integers(0, 2)
        side_i = np.where(bilateral, lesion_rng.integers(0, 2, n_les), first)
        geo = np.array(lung_geo)[side_i]
        r = lesion_rng.beta(3.0, 1.4, n_les) * 0.9
        phi = lesion_rng.vonmises(np.pi / 2, 0.6, n_les)  # posterior-leaning angle
        phi = np.where(geo[:, 0] > 0, phi, np.pi - phi)  # lateral side of each lung
        phi = np.where(lesion_rng.random(n_les) < 0.5, phi, lesion_rng.uniform(0, 2 * np.pi, n_les))
        lcx = geo[:, 1] + r * geo[:, 3] * np.cos(phi)
        lcy = geo[:, 2] + r * geo[:, 4] * np.sin(phi)
        ls = lesion_rng.uniform(0.07, 0.2, n_les)
        ggo = _gaussians(
            x, y, lcx, lcy, ls * lesion_rng.uniform(0.7, 1.4, n_les), ls * lesion_rng.uniform(0.7, 1.4, n_les),
            lesion_rng.uniform(0, np.pi, n_les), severity * lesion_rng.uniform(0.6, 1.0, n_les),
        )
        patchy = 1.0 + 0.6 * _smooth_noise(lesion_noise_rng, size, 1.2 * size / 64)
        hu += lungs * ggo * np.clip(patchy, 0.2, None)
        if lesion_rng.random() < style.consolidation_prob:
            k = lesion_rng.integers(0, n_les)
            g = _gaussians(x, y, lcx[k : k + 1], lcy[k : k + 1], ls[k : k + 1] * 1.1,
                           ls[k : k + 1] * 0.8, lesion_rng.uniform(0, np.pi, 1), np.ones(1))
            dense = _sigmoid((g * patchy - 0.4) / 0.06)
            hu += lungs * lesion_rng.uniform(450, 750) * dense

    # Scanner: correlated noise, point-spread blur, lung window.
    noise_sd = rng.uniform(*style.noise_hu)
    hu = hu + noise_sd * (
        0.9 * _smooth_noise(noise_rng, size, 0.7) + 0.45 * noise_rng.standard_normal(hu.shape)
    )
    hu = _blur(hu, rng.uniform(0.35, 0.7) * max(size / 64, 1.0) ** 0.5)
    level, width = rng.uniform(-560, -460), rng.uniform(1300, 1500)
    img = (hu - (level - width / 2)) / width
    if style.match_mean:
        img = img + (rng.normal(*style.mean_target) - np.clip(img, 0, 1).mean())
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


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
    xs, ys, ids = [], [], []
    for label, name in enumerate(classes):
        n = counts[name]
        for i in range(n):
            rng = generator(seed, SYNTHETIC_STREAM, label, i)
            xs.append(render_slice(rng, image_size, lesions=label == 1, style=style))
            ys.append(label)
            ids.append(synthetic_id(name, i))
    x = np.stack(xs)[:, None] if xs else np.zeros((0, 1, image_size, image_size), np.uint8)
    return x, np.asarray(ys, dtype=np.int64), np.asarray(ids, dtype=str)
