"""Rendering of the synthetic detection images and their COCO instance annotations.

An image holds 1 to 8 objects of six categories over a cluttered background. Each
category differs by outline AND by surface: ``disc`` (round, radial highlight),
``ring`` (annulus: the background shows through its hole), ``block`` (rotated
rectangle with an inset frame), ``triangle`` (strong linear shading), ``star``
(five points with a centre dot) and ``bar`` (capsule with stripes across). Each has a
colour range, but one instance in five takes any colour, and distractors (irregular
blobs, crescents, plus signs, arcs, lines) take category colours too, so colour alone
never names a category.

Annotations are exact by construction: every shape is rasterized once into a mask
that both paints the image and claims its pixels in an ``owner`` map, so later shapes
(objects or distractors) occlude earlier ones in both. An instance's ``bbox``,
``area`` and RLE ``segmentation`` come from its VISIBLE pixels; an instance left with
under 35% of its pixels, or under 30 px, is not annotated. In about one image in 20 a
cluster of small same-category objects is annotated as one ``iscrowd`` region, as in
COCO. Lighting, blur and sensor noise change colours only, never the masks.

Object sizes are drawn so that COCO's three area ranges (small < 32^2, medium, large
> 96^2, counted in image pixels) all hold many instances at 256x256.
Anything that changes what is drawn must bump ``synthetic_det.GENERATOR_VERSION``.
"""
from __future__ import annotations

import colorsys

import cv2
import numpy as np
from pycocotools import mask as mask_utils

DISC, RING, BLOCK, TRIANGLE, STAR, BAR = 1, 3, 5, 7, 9, 11
# Non-contiguous ids, as COCO's, so loaders must map them to class indices.
CATEGORIES = tuple({"id": cid, "name": name, "supercategory": "shape"} for cid, name in (
    (DISC, "disc"), (RING, "ring"), (BLOCK, "block"), (TRIANGLE, "triangle"), (STAR, "star"),
    (BAR, "bar")))
# (hue range in degrees or None for any, saturation range, value range) per category.
_STYLES = {DISC: ((0, 30), (0.6, 1.0), (0.6, 1.0)), RING: ((190, 235), (0.5, 1.0), (0.5, 1.0)),
           BLOCK: ((90, 150), (0.5, 1.0), (0.45, 0.95)), TRIANGLE: ((45, 65), (0.6, 1.0), (0.7, 1.0)),
           STAR: ((280, 330), (0.45, 1.0), (0.5, 1.0)), BAR: (None, (0.0, 0.15), (0.55, 0.95))}
OFF_PALETTE_PROB = 0.2
MIN_VISIBLE_FRAC, MIN_VISIBLE_PX = 0.35, 30
CROWD_PROB = 0.05
# Share of objects drawn small / medium / large, and the sqrt(area) range of each, in
# pixels at 256x256 (scaled with the image). Occlusion shrinks visible areas and drops
# large objects more often, so drawing 29/39/32 yields about 29/47/24 visible instances
# (measured over 300 images), close to the wanted 30/45/25.
_SIZE_PROBS = (0.29, 0.39, 0.32)
_SIZE_RANGES = ((7.0, 31.0), (34.0, 92.0), (100.0, 160.0))

Polys = list  # [(points (n, 2) float, fill value 0 or 1)], filled in order


