"""Objects of the synthetic street scenes: vehicles, people, poles, signs, trees, bins.

Objects stand on ground rows and are sized in metres through the camera of
:mod:`hrnet_edge.data.synthetic_seg_render`; they are drawn far to near, so nearer
ones occlude farther ones in image and label alike. Vehicles are boxes in
perspective: the face toward the camera plus the side that shows toward the
vanishing point, with windows, lights and wheels in their own class.
"""
from __future__ import annotations

import cv2
import numpy as np

from hrnet_edge.data.synthetic_seg_render import (BICYCLE, BUS, CAR, EGO_VEHICLE, LIGHT,
                                                  MOTORCYCLE, PERSON, POLE, RIDER, SIGN, STATIC,
                                                  TRAIN, TRUCK, VEGETATION, Canvas, Street,
                                                  jitter, smooth_noise, texture)

_CAR_COLOURS = ((230, 230, 230), (30, 30, 35), (160, 160, 165), (150, 25, 25), (25, 45, 120),
                (60, 90, 60), (200, 180, 70), (100, 100, 110), (120, 70, 40))
_CLOTHES = ((40, 40, 45), (200, 200, 195), (30, 50, 100), (140, 30, 30), (90, 90, 95),
            (180, 150, 100), (60, 90, 60), (200, 120, 40))
_SKIN = ((230, 190, 160), (200, 150, 110), (140, 95, 65), (90, 60, 40))
_DARK = (28, 28, 30)


def _m2px(g: Street, yg: float) -> float:
    return g.px(1.0, yg)


def crown(c: Canvas, rng: np.random.Generator, cx: float, cy: float, r: float) -> None:
    """A tree crown: a cluster of leafy ellipses (vegetation)."""
    tex = texture(rng, jitter(rng, (70, 105, 45), 25), low=15, high=14, cell=max(2.0, r / 4),
                  chroma=8)
    for _ in range(int(rng.integers(3, 8))):
        ox, oy = rng.normal(0, r * 0.45, 2)
        rx = r * rng.uniform(0.45, 0.8)
        c.paint(c.ellipse(cx + ox, cy + oy * 0.7, rx, rx * rng.uniform(0.7, 1.0),
                          rng.uniform(0, 180)), VEGETATION, tex)


def box3d(c: Canvas, g: Street, xc: float, yg: float, size: tuple[float, float, float],
          lift: float, lid: int, face_tex, side_tex, offset: float = 0.0) -> np.ndarray | None:
    """A box standing on ground point (xc, yg), extending away from the camera.

    Args:
        size: (width, height, length) in metres.
        lift: height of its bottom above the ground, metres.
        offset: extra distance of its near face, metres.

    Returns:
        The near face's corners (top-left, top-right, bottom-right, bottom-left), or
        None when the ground point is at or above the horizon.
    """
    if yg - g.yh < 0.5:
        return None
    width, height, length = size
    m, z = _m2px(g, yg), g.depth(yg)
    face = np.array([(xc - width / 2 * m, yg - (lift + height) * m),
                     (xc + width / 2 * m, yg - (lift + height) * m),
                     (xc + width / 2 * m, yg - lift * m), (xc - width / 2 * m, yg - lift * m)])
    face = g.toward_v(face, z / (z + offset))
    far = g.toward_v(face, (z + offset) / (z + offset + length))
    hull = cv2.convexHull(np.concatenate([face, far]).astype(np.float32))[:, 0]
    c.paint(c.poly(hull), lid, side_tex)
    c.paint(c.poly(face), lid, face_tex)
    return face


def _inset(face: np.ndarray, fx0: float, fy0: float, fx1: float, fy1: float) -> np.ndarray:
    """Sub-rectangle of an upright face, in fractions of its width and height (from top-left)."""
    (x0, y0), (x1, _), (_, y1) = face[0], face[1], face[2]
    return np.array([(x0 + (x1 - x0) * fx0, y0 + (y1 - y0) * fy0),
                     (x0 + (x1 - x0) * fx1, y0 + (y1 - y0) * fy0),
                     (x0 + (x1 - x0) * fx1, y0 + (y1 - y0) * fy1),
                     (x0 + (x1 - x0) * fx0, y0 + (y1 - y0) * fy1)])


