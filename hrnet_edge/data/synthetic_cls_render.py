"""Rendering of the synthetic classification images.

Each image holds one object of its class over a cluttered background. Classes differ by
outline (``circle``, ``square``, ``star`` ...) or by surface pattern (``stripes``,
``checker``, ``dots`` ...), never by colour: every colour is drawn at random for every
image, so a network has to learn shapes and textures.

What makes the task hard enough to be worth measuring:

* scale: the square around the object covers 35%-85% of the image (log-uniform);
* rotation, a mild stretch (up to 16% per axis) and a position anywhere in the image,
  slightly cut by the border at times;
* patterned objects are cut out as discs, squares or rounded blobs, the same outlines
  some shape classes have, so the pattern alone names them; shape classes are filled
  with gradients and noise that are never periodic;
* backgrounds of gradients and low-frequency noise, with distractor strokes (smooth
  curves, which no class is) behind and in front of the object;
* a partial occluder on about one image in eight, sensor noise, occasional blur,
  and JPEG compression at a random quality.

Every image draws from its own generator, so output is independent of worker count.
Anything that changes what is drawn must bump ``synthetic_cls.GENERATOR_VERSION``.
"""
from __future__ import annotations

import cv2
import numpy as np

CLASS_NAMES = ("circle", "square", "triangle", "star", "ring", "cross", "stripes", "checker",
               "dots", "crescent", "heart", "arrow", "hexagon", "spiral", "zigzag", "target",
               "waves", "grid", "hourglass", "lshape")
PATTERN_CLASSES = ("stripes", "checker", "dots", "waves", "grid")
# The square around the object covers this fraction of the image (of a square of the
# short side), log-uniform: its side is 59%-92% of the image's. With 15%-80% (and
# occluders on a quarter of the images) a W8 model at 64x64 stayed at top-1 0.23 after
# 10 epochs: too hard for a run of minutes to say anything.
COVER_RANGE = (0.35, 0.85)
OCCLUDE_PROB = 0.12
BLUR_PROB = 0.2
JPEG_QUALITY_RANGE = (55, 95)
_SS = 4  # supersampling of the object mask: smooth outlines without cv2's AA rules
_MIN_CONTRAST = 110.0  # RGB distance between an object and the background under it


def _circle(radius: float = 1.0, n: int = 64, center=(0.0, 0.0)) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([center[0] + radius * np.cos(t), center[1] + radius * np.sin(t)], 1)


def _regular(n: int, radius: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + np.arange(n) * 2.0 * np.pi / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], 1)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    outer, inn = _regular(points), _regular(points, inner, -np.pi / 2 + np.pi / points)
    return np.stack([outer, inn], 1).reshape(-1, 2)


def _heart() -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, 96, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y + 2.5], 1) / 16.5


def _spiral(turns: float = 2.3) -> np.ndarray:
    t = np.linspace(0.0, 1.0, 160)
    r, a = 0.12 + 0.85 * t, t * turns * 2.0 * np.pi
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _rect(x0, y0, x1, y1) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


# Outlines in a unit frame (extent about [-1, 1]): ("fill", polygons, value) paints
# (255) or cuts holes (0); ("line", polyline, thickness) strokes an open curve.
_SHAPES = {
    "circle": [("fill", [_circle()], 255)],
    "square": [("fill", [_rect(-0.8, -0.8, 0.8, 0.8)], 255)],
    "triangle": [("fill", [_regular(3) + [0.0, 0.2]], 255)],
    "star": [("fill", [_star()], 255)],
    "ring": [("fill", [_circle()], 255), ("fill", [_circle(0.58)], 0)],
    "cross": [("fill", [_rect(-1, -0.28, 1, 0.28), _rect(-0.28, -1, 0.28, 1)], 255)],
    "crescent": [("fill", [_circle()], 255), ("fill", [_circle(0.85, center=(0.5, -0.1))], 0)],
    "heart": [("fill", [_heart()], 255)],
    "arrow": [("fill", [np.array([[-1, -0.2], [0.15, -0.2], [0.15, -0.6], [1, 0],
                                  [0.15, 0.6], [0.15, 0.2], [-1, 0.2]], float)], 255)],
    "hexagon": [("fill", [_regular(6, phase=0.0)], 255)],
    "spiral": [("line", _spiral(), 0.17)],
    "zigzag": [("line", np.array([[-1, 0.45], [-0.5, -0.45], [0, 0.45], [0.5, -0.45],
                                  [1, 0.45]], float), 0.24)],
    "target": [("fill", [_circle()], 255), ("fill", [_circle(0.7)], 0),
               ("fill", [_circle(0.4)], 255)],
    "hourglass": [("fill", [np.array([[-0.8, -1], [0.8, -1], [0, 0]], float),
                            np.array([[-0.8, 1], [0.8, 1], [0, 0]], float)], 255)],
    "lshape": [("fill", [np.array([[-0.8, -1], [-0.2, -1], [-0.2, 0.4], [0.8, 0.4],
                                   [0.8, 1], [-0.8, 1]], float)], 255)],
}
# The outlines a patterned object is cut out with.
_PATCHES = ("circle", "square", "blob")