def _ellipse(ax: float, ay: float, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([ax * np.cos(t), ay * np.sin(t)], 1)


def _shoelace(p: np.ndarray) -> float:
    return 0.5 * abs(float(np.dot(p[:, 0], np.roll(p[:, 1], 1)) - np.dot(p[:, 1], np.roll(p[:, 0], 1))))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _unit_shape(cid: int, rng: np.random.Generator) -> Polys:
    """Outline of a category at unit scale, centred on the origin."""
    if cid == DISC:
        return [(_ellipse(1.0, rng.uniform(0.85, 1.15)), 1)]
    if cid == RING:
        outer = _ellipse(1.0, rng.uniform(0.85, 1.15))
        return [(outer, 1), (outer * rng.uniform(0.45, 0.68), 0)]
    if cid == BLOCK:
        a = np.sqrt(_log_uniform(rng, 0.5, 2.0))
        return [(np.array([[-a, -1 / a], [a, -1 / a], [a, 1 / a], [-a, 1 / a]]) / 2, 1)]
    if cid == TRIANGLE:
        a, off = np.sqrt(_log_uniform(rng, 0.7, 1.4)), rng.uniform(-0.35, 0.35)
        return [(np.array([[-a / 2, 0.5 / a], [a / 2, 0.5 / a], [off * a, -0.5 / a]]), 1)]
    if cid == STAR:
        radii = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.4, 0.55))
        t = np.arange(10) * np.pi / 5
        return [(np.stack([radii * np.sin(t), -radii * np.cos(t) * rng.uniform(0.85, 1.15)], 1), 1)]
    # BAR: a capsule, half-length ``half`` between the centres of its round ends.
    half = rng.uniform(1.5, 5.0)
    t = np.linspace(-np.pi / 2, np.pi / 2, 12)
    right = np.stack([half + np.cos(t), np.sin(t)], 1)
    return [(np.concatenate([right, -right]), 1)]


def _distractor_shape(rng: np.random.Generator) -> Polys:
    """A shape of no category: irregular blob, crescent, plus sign or arc."""
    kind = int(rng.integers(4))
    if kind == 0:
        t = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 9))))
        r = rng.uniform(0.55, 1.0, t.size)
        return [(np.stack([r * np.cos(t), r * np.sin(t)], 1), 1)]
    if kind == 1:
        inner = _ellipse(rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0)) + (rng.uniform(0.3, 0.6), 0)
        return [(_ellipse(1.0, 1.0), 1), (inner, 0)]
    if kind == 2:
        a = rng.uniform(0.15, 0.3)
        arm = np.array([[-1, -a], [1, -a], [1, a], [-1, a]])
        return [(arm, 1), (arm[:, ::-1].copy(), 1)]
    t = np.linspace(0, rng.uniform(0.6, 1.4) * np.pi, 16)
    r0 = rng.uniform(0.6, 0.85)
    arc = np.stack([np.cos(t), np.sin(t)], 1)
    return [(np.concatenate([arc, arc[::-1] * r0]), 1)]


class Scene:
    """The float RGB image being painted and the ``owner`` map of its pixels.

    ``owner`` holds the instance index that painted each pixel last, -1 for background
    and distractors, so visible masks fall out of it at the end.
    """

    def __init__(self, img: np.ndarray):
        self.h, self.w = img.shape[:2]
        self.img = img
        self.owner = np.full((self.h, self.w), -1, np.int16)

    def place(self, polys: Polys, scale: float, angle: float, centre) -> tuple | None:
        """Rasterize ``polys`` scaled, rotated and moved to ``centre``.

        Returns:
            (x0, y0, local bool mask, full pixel count) with the mask unclipped by the
            image, or None when the shape has no pixel.
        """
        c, s = np.cos(angle), np.sin(angle)
        rot = np.array([[c, s], [-s, c]]) * scale
        pts = [(p @ rot + centre, v) for p, v in polys]
        allp = np.concatenate([p for p, _ in pts])
        x0, y0 = np.floor(allp.min(0)).astype(int) - 1
        x1, y1 = np.ceil(allp.max(0)).astype(int) + 2
        m = np.zeros((y1 - y0, x1 - x0), np.uint8)
        for p, v in pts:
            # shift=4: sub-pixel vertices, so small shapes keep their outline.
            cv2.fillPoly(m, [np.round((p - (x0, y0)) * 16).astype(np.int32)], int(v), cv2.LINE_8, 4)
        n = int(np.count_nonzero(m))
        return (int(x0), int(y0), m.astype(bool), n) if n else None

    def paint(self, shape: tuple, colours: np.ndarray, owner: int) -> None:
        """Copy ``colours`` (local h, w, 3) into the image where the shape's mask is."""
        x0, y0, m, _ = shape
        xa, ya = max(0, x0), max(0, y0)
        xb, yb = min(self.w, x0 + m.shape[1]), min(self.h, y0 + m.shape[0])
        if xa >= xb or ya >= yb:
            return
        lm = m[ya - y0:yb - y0, xa - x0:xb - x0]
        np.copyto(self.img[ya:yb, xa:xb], colours[ya - y0:yb - y0, xa - x0:xb - x0],
                  where=lm[..., None])
        self.owner[ya:yb, xa:xb][lm] = owner