def _wheels(c: Canvas, g: Street, xc: float, yg: float, width: float, lid: int, h: float = 0.5) -> None:
    m = _m2px(g, yg)
    for s in (-1, 1):
        x = xc + s * (width / 2 - 0.2) * m
        c.paint(c.rect(x - 0.14 * m, yg - h * m, x + 0.14 * m, yg), lid, _DARK)


def _side_band(c: Canvas, g: Street, face: np.ndarray, length: float, yg: float,
               lid: int, colour, rows=(0.12, 0.45)) -> None:
    """Window band along the side that shows toward the vanishing point."""
    edge = 1 if (face[0, 0] + face[1, 0]) / 2 < g.vx else 0  # the face's column nearer V
    x = face[edge, 0]
    y0 = face[0, 1] + (face[2, 1] - face[0, 1]) * rows[0]
    y1 = face[0, 1] + (face[2, 1] - face[0, 1]) * rows[1]
    near = np.array([(x, y0), (x, y1)])
    z = g.depth(yg)
    far = g.toward_v(near, z / (z + length * 0.92))
    c.paint(c.poly([near[0], far[0], far[1], near[1]]), lid, colour)


def _car(c: Canvas, rng: np.random.Generator, g: Street, xc: float, yg: float) -> None:
    colour = jitter(rng, _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))], 15)
    width, height = rng.uniform(1.65, 1.95), rng.uniform(1.35, 1.65)
    body_h, length = height * 0.55, rng.uniform(3.8, 4.8)
    face_tex = texture(rng, colour, low=6, high=3, cell=6)
    side_tex = texture(rng, tuple(v * 0.72 for v in colour), low=8, high=3, cell=6)
    _wheels(c, g, xc, yg, width, CAR)
    body = box3d(c, g, xc, yg, (width, body_h, length), 0.2, CAR, face_tex, side_tex)
    if body is None:
        return
    cabin = box3d(c, g, xc, yg, (width * 0.84, height - body_h - 0.2, length * 0.5), 0.2 + body_h,
                  CAR, face_tex, side_tex, offset=length * 0.15)
    glass = jitter(rng, (45, 55, 65), 15)
    c.paint(c.poly(_inset(cabin, 0.1, 0.12, 0.9, 0.92)), CAR, glass)
    _side_band(c, g, cabin, length * 0.5, yg, CAR, glass, rows=(0.12, 0.9))
    lamp = (200, 30, 25) if rng.random() < 0.7 else (235, 230, 200)  # rear or front view
    for fx in (0.03, 0.83):
        c.paint(c.poly(_inset(body, fx, 0.12, fx + 0.14, 0.35)), CAR, lamp)
    c.paint(c.poly(_inset(body, 0.38, 0.5, 0.62, 0.72)), CAR, (220, 220, 215))  # plate


def _big_vehicle(c: Canvas, rng: np.random.Generator, g: Street, xc: float, yg: float,
                 lid: int) -> None:
    """Truck (plain cargo box), bus (window bands) or tram (long, with a pantograph)."""
    spec = {TRUCK: ((2.45, 3.6), (3.2, 4.0), (6, 10), ((235, 235, 230), (40, 60, 140), (150, 40, 30))),
            BUS: ((2.5, 2.55), (3.0, 3.3), (11, 13), ((220, 190, 40), (200, 40, 40), (40, 90, 170))),
            TRAIN: ((2.6, 2.65), (3.3, 3.5), (25, 35), ((240, 220, 60), (220, 220, 215), (180, 30, 30)))}
    wr, hr, lr, colours = spec[lid]
    width, height, length = rng.uniform(*wr), rng.uniform(*hr), rng.uniform(*lr)
    colour = jitter(rng, colours[rng.integers(3)], 20)
    _wheels(c, g, xc, yg, width, lid, h=0.6)
    face = box3d(c, g, xc, yg, (width, height, length), 0.35, lid,
                 texture(rng, colour, low=6, high=3, cell=8),
                 texture(rng, tuple(v * 0.75 for v in colour), low=8, high=3, cell=8))
    if face is None:
        return
    glass = jitter(rng, (40, 50, 60), 12)
    if lid == TRUCK:
        c.paint(c.line(*_inset(face, 0.5, 0.05, 0.5, 0.95)[[0, 3]], max(1.0, 0.04 * _m2px(g, yg))),
                lid, tuple(v * 0.5 for v in colour))
        return
    _side_band(c, g, face, length, yg, lid, glass)
    c.paint(c.poly(_inset(face, 0.08, 0.1, 0.92, 0.5)), lid, glass)
    if lid == TRAIN:
        m, top = _m2px(g, yg), (face[0] + face[1]) / 2
        for s in (-1, 1):
            c.paint(c.line(top, top + (s * 0.5 * m, -0.8 * m), max(1.0, 0.06 * m)), lid, _DARK)