def _draw_ops(ops, size: tuple[int, int], transform) -> np.ndarray:
    """Rasterize unit-frame ops to a float32 alpha mask in 0..1 of ``size``."""
    h, w = size
    canvas = np.zeros((h * _SS, w * _SS), np.uint8)
    for kind, geom, arg in ops:
        if kind == "fill":
            polys = [np.round(transform(p) * _SS).astype(np.int32) for p in geom]
            cv2.fillPoly(canvas, polys, int(arg))
        else:
            pts, scale = transform(geom, with_scale=True)
            thick = max(_SS, int(round(arg * scale * _SS)))
            cv2.polylines(canvas, [np.round(pts * _SS).astype(np.int32)], False, 255, thick)
    return cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _blob(rng: np.random.Generator) -> np.ndarray:
    """A smooth random closed outline: a circle with low-order radial harmonics."""
    t = np.linspace(0.0, 2.0 * np.pi, 96, endpoint=False)
    r = np.ones_like(t)
    for k in (2, 3):
        r += rng.uniform(0.0, 0.12) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    return np.stack([r * np.cos(t), r * np.sin(t)], 1) / r.max()


def _patch_ops(rng: np.random.Generator) -> list:
    kind = _PATCHES[int(rng.integers(len(_PATCHES)))]
    if kind == "circle":
        return [("fill", [_circle()], 255)]
    if kind == "square":
        return [("fill", [_rect(-0.8, -0.8, 0.8, 0.8)], 255)]
    return [("fill", [_blob(rng)], 255)]


