"""Rendering of synthetic street scenes and their Cityscapes ``labelIds`` masks.

A scene is a street seen from a car: sky, a skyline of buildings, background trees, a
road converging to a vanishing point with lane markings, sidewalks in perspective
tiles, terrain or plazas beside them, building facades and walls or fences along the
street, shadows, then objects from far to near (:mod:`.synthetic_seg_objects`): poles
with signs and lights, trees, people, cars, trucks, buses, trams, bicycles and
motorcycles with riders, bins; last the ego car's hood. Global lighting, colour casts
and sensor noise come on top.

Labels are exact by construction: every shape is rasterized once into a mask, and that
mask both paints the image and writes the label, so the last shape painted owns each
pixel in both. Lighting and noise change colours only, never shapes. With
``flat=True`` every shape is painted in its class colour (:data:`FLAT_COLOURS`) and no
lighting is applied, which the tests use to check that correspondence.

Sizes follow a pinhole camera 1.5 m above the ground: an object standing on image row
``y`` spans ``metres * (y - horizon) / 1.5`` pixels, so near things are large.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

# Anything that changes what is drawn must bump synthetic_seg.GENERATOR_VERSION, so that
# datasets on disk are regenerated instead of silently reused.

CAMERA_HEIGHT = 1.5  # metres; sets object sizes relative to their row below the horizon

# Cityscapes labelIds drawn by the generator.
ROAD, SIDEWALK, PARKING, BUILDING, WALL, FENCE = 7, 8, 9, 11, 12, 13
POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY = 17, 19, 20, 21, 22, 23
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = 24, 25, 26, 27, 28, 31, 32, 33
EGO_VEHICLE, STATIC = 1, 4  # train id 255: ignored in training and evaluation

# Class colours of the flat rendering (Cityscapes' own, so a flat image reads as a
# colour-coded label); each drawn id gets a distinct one.
FLAT_COLOURS = {
    EGO_VEHICLE: (0, 0, 0), STATIC: (111, 74, 0), ROAD: (128, 64, 128),
    SIDEWALK: (244, 35, 232), PARKING: (250, 170, 160), BUILDING: (70, 70, 70),
    WALL: (102, 102, 156), FENCE: (190, 153, 153), POLE: (153, 153, 153),
    LIGHT: (250, 170, 30), SIGN: (220, 220, 0), VEGETATION: (107, 142, 35),
    TERRAIN: (152, 251, 152), SKY: (70, 130, 180), PERSON: (220, 20, 60),
    RIDER: (255, 0, 0), CAR: (0, 0, 142), TRUCK: (0, 0, 70), BUS: (0, 60, 100),
    TRAIN: (0, 80, 100), MOTORCYCLE: (0, 0, 230), BICYCLE: (119, 11, 32),
}
GROUND_IDS = (ROAD, SIDEWALK, PARKING, TERRAIN)

# A texture is made for the painted box: (height, width, x0, y0) -> HxWx3 float32.
Texture = Callable[[int, int, int, int], np.ndarray]
Region = tuple[slice, slice, np.ndarray]


class Canvas:
    """An RGB float image and its labelIds mask, painted together through shape masks."""

    def __init__(self, h: int, w: int, flat: bool = False):
        self.h, self.w, self.flat = h, w, flat
        self.img = np.zeros((h, w, 3), np.float32)
        self.lab = np.zeros((h, w), np.uint8)

    def _region(self, x0: float, y0: float, x1: float, y1: float,
                draw: Callable[[np.ndarray, int, int], None]) -> Region | None:
        """Rasterize a shape inside its clipped bounding box into a boolean mask."""
        xa, ya = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        xb, yb = min(self.w, int(np.ceil(x1)) + 1), min(self.h, int(np.ceil(y1)) + 1)
        if xa >= xb or ya >= yb:
            return None
        m = np.zeros((yb - ya, xb - xa), np.uint8)
        draw(m, xa, ya)
        return slice(ya, yb), slice(xa, xb), m.astype(bool)

    def poly(self, pts) -> Region | None:
        """Filled polygon (n, 2) of x, y points."""
        p = np.asarray(pts, np.float64)
        return self._region(*p.min(0), *p.max(0), lambda m, x, y: cv2.fillPoly(
            m, [np.round(p - (x, y)).astype(np.int32)], 1))

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> Region | None:
        """Axis-aligned box, corners included."""
        return self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])

    def ellipse(self, cx: float, cy: float, ax: float, ay: float, angle: float = 0.0) -> Region | None:
        """Filled ellipse with half-axes ``ax``, ``ay`` rotated by ``angle`` degrees."""
        r = max(ax, ay) + 1
        return self._region(cx - r, cy - r, cx + r, cy + r, lambda m, x, y: cv2.ellipse(
            m, (round(cx - x), round(cy - y)), (max(0, round(ax)), max(0, round(ay))),
            angle, 0, 360, 1, -1))

    def line(self, p, q, thickness: float) -> Region | None:
        """Thick segment from ``p`` to ``q``."""
        t = max(1, round(thickness))
        lo, hi = np.minimum(p, q) - t, np.maximum(p, q) + t
        return self._region(*lo, *hi, lambda m, x, y: cv2.line(
            m, (round(p[0] - x), round(p[1] - y)), (round(q[0] - x), round(q[1] - y)), 1, t))

    def ring(self, cx: float, cy: float, r: float, thickness: float) -> Region | None:
        """Circle outline (a wheel)."""
        t, rr = max(1, round(thickness)), max(1, round(r))
        return self._region(cx - rr - t, cy - rr - t, cx + rr + t, cy + rr + t, lambda m, x, y:
                            cv2.circle(m, (round(cx - x), round(cy - y)), rr, 1, t))

    def paint(self, reg: Region | None, label_id: int, tex: Texture | tuple) -> None:
        """Paint ``reg`` with ``tex`` (a colour or a Texture) and label it ``label_id``."""
        if reg is None:
            return
        ys, xs, m = reg
        if callable(tex):
            # Made even in flat mode, so that flat and textured scenes consume the
            # generator alike and share their geometry.
            colours = tex(m.shape[0], m.shape[1], xs.start, ys.start)
        else:
            colours = np.asarray(tex, np.float32)
        if self.flat:
            colours = np.asarray(FLAT_COLOURS[label_id], np.float32)
        # Slices are views: copyto writes through to the canvas, without gathering.
        np.copyto(self.img[ys, xs], colours, where=m[..., None])
        np.copyto(self.lab[ys, xs], np.uint8(label_id), where=m)

    def shade(self, reg: Region | None, factor: float, ids=GROUND_IDS) -> None:
        """Darken already painted pixels of classes ``ids`` inside ``reg`` (a shadow)."""
        if reg is None or self.flat:
            return
        ys, xs, m = reg
        m = m & np.isin(self.lab[ys, xs], ids)
        self.img[ys, xs][m] *= factor


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """(h, w) float32 noise of unit scale varying over about ``cell`` pixels."""
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    small = rng.standard_normal((gh, gw), dtype=np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def texture(rng: np.random.Generator, base, low: float = 0.0, high: float = 0.0,
            cell: float = 12.0, chroma: float = 0.0) -> Texture:
    """A colour with low-frequency blotches (``low``) and per-pixel grain (``high``).

    ``chroma`` adds independent low-frequency variation per channel (foliage, soil).
    """
    base = np.asarray(base, np.float32)

    def make(h: int, w: int, x0: int, y0: int) -> np.ndarray:
        out = np.empty((h, w, 3), np.float32)
        out[:] = base
        if low:
            out += low * smooth_noise(rng, h, w, cell)[..., None]
        if chroma:
            out += chroma * np.stack([smooth_noise(rng, h, w, cell) for _ in range(3)], -1)
        if high:
            out += high * rng.standard_normal((h, w, 1), dtype=np.float32)
        return out

    return make


def jitter(rng: np.random.Generator, rgb, amount: float) -> tuple[float, float, float]:
    """``rgb`` with each channel moved by up to ``amount``."""
    c = np.asarray(rgb, np.float64) + rng.uniform(-amount, amount, 3)
    return tuple(float(v) for v in np.clip(c, 0, 255))


def windows_texture(rng: np.random.Generator, wall, glass, size: tuple[int, int],
                    cell: tuple[float, float], frac: tuple[float, float]) -> np.ndarray:
    """A frontal facade (h, w, 3): ``wall`` with a grid of ``glass`` windows.

    ``cell`` is the (x, y) pitch of the grid in pixels, ``frac`` the share of it a window
    fills; some windows are lit or shaded differently.
    """
    h, w = size
    tex = texture(rng, wall, low=10, high=4, cell=20)(h, w, 0, 0)
    ox, oy = rng.uniform(0, cell[0]), rng.uniform(cell[1] * 0.3, cell[1])
    cols = ((np.arange(w) + ox) % cell[0]) < cell[0] * frac[0]
    rows = ((np.arange(h) - oy) % cell[1]) < cell[1] * frac[1]
    rows &= np.arange(h) > oy  # a plain band under the roof
    gx, gy = int(w / cell[0]) + 2, int(h / cell[1]) + 2
    vary = rng.uniform(-35, 35, (gy, gx, 1)).astype(np.float32)
    ri = ((np.arange(h) - oy) // cell[1]).astype(int) % gy
    ci = ((np.arange(w) + ox) // cell[0]).astype(int) % gx
    per_window = vary[ri[:, None], ci[None, :]]
    win = rows[:, None] & cols[None, :]
    tex[win] = (np.asarray(glass, np.float32) + per_window)[win]
    return tex


@dataclass
class Street:
    """Scene geometry: horizon row, vanishing point and the lines through it.

    Every line along the street runs from the vanishing point ``(vx, yh)`` to an
    x position on the bottom row; ``x_at`` gives its x on any row below the horizon.
    """

    h: int
    w: int
    yh: float
    vx: float
    road_l: float
    road_r: float
    out_l: float
    out_r: float
    focal: float

    def x_at(self, bottom_x: float, y):
        """x of the line through the vanishing point and ``(bottom_x, h)`` at row ``y``."""
        t = (np.asarray(y, np.float64) - self.yh) / (self.h - self.yh)
        return self.vx + (bottom_x - self.vx) * t

    def px(self, metres: float, y: float) -> float:
        """Pixels spanned by ``metres`` at the depth of ground row ``y``."""
        return metres * max(y - self.yh, 0.0) / CAMERA_HEIGHT

    def depth(self, y: float) -> float:
        """Distance in metres of ground row ``y`` (below the horizon)."""
        return self.focal * CAMERA_HEIGHT / max(y - self.yh, 1e-3)

    def toward_v(self, pts, ratio: float) -> np.ndarray:
        """Points moved toward the vanishing point as if ``1/ratio`` times farther."""
        p = np.asarray(pts, np.float64)
        return np.array([self.vx, self.yh]) + (p - (self.vx, self.yh)) * ratio


def make_street(rng: np.random.Generator, h: int, w: int) -> Street:
    """Random camera pose and street widths."""
    yh = h * rng.uniform(0.36, 0.5)
    vx = w * rng.uniform(0.38, 0.62)
    centre = vx + w * rng.uniform(-0.25, 0.25)  # the camera's lateral place in the lane
    half = w * rng.uniform(0.3, 0.6)
    return Street(h=h, w=w, yh=yh, vx=vx, road_l=centre - half, road_r=centre + half,
                  out_l=centre - half - w * rng.uniform(0.25, 0.7),
                  out_r=centre + half + w * rng.uniform(0.25, 0.7),
                  focal=w * rng.uniform(0.9, 1.2))


def finish(c: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Lighting, colour cast, vignetting and sensor noise; returns uint8 RGB."""
    if c.flat:
        return c.img.astype(np.uint8)
    gain = rng.uniform(0.6, 1.25) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    x = np.linspace(-1, 1, c.w, dtype=np.float32)
    y = np.linspace(-1, 1, c.h, dtype=np.float32)
    light = 1 + rng.uniform(-0.15, 0.15) * x[None, :] + rng.uniform(-0.1, 0.1) * y[:, None]
    light -= rng.uniform(0.0, 0.2) * (x[None, :] ** 2 + y[:, None] ** 2) / 2  # vignetting
    img = c.img * light[..., None] * gain + rng.uniform(-12, 12)
    img += rng.uniform(1.5, 5.0) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