def _figure(c: Canvas, rng: np.random.Generator, pts: dict, m: float, lid: int) -> None:
    """A person from joint points (image pixels): legs, torso, arms, head."""
    shirt = jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))], 20)
    legs = jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))], 20)
    skin = jitter(rng, _SKIN[rng.integers(len(_SKIN))], 10)
    for knee, foot in (("knee_l", "foot_l"), ("knee_r", "foot_r")):
        c.paint(c.line(pts["hip"], pts[knee], 0.16 * m), lid, legs)
        c.paint(c.line(pts[knee], pts[foot], 0.13 * m), lid, legs)
    c.paint(c.line(pts["hip"], pts["neck"], 0.36 * m), lid, shirt)
    for hand in ("hand_l", "hand_r"):
        c.paint(c.line(pts["neck"], pts[hand], 0.1 * m), lid, shirt)
    hx, hy = pts["head"]
    c.paint(c.ellipse(hx, hy, 0.1 * m, 0.12 * m), lid, skin)
    c.paint(c.ellipse(hx, hy - 0.05 * m, 0.1 * m, 0.07 * m), lid, jitter(rng, (50, 35, 25), 20))


def _person(c: Canvas, rng: np.random.Generator, g: Street, x: float, yg: float) -> None:
    m = _m2px(g, yg)
    tall = rng.uniform(1.55, 1.95)
    if tall * m < 6:
        return  # too small to draw a figure
    f = tall / 1.75
    stride, swing = rng.uniform(-0.3, 0.3), rng.uniform(-0.25, 0.25)

    def at(dx, h):
        return (x + dx * m, yg - h * f * m)

    pts = {"hip": at(0, 0.9), "neck": at(0, 1.42), "head": at(0, 1.6),
           "knee_l": at(stride * 0.5, 0.48), "foot_l": at(stride, 0.04),
           "knee_r": at(-stride * 0.5, 0.48), "foot_r": at(-stride, 0.04),
           "hand_l": at(0.2 + swing, 0.8), "hand_r": at(-0.2 - swing, 0.8)}
    _figure(c, rng, pts, m * f, PERSON)


def _bicycle(c: Canvas, rng: np.random.Generator, g: Street, x: float, yg: float) -> None:
    """Side view bicycle, with a rider (rider class) 70% of the time."""
    m, d = _m2px(g, yg), rng.choice([-1.0, 1.0])
    if m < 4:
        return

    def at(mx, my):
        return np.array((x + d * mx * m, yg - my * m))

    colour = jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))], 30)
    rear, front, crank, seat, head, bar = (at(-0.52, 0.34), at(0.52, 0.34), at(-0.05, 0.3),
                                           at(-0.2, 0.85), at(0.38, 0.85), at(0.34, 1.0))
    for p in (rear, front):
        c.paint(c.ring(*p, 0.32 * m, 0.05 * m), BICYCLE, _DARK)
    for p, q in ((rear, crank), (crank, seat), (seat, rear), (seat, head), (crank, head),
                 (head, front), (head, bar)):
        c.paint(c.line(p, q, 0.045 * m), BICYCLE, colour)
    if rng.random() < 0.7:
        pedal = crank + (rng.uniform(-0.15, 0.15) * m, 0)
        pts = {"hip": at(-0.2, 0.95), "neck": at(0.05, 1.5), "head": at(0.12, 1.68),
               "knee_l": at(0.15, 0.65), "foot_l": pedal, "knee_r": at(0.1, 0.6),
               "foot_r": pedal, "hand_l": bar, "hand_r": bar}
        _figure(c, rng, pts, m, RIDER)