def _colour(rng: np.random.Generator, style) -> np.ndarray:
    hue, sat, val = style
    if hue is None or rng.random() < OFF_PALETTE_PROB:
        hue, sat, val = (0, 360), (0.2, 1.0), (0.35, 1.0)
    rgb = colorsys.hsv_to_rgb(rng.uniform(*hue) / 360.0, rng.uniform(*sat), rng.uniform(*val))
    return np.asarray(rgb, np.float32) * 255


def _surface(rng: np.random.Generator, cid: int, shape: tuple, colour: np.ndarray,
             angle: float, scale: float) -> np.ndarray:
    """Local colours of an object: shading, category decoration and a dark outline."""
    x0, y0, m, _ = shape
    h, w = m.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    size = max(h, w, 2)
    if cid == DISC:  # a highlight up and to one side
        hx, hy = cx + rng.uniform(-0.35, 0.35) * w, cy - rng.uniform(0.1, 0.35) * h
        shade = 1.2 - 0.6 * np.sqrt((xx - hx) ** 2 + (yy - hy) ** 2) / size
    else:
        g = rng.uniform(0.3, 0.5) if cid == TRIANGLE else rng.uniform(0.0, 0.25)
        d = rng.uniform(0, 2 * np.pi)
        shade = 1 + g * ((xx - cx) * np.cos(d) + (yy - cy) * np.sin(d)) / size
    out = colour * shade[..., None]
    deco = np.zeros((h, w), np.uint8)
    if cid == BLOCK:  # inset frame, drawn from the mask's own outline shrunk
        pts = np.argwhere(m)[:, ::-1].astype(np.float32)
        hull = cv2.convexHull(pts)[:, 0]
        inset = (hull - (cx, cy)) * rng.uniform(0.55, 0.7) + (cx, cy)
        cv2.polylines(deco, [np.round(inset).astype(np.int32)], True, 1, max(1, round(size / 14)))
    elif cid == STAR:
        cv2.circle(deco, (round(cx), round(cy)), max(1, round(scale * 0.22)), 1, -1)
    elif cid == BAR:  # stripes across the long axis
        period = max(3.0, scale * rng.uniform(0.5, 0.8))
        along = (xx - cx) * np.cos(angle) - (yy - cy) * np.sin(angle)
        deco = ((along // (period / 2)) % 2 == 0).astype(np.uint8)
    if deco.any():
        tint = 0.55 if cid == BAR else 1.45
        out = np.where(deco[..., None].astype(bool), np.minimum(colour * tint + 20, 255), out)
    width = 1 if size < 40 else 2
    edge = m & ~cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=width).astype(bool)
    out[edge] = colour * 0.4
    return out


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Gradient, smooth noise, soft blobs and lines, blurred so that it stays behind."""
    c0, c1 = rng.uniform(20, 235, 3).astype(np.float32), rng.uniform(20, 235, 3).astype(np.float32)
    d = rng.uniform(0, 2 * np.pi)
    t = np.linspace(0, np.cos(d) ** 2, w, dtype=np.float32)[None, :] + \
        np.linspace(0, np.sin(d) ** 2, h, dtype=np.float32)[:, None]
    img = c0 + (c1 - c0) * t[..., None]
    cell = rng.uniform(12, 48)
    small = rng.standard_normal((int(h / cell) + 2, int(w / cell) + 2, 3)).astype(np.float32)
    img += rng.uniform(6, 22) * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    mean = (c0 + c1) / 2
    for _ in range(int(rng.integers(2, 8))):
        col = tuple(float(v) for v in np.clip(mean + rng.uniform(-70, 70, 3), 0, 255))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(6, w // 3)), int(rng.integers(6, h // 3)))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, col, -1)
    for _ in range(int(rng.integers(1, 5))):
        p, q = rng.integers(0, (w, h), 2), rng.integers(0, (w, h), 2)
        cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])),
                 tuple(float(v) for v in rng.uniform(0, 255, 3)), int(rng.integers(1, 4)))
    return cv2.GaussianBlur(img, (0, 0), rng.uniform(1.0, 2.5))


def _distractor(rng: np.random.Generator, scene: Scene, unit: float) -> None:
    """A non-category shape or a crisp line, drawn as background (owner -1)."""
    # Often a category's colour range: colour must not give objects away.
    if rng.random() < 0.4:
        style = _STYLES[CATEGORIES[int(rng.integers(6))]["id"]]
    else:
        style = (None, (0, 1), (0.2, 1))
    colour = _colour(rng, style)
    if rng.random() < 0.3:
        # Straight into image and owner map: a full-frame mask would cost more than it is worth.
        p, q = rng.integers(0, (scene.w, scene.h), 2), rng.integers(0, (scene.w, scene.h), 2)
        ends, thick = ((int(p[0]), int(p[1])), (int(q[0]), int(q[1]))), int(rng.integers(1, 4))
        cv2.line(scene.img, *ends, tuple(float(v) for v in colour), thick)
        cv2.line(scene.owner, *ends, -1, thick)
        return
    shape = scene.place(_distractor_shape(rng), _log_uniform(rng, 6, 45) * unit,
                        rng.uniform(0, 2 * np.pi), rng.uniform(0, (scene.w, scene.h)))
    if shape is None:
        return
    colours = np.broadcast_to(colour, shape[2].shape + (3,)).copy()
    if rng.random() < 0.5:  # outlines too, so an outline is no cue for an object
        edge = shape[2] & ~cv2.erode(shape[2].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        colours[edge] = colour * 0.4
    scene.paint(shape, colours, -1)


def _object(rng: np.random.Generator, scene: Scene, cid: int, owner: int, unit: float) -> int:
    """Draw one object of category ``cid``; returns its full pixel count (0: off image)."""
    bucket = int(rng.choice(3, p=_SIZE_PROBS))
    side = _log_uniform(rng, *_SIZE_RANGES[bucket]) * unit
    polys = _unit_shape(cid, rng)
    unit_area = _shoelace(polys[0][0]) - sum(_shoelace(p) for p, v in polys[1:] if v == 0)
    scale = side / np.sqrt(unit_area)
    centre = rng.uniform((0.12 * scene.w, 0.12 * scene.h), (0.88 * scene.w, 0.88 * scene.h))
    angle = rng.uniform(0, 2 * np.pi)
    shape = scene.place(polys, scale, angle, centre)
    if shape is None:
        return 0
    scene.paint(shape, _surface(rng, cid, shape, _colour(rng, _STYLES[cid]), angle, scale), owner)
    return shape[3]


def _crowd(rng: np.random.Generator, scene: Scene, cid: int, owner: int, unit: float) -> int:
    """A cluster of 10-25 small same-category objects under one owner (one annotation)."""
    centre = rng.uniform((0.2 * scene.w, 0.2 * scene.h), (0.8 * scene.w, 0.8 * scene.h))
    spread, base, total = rng.uniform(8, 22) * unit, _colour(rng, _STYLES[cid]), 0
    for _ in range(int(rng.integers(10, 26))):
        polys = _unit_shape(cid, rng)
        scale = rng.uniform(3.0, 6.0) * unit / np.sqrt(_shoelace(polys[0][0]))
        angle = rng.uniform(0, 2 * np.pi)
        shape = scene.place(polys, scale, angle, centre + rng.normal(0, spread, 2))
        if shape is not None:
            colour = np.clip(base + rng.uniform(-25, 25, 3), 0, 255).astype(np.float32)
            scene.paint(shape, _surface(rng, cid, shape, colour, angle, scale), owner)
            total += shape[3]
    return total


def _finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Lighting gradient, colour cast, slight blur and sensor noise; uint8 RGB."""
    h, w = img.shape[:2]
    x, y = np.linspace(-1, 1, w, dtype=np.float32), np.linspace(-1, 1, h, dtype=np.float32)
    light = 1 + rng.uniform(-0.2, 0.2) * x[None, :] + rng.uniform(-0.2, 0.2) * y[:, None]
    gain = (rng.uniform(0.7, 1.2) * rng.uniform(0.92, 1.08, 3)).astype(np.float32)
    img = img * light[..., None] * gain + np.float32(rng.uniform(-12, 12))
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.0))
    # Uniform noise of the drawn std: a quarter of the cost of Gaussian draws, and the
    # noise's distribution does not matter here, its strength does.
    std = np.float32(rng.uniform(1.5, 5.0) * np.sqrt(12.0))
    img += std * (rng.random(img.shape, dtype=np.float32) - np.float32(0.5))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _annotate(owner: np.ndarray, drawn: list[tuple[int, int, bool]]) -> list[dict]:
    """COCO annotations (without ids) of the instances still visible enough."""
    h, w = owner.shape
    anns = []
    for k, (cid, full, crowd) in enumerate(drawn):
        vis = owner == k
        n = int(np.count_nonzero(vis))
        if n < MIN_VISIBLE_PX or (not crowd and n < MIN_VISIBLE_FRAC * full):
            continue
        ys, xs = np.flatnonzero(vis.any(1)), np.flatnonzero(vis.any(0))
        rle = mask_utils.encode(np.asfortranarray(vis.astype(np.uint8)))
        anns.append({"category_id": cid, "iscrowd": int(crowd), "area": float(n),
                     "bbox": [float(xs[0]), float(ys[0]), float(xs[-1] - xs[0] + 1),
                              float(ys[-1] - ys[0] + 1)],
                     "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")}})
    return anns


