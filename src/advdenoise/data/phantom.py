"""Rendering of the synthetic CT-like slices (`synthetic`) from their drawn parameters.

Hounsfield-like units in normalised patient coordinates [-1, 1], rendered straight at the target size
and vectorised over a batch (float32): anatomy (body, spine, lungs, airway), ribs and vessels
splatted then blurred, confounders, COVID-like lesions, and the scanner (noise, blur, lung window).
`synthetic` draws every parameter; this module only turns them into pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIDES = np.array([-1.0, 1.0])  # image-left lung (patient's right), image-right lung


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


@dataclass(frozen=True)
class _Frame:
    """A batch's pixel grid in patient coordinates (B, S, S), and the map back to pixels."""

    p: dict[str, np.ndarray]
    size: int
    px: float  # one pixel in normalised units
    x: np.ndarray
    y: np.ndarray
    epx: np.ndarray  # soft-edge width: about one pixel
    scale: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    shift_x: np.ndarray
    shift_y: np.ndarray

    @property
    def batch(self) -> int:
        return len(self.p["theta"])

    def to_pixels(self, xp: np.ndarray, yp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patient-frame points (B, M) -> (column, row) pixel coordinates."""
        s_, cs, sn = self.scale[:, :, 0], self.cos[:, :, 0], self.sin[:, :, 0]
        xs, ys = xp * s_, yp * s_
        ix = cs * xs - sn * ys + self.shift_x[:, :, 0]
        iy = sn * xs + cs * ys + self.shift_y[:, :, 0]
        return (ix + 1.0) / self.px - 0.5, (iy + 1.0) / self.px - 0.5

    def on_lung(
        self, side_idx: np.ndarray, radius: np.ndarray, phi: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Points at (radius, phi) in lung coordinates of the lung `side_idx` (all (B, K))."""
        s_ = side_idx.astype(np.int64)

        def pick(key: str) -> np.ndarray:
            return np.take_along_axis(self.p[key], s_, axis=1)

        return pick("cx") + radius * pick("rx") * np.cos(phi), pick("cy") + radius * pick(
            "ry"
        ) * np.sin(phi)


def _frame(p: dict[str, np.ndarray], size: int) -> _Frame:
    px = 2.0 / size
    grid = ((np.arange(size) + 0.5) * px - 1.0).astype(np.float32)
    gx, gy = grid[None, None, :], grid[None, :, None]
    c = _col
    scale, ct, st = c(p["scale"]), c(np.cos(p["theta"])), c(np.sin(p["theta"]))
    sx0, sy0 = c(p["shift_x"]), c(p["shift_y"])
    x = (ct * (gx - sx0) + st * (gy - sy0)) / scale  # patient frame
    y = (-st * (gx - sx0) + ct * (gy - sy0)) / scale
    return _Frame(p, size, px, x, y, 0.7 * px / scale, scale, ct, st, sx0, sy0)


def _anatomy(f: _Frame, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Body, spine, lungs (with texture) and airway in HU; also the body and lung masks."""
    p, x, y, epx, c = f.p, f.x, f.y, f.epx, _col
    # Body: air -1000 HU, fat rim -100, soft tissue +40; spine (bone) with its canal.
    by, ba, bb, fat = c(p["body_y"]), c(p["body_a"]), c(p["body_b"]), c(p["fat"])
    body = _ellipse(x, y, 0.0, by, ba, bb, epx)
    hu = -1000.0 + 900.0 * body + 140.0 * _ellipse(x, y, 0.0, by, ba - fat, bb - fat, epx)
    vy, vr = c(p["vert_y"]), c(p["vert_r"])
    hu += 650.0 * _ellipse(x, y, 0.0, vy - 0.05, vr, vr * 0.9, epx)
    hu -= 600.0 * _ellipse(x, y, 0.0, vy + vr * 0.9, vr * 0.4, vr * 0.35, epx)

    # Lung fields: wobbly tilted ellipses, flat medial border, heart and spine cut out.
    med = c(p["med"])
    lungs = np.zeros((f.batch, f.size, f.size), dtype=np.float32)
    for i, side in enumerate(SIDES):
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
    return hu, body, lungs


def _ribs(f: _Frame) -> np.ndarray:
    """Ribs: short bright bars around the lungs, splatted then blurred (density, before masking)."""
    p, b, px = f.p, f.batch, f.px
    cx2, cy2 = p["cx"][:, :, None], p["cy"][:, :, None]
    rx2, ry2 = p["rx"][:, :, None], p["ry"][:, :, None]
    side2 = SIDES[None, :, None]
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
        _splat(
            f.size, *f.to_pixels(rib_x.reshape(b, -1), rib_y.reshape(b, -1)), rib_w.reshape(b, -1)
        ),
        rib_px,
    )
    return np.minimum(ribs * _col(2 * np.pi * rib_px**2 / 2.5), 1.0)


def _vessels(f: _Frame) -> np.ndarray:
    """Vessels: tapering polylines from the hilum, side branches and dots, splatted then blurred."""
    p, b, px, size = f.p, f.batch, f.px, f.size
    cx2, cy2 = p["cx"][:, :, None], p["cy"][:, :, None]
    rx2, ry2 = p["rx"][:, :, None], p["ry"][:, :, None]
    side2 = SIDES[None, :, None]
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
    vessel = _blur(_splat(size, *f.to_pixels(pts_x, pts_y), pts_w), 0.65 * size / 64) * (size / 64)
    return np.minimum(vessel, 1.0)


def _lesions(f: _Frame, lungs: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """COVID: ground-glass opacities, patchy, and sometimes a consolidation patch (HU added)."""
    p, x, y, size, c = f.p, f.x, f.y, f.size, _col
    lcx, lcy = f.on_lung(p["les_side"], p["les_r"], p["les_phi"])
    ggo = _gaussians(x, y, lcx, lcy, p["les_sx"], p["les_sy"], p["les_ang"], p["les_amp"])
    patchy = 1.0 + 0.6 * _unit(_blur(noise[:, 3], 1.2 * size / 64))
    lesion = lungs * ggo * np.clip(patchy, 0.2, None)
    cons = p["cons_k"].astype(np.int64)[:, None]

    def kc(key: np.ndarray) -> np.ndarray:
        return np.take_along_axis(key, cons, axis=1)

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
    return lesion


def render(
    p: dict[str, np.ndarray],
    noise: np.ndarray,
    size: int,
    *,
    lesion_relevel: float,
    match_mean: bool,
) -> np.ndarray:
    """Render a batch of drawn slices -> uint8 (B, S, S); `p` arrays and `noise` lead with B.

    `lesion_relevel` and `match_mean` are `synthetic.Style`'s fields of the same names.
    """
    f = _frame(p, size)
    x, y, px, c = f.x, f.y, f.px, _col
    hu, body, lungs = _anatomy(f, noise)
    hu += 700.0 * _ribs(f) * (1.0 - lungs) * body
    hu += 1000.0 * _vessels(f) * lungs

    # Confounders: benign nodules and a dependent (posterior) density band.
    ncx, ncy = f.on_lung(p["nod_side"], p["nod_r"], p["nod_phi"])
    ns = np.maximum(p["nod_s"], 0.6 * px)
    hu += lungs * _gaussians(x, y, ncx, ncy, ns, ns, np.zeros_like(ns), p["nod_amp"])
    band = c(p["lung_y"]) + c(p["lung_ry"]) * c(p["dep_y"])
    hu += lungs * c(p["dep_amp"]) * _sigmoid((y - band) / c(p["dep_w"]))
    lesion = _lesions(f, lungs, noise)
    hu += lesion

    # Scanner: correlated noise, point-spread blur, lung window.
    scanner = 0.9 * _unit(_blur(noise[:, 1], 0.7)) + 0.45 * noise[:, 2]
    hu = _blur(hu + c(p["noise_sd"]) * scanner, p["psf"] * max(size / 64, 1.0) ** 0.5)
    width = c(p["width"])
    img = (hu - (c(p["level"]) - width / 2)) / width
    # Re-level: remove this fraction of the brightness the lesions add to the slice's mean.
    img = img - lesion_relevel * lesion.mean(axis=(1, 2), keepdims=True) / width
    if match_mean:
        img = img + (c(p["mean_target"]) - np.clip(img, 0, 1).mean(axis=(1, 2), keepdims=True))
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