def _motorcycle(c: Canvas, rng: np.random.Generator, g: Street, x: float, yg: float) -> None:
    """Rear view motorcycle with its rider."""
    m = _m2px(g, yg)
    colour = jitter(rng, _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))], 20)
    c.paint(c.rect(x - 0.08 * m, yg - 0.62 * m, x + 0.08 * m, yg), MOTORCYCLE, _DARK)
    c.paint(c.ellipse(x, yg - 0.75 * m, 0.32 * m, 0.22 * m), MOTORCYCLE, colour)
    c.paint(c.rect(x - 0.42 * m, yg - 1.08 * m, x + 0.42 * m, yg - 1.02 * m), MOTORCYCLE, _DARK)
    pts = {"hip": (x, yg - 0.95 * m), "neck": (x, yg - 1.5 * m), "head": (x, yg - 1.68 * m),
           "knee_l": (x + 0.25 * m, yg - 0.8 * m), "foot_l": (x + 0.2 * m, yg - 0.4 * m),
           "knee_r": (x - 0.25 * m, yg - 0.8 * m), "foot_r": (x - 0.2 * m, yg - 0.4 * m),
           "hand_l": (x + 0.4 * m, yg - 1.05 * m), "hand_r": (x - 0.4 * m, yg - 1.05 * m)}
    _figure(c, rng, pts, m, RIDER)


def _sign(c: Canvas, rng: np.random.Generator, x: float, y: float, s: float) -> None:
    """A sign face of size ``s`` pixels centred at (x, y): disc, triangle, square or back."""
    kind = rng.integers(4)
    if kind == 0:
        c.paint(c.ellipse(x, y, s / 2, s / 2), SIGN, jitter(rng, (200, 30, 30), 20))
        c.paint(c.ellipse(x, y, s * 0.36, s * 0.36), SIGN,
                jitter(rng, (235, 235, 235) if rng.random() < 0.6 else (30, 80, 180), 15))
    elif kind == 1:
        tri = np.array([(x, y - s / 2), (x + s / 2, y + s * 0.4), (x - s / 2, y + s * 0.4)])
        c.paint(c.poly(tri), SIGN, jitter(rng, (200, 30, 30), 20))
        c.paint(c.poly((tri - (x, y)) * 0.6 + (x, y + s * 0.05)), SIGN, (235, 235, 230))
    elif kind == 2:
        colour = ((30, 80, 180), (30, 120, 60), (235, 235, 230), (240, 200, 40))[rng.integers(4)]
        c.paint(c.rect(x - s / 2, y - s / 2, x + s / 2, y + s / 2), SIGN, jitter(rng, colour, 15))
    else:  # seen from behind: a plain grey plate
        c.paint(c.ellipse(x, y, s / 2, s / 2), SIGN, jitter(rng, (140, 140, 140), 20))


def _pole(c: Canvas, rng: np.random.Generator, g: Street, x: float, yg: float) -> None:
    """Pole, 4-7 m, sometimes carrying a sign (mid height) and a traffic light (top)."""
    m = _m2px(g, yg)
    tall = rng.uniform(4, 7)
    top = yg - tall * m
    c.paint(c.line((x, yg), (x, top), max(1.0, 0.16 * m)), POLE, jitter(rng, (115, 115, 110), 30))
    if rng.random() < 0.45:
        _sign(c, rng, x, yg - rng.uniform(2.0, 3.0) * m, rng.uniform(0.5, 0.9) * m)
    if rng.random() < 0.3:
        c.paint(c.rect(x - 0.18 * m, top, x + 0.18 * m, top + 0.95 * m), LIGHT,
                jitter(rng, (40, 40, 38), 10))
        lit = rng.integers(3)
        for k, colour in enumerate(((230, 40, 30), (240, 170, 20), (40, 220, 90))):
            shade = colour if k == lit else tuple(v * 0.3 for v in colour)
            c.paint(c.ellipse(x, top + (0.17 + 0.3 * k) * m, 0.11 * m, 0.11 * m), LIGHT, shade)