def render_image(rng: np.random.Generator, image_size: tuple[int, int]) -> tuple[np.ndarray, list[dict]]:
    """Draw one image and its annotations.

    Args:
        rng: the image's own generator (output depends on nothing else).
        image_size: (H, W).

    Returns:
        (uint8 HxWx3 RGB image, annotations with ``category_id``, ``iscrowd``, ``area``,
        ``bbox`` [x, y, w, h] and RLE ``segmentation``, without ``id``/``image_id``).
    """
    h, w = (int(v) for v in image_size)
    unit = np.sqrt(h * w) / 256.0  # sizes are tuned at 256x256 and scale with the image
    scene = Scene(_background(rng, h, w))
    for _ in range(int(rng.integers(1, 6))):
        _distractor(rng, scene, unit)
    drawn: list[tuple[int, int, bool]] = []
    n_obj = int(rng.integers(1, 9))
    crowd_at = int(rng.integers(n_obj + 1)) if rng.random() < CROWD_PROB else -1
    for k in range(n_obj + 1):
        if k == crowd_at:
            cid = CATEGORIES[int(rng.integers(6))]["id"]
            drawn.append((cid, _crowd(rng, scene, cid, len(drawn), unit), True))
        if k < n_obj:
            cid = CATEGORIES[int(rng.integers(6))]["id"]
            drawn.append((cid, _object(rng, scene, cid, len(drawn), unit), False))
    for _ in range(int(rng.integers(0, 3))):  # in front: occludes objects too
        _distractor(rng, scene, unit)
    return _finish(rng, scene.img), _annotate(scene.owner, drawn)