def _pattern(name: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Pattern coverage in 0..1 on rotated pixel coordinates (u, v)."""
    k = 2.0 * np.pi / period
    if name == "stripes":
        f = np.sin(k * u) / k  # ~ signed distance to the stripe edge, in pixels
    elif name == "checker":
        f = np.sin(k * u) * np.sin(k * v) / k
    elif name == "waves":
        f = np.sin(k * (u + 0.45 * period * np.sin(k * v / 2.2))) / k
    else:
        du = (u / period - np.round(u / period)) * period
        dv = (v / period - np.round(v / period)) * period
        if name == "dots":
            f = 0.3 * period - np.hypot(du, dv)
        else:  # grid: lines of 0.2 periods
            f = 0.1 * period - np.minimum(np.abs(du), np.abs(dv))
    return np.clip(0.5 + f, 0.0, 1.0).astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Float32 HWC: a two-colour gradient in a random direction plus blotchy noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0.0, 2.0 * np.pi)
    t = xx * np.cos(a) + yy * np.sin(a)
    t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
    # The far colour stays near the first, so that the object's edges, not the
    # background's, are the strongest in the image.
    c0 = rng.uniform(0, 255, 3)
    c1 = np.clip(c0 + rng.normal(0.0, 45.0, 3), 0, 255)
    img = c0 * (1.0 - t[..., None]) + c1 * t[..., None]
    cells = int(rng.integers(3, 7))
    blotch = rng.normal(0.0, 1.0, (cells, cells, 3)).astype(np.float32)
    img += cv2.resize(blotch, (w, h), interpolation=cv2.INTER_CUBIC) * rng.uniform(5, 25)
    return img.astype(np.float32)


def _strokes(rng: np.random.Generator, img: np.ndarray, count: int) -> None:
    """Draw ``count`` thin, half-transparent smooth curves (quadratic Beziers), which no
    class resembles. They are faint on purpose: with opaque 3 px strokes and full-range
    background gradients, a W8 net at 64x64 was still at chance after 240 steps."""
    h, w = img.shape[:2]
    t = np.linspace(0.0, 1.0, 24)[:, None]
    for _ in range(count):
        p = rng.uniform([-0.1 * w, -0.1 * h], [1.1 * w, 1.1 * h], (3, 2))
        curve = (1 - t) ** 2 * p[0] + 2 * (1 - t) * t * p[1] + t ** 2 * p[2]
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        thick = int(rng.integers(1, 2 + max(h, w) // 96))
        layer = img.copy()
        cv2.polylines(layer, [np.round(curve * 16).astype(np.int32)], False, color, thick,
                      cv2.LINE_AA, shift=4)
        opacity = rng.uniform(0.3, 0.7)
        img *= 1.0 - opacity
        img += opacity * layer


def _contrasting(rng: np.random.Generator, ref: np.ndarray) -> np.ndarray:
    """A random colour at least ``_MIN_CONTRAST`` away from ``ref``, so objects stay
    visible (an invisible object would be a mislabelled image)."""
    for _ in range(32):
        c = rng.uniform(0, 255, 3)
        if np.linalg.norm(c - ref) >= _MIN_CONTRAST:
            return c
    return np.where(ref > 127.5, 0.0, 255.0)


def _transform(center, radius: float, angle: float, stretch):
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    mat = rot @ np.diag(stretch) * radius
    mean_scale = radius * float(np.sqrt(stretch[0] * stretch[1]))

    def apply(points: np.ndarray, with_scale: bool = False):
        out = np.asarray(points, np.float64) @ mat.T + center
        return (out, mean_scale) if with_scale else out

    return apply


def _fill(rng, name, img, alpha, center, radius) -> np.ndarray:
    """The object's surface, float32 HWC: a pattern of two colours, or (shape classes)
    a colour with a gradient and noise that is never periodic."""
    h, w = alpha.shape
    weight = alpha[..., None] / max(float(alpha.sum()), 1e-6)
    c1 = _contrasting(rng, (img * weight).sum((0, 1)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - center[0], yy - center[1]
    if name in PATTERN_CLASSES:
        c2 = _contrasting(rng, c1)
        phi = rng.uniform(0.0, np.pi)
        u, v = dx * np.cos(phi) + dy * np.sin(phi), -dx * np.sin(phi) + dy * np.cos(phi)
        period = max(4.0, 2.0 * radius / rng.uniform(3.0, 6.0))
        cover = _pattern(name, u, v, period)[..., None]
        return (c1 * cover + c2 * (1.0 - cover)).astype(np.float32)
    a = rng.uniform(0.0, 2.0 * np.pi)
    t = ((dx * np.cos(a) + dy * np.sin(a)) / max(radius, 1.0))[..., None]
    surface = c1 + t * rng.normal(0.0, 30.0, 3)
    return (surface + rng.normal(0.0, rng.uniform(2, 10), (h, w, 3))).astype(np.float32)


def _occluder(rng, img: np.ndarray, center, radius: float) -> None:
    """A bar (never square, so not a class object) over part of the object."""
    h, w = img.shape[:2]
    d = rng.uniform(0.6, 1.1) * radius
    a = rng.uniform(0.0, 2.0 * np.pi)
    at = np.asarray(center) + d * np.array([np.cos(a), np.sin(a)])
    # Half-length and half-width: the bar hides up to about a third of the object.
    length, width = rng.uniform(0.7, 1.4) * radius, rng.uniform(0.15, 0.35) * radius
    tf = _transform(at, 1.0, rng.uniform(0.0, np.pi), (length, width))
    mask = _draw_ops([("fill", [_rect(-1, -1, 1, 1)], 255)], (h, w), tf)[..., None]
    color = rng.uniform(0, 255, 3) + rng.normal(0.0, 6.0, (h, w, 3))
    img *= 1.0 - mask
    img += mask * color


def _place(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float]:
    """Centre and radius (pixels) of the object: cover log-uniform in COVER_RANGE,
    anywhere in the image, at most 10% of it past the border."""
    lo, hi = np.log(COVER_RANGE[0]), np.log(COVER_RANGE[1])
    radius = 0.5 * min(h, w) * float(np.sqrt(np.exp(rng.uniform(lo, hi))))
    margin = 0.8 * radius
    cx = rng.uniform(margin, w - margin) if w > 2 * margin else w / 2.0
    cy = rng.uniform(margin, h - margin) if h > 2 * margin else h / 2.0
    return np.array([cx, cy]), radius


def render_image(rng: np.random.Generator, name: str, size: tuple[int, int]
                 ) -> tuple[np.ndarray, int]:
    """Render one image of class ``name``.

    Args:
        rng: the image's own generator.
        name: a class of :data:`CLASS_NAMES`.
        size: (H, W).

    Returns:
        (RGB uint8 HWC image, JPEG quality to save it with).
    """
    h, w = size
    img = _background(rng, h, w)
    _strokes(rng, img, int(rng.integers(0, 4)))
    center, radius = _place(rng, h, w)
    stretch = np.exp(rng.uniform(-0.15, 0.15, 2))
    tf = _transform(center, radius, rng.uniform(0.0, 2.0 * np.pi), stretch)
    ops = _patch_ops(rng) if name in PATTERN_CLASSES else _SHAPES[name]
    alpha = _draw_ops(ops, (h, w), tf)
    surface = _fill(rng, name, img, alpha, center, radius)
    img = img * (1.0 - alpha[..., None]) + surface * alpha[..., None]
    if rng.random() < OCCLUDE_PROB:
        _occluder(rng, img, center, radius)
    _strokes(rng, img, int(rng.integers(0, 2)))
    if rng.random() < BLUR_PROB:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.0))
    img = img + rng.normal(0.0, rng.uniform(2.0, 8.0), img.shape)
    quality = int(rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), quality