def _tree(c: Canvas, rng: np.random.Generator, g: Street, x: float, yg: float) -> None:
    m = _m2px(g, yg)
    top = yg - rng.uniform(2.5, 4.5) * m
    c.paint(c.line((x, yg), (x, top), max(1.0, 0.25 * m)), VEGETATION, jitter(rng, (85, 65, 45), 15))
    crown(c, rng, x, top - 0.5 * m, rng.uniform(1.5, 3.0) * m)


def _bin(c: Canvas, rng: np.random.Generator, g: Street, x: float, yg: float) -> None:
    colour = jitter(rng, ((40, 90, 50), (110, 110, 110), (200, 120, 30))[rng.integers(3)], 15)
    box3d(c, g, x, yg, (0.6, 1.0, 0.6), 0.0, STATIC, colour, tuple(v * 0.75 for v in colour))


def _ego_hood(c: Canvas, rng: np.random.Generator) -> None:
    """The camera car's bonnet at the image bottom (ignored in evaluation)."""
    hh = c.h * rng.uniform(0.05, 0.12)
    cx, ax = c.w * rng.uniform(0.4, 0.6), c.w * rng.uniform(0.6, 0.9)
    base = np.asarray(jitter(rng, _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))], 10), np.float32)

    def make(h, w, x0, y0):
        glare = np.maximum(smooth_noise(rng, h, w, 30), 0)[..., None]
        return base * 0.7 + 40 * glare

    c.paint(c.ellipse(cx, c.h + hh * 0.3, ax, hh * 1.3), EGO_VEHICLE, make)


def _ground_point(rng: np.random.Generator, g: Street, lateral: tuple[float, float],
                  side: str) -> tuple[float, float]:
    """A random ground point: ``lateral`` is the fraction across the road (``side``
    "road") or across a sidewalk from the curb outward ("left"/"right")."""
    yg = g.yh + (g.h - g.yh) * rng.uniform(0.2, 1.08) ** 2
    f = rng.uniform(*lateral)
    if side == "road":
        bottom = g.road_l + (g.road_r - g.road_l) * f
    elif side == "left":
        bottom = g.road_l + (g.out_l - g.road_l) * f
    else:
        bottom = g.road_r + (g.out_r - g.road_r) * f
    return float(g.x_at(bottom, yg)), yg


def add_objects(c: Canvas, rng: np.random.Generator, g: Street) -> None:
    """Place and draw all objects far to near, then the ego car's hood."""
    items = []

    def put(draw, lateral, side, *extra):
        x, y = _ground_point(rng, g, lateral, side)
        items.append((y, x, draw, extra))

    def sidewalk():
        return "left" if rng.random() < 0.5 else "right"

    for _ in range(int(rng.integers(1, 8))):
        if rng.random() < 0.6:
            put(_car, (0.1, 0.9), "road")
        else:  # parked along a curb
            put(_car, (0.05, 0.12) if rng.random() < 0.5 else (0.88, 0.95), "road")
    for lid, p in ((TRUCK, 0.25), (BUS, 0.2), (TRAIN, 0.06)):
        if rng.random() < p:
            put(_big_vehicle, (0.15, 0.85), "road", lid)
    for _ in range(int(rng.integers(0, 9))):
        put(_person, (0.1, 0.9), sidewalk() if rng.random() < 0.85 else "road")
    for _ in range(int(rng.integers(0, 3))):
        put(_bicycle, (0.05, 0.95), "road" if rng.random() < 0.5 else sidewalk())
    if rng.random() < 0.25:
        put(_motorcycle, (0.2, 0.8), "road")
    for _ in range(int(rng.integers(1, 6))):
        put(_pole, (0.03, 0.15) if rng.random() < 0.7 else (0.85, 0.97), sidewalk())
    for _ in range(int(rng.integers(0, 4))):
        put(_tree, (0.05, 0.2), sidewalk())
    for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.4 else 0):
        put(_bin, (0.1, 0.9), sidewalk())
    for y, x, draw, extra in sorted(items, key=lambda it: it[0]):
        draw(c, rng, g, x, y, *extra)
    if rng.random() < 0.75:
        _ego_hood(c, rng)
