"""Background and ground of the synthetic street scenes, and the whole scene.

See :mod:`hrnet_edge.data.synthetic_seg_render` for the painting model and camera.
Everything along the street (road edges, sidewalks, facades, walls, fences, lane
markings) is laid out in metres of depth and converted to rows through the camera, so
textures shrink toward the vanishing point as in a photograph.
"""
from __future__ import annotations

import cv2
import numpy as np

from hrnet_edge.data.synthetic_seg_objects import add_objects, crown
from hrnet_edge.data.synthetic_seg_render import (BUILDING, CAMERA_HEIGHT, FENCE, PARKING, ROAD,
                                                  SIDEWALK, SKY, TERRAIN, VEGETATION, WALL, Canvas,
                                                  Street, Texture, finish, jitter, make_street,
                                                  smooth_noise, texture, windows_texture)

_FACADE_COLOURS = ((190, 180, 160), (150, 150, 150), (170, 120, 100), (210, 205, 195),
                   (120, 110, 100), (180, 160, 130), (140, 150, 160))
_GLASS = ((40, 50, 60), (90, 110, 130), (60, 60, 55))


def _sky(c: Canvas, rng: np.random.Generator, g: Street) -> None:
    clear = rng.random() < 0.6
    top = jitter(rng, (70, 120, 195) if clear else (150, 155, 165), 20)
    low = jitter(rng, (175, 200, 230) if clear else (205, 208, 212), 15)
    clouds = rng.uniform(0, 60 if clear else 25)

    def make(h, w, x0, y0):
        t = np.clip((np.arange(y0, y0 + h, dtype=np.float32) / max(g.yh, 1)), 0, 1)[:, None, None]
        out = np.asarray(top, np.float32) * (1 - t) + np.asarray(low, np.float32) * t
        puff = np.maximum(smooth_noise(rng, h, w, 40), 0)[..., None]
        return out + clouds * puff

    c.paint(c.rect(0, 0, c.w, c.h), SKY, make)


def _skyline(c: Canvas, rng: np.random.Generator, g: Street) -> None:
    x = -rng.uniform(0, 0.1) * c.w
    while x < c.w:
        bw = c.w * rng.uniform(0.06, 0.25)
        if rng.random() > 0.15:  # the rest are gaps showing the sky
            top = g.yh - c.h * rng.uniform(0.06, 0.45)
            wall = jitter(rng, _FACADE_COLOURS[rng.integers(7)], 20)
            glass = jitter(rng, _GLASS[rng.integers(3)], 15)
            pitch = (rng.uniform(5, 11), rng.uniform(7, 13))
            c.paint(c.rect(x, top, x + bw, g.yh + 5), BUILDING,
                    lambda hh, ww, x0, y0, a=wall, b=glass, p=pitch:
                    windows_texture(rng, a, b, (hh, ww), p, (0.5, 0.55)))
        x += bw


def _background_trees(c: Canvas, rng: np.random.Generator, g: Street) -> None:
    for _ in range(int(rng.integers(0, 6))):
        cx, r = rng.uniform(0, c.w), c.w * rng.uniform(0.025, 0.08)
        cy = g.yh - r * rng.uniform(0.5, 2.0)
        c.paint(c.line((cx, cy), (cx, g.yh + 2), r * 0.15), VEGETATION,
                jitter(rng, (80, 60, 45), 15))
        crown(c, rng, cx, cy, r)


def _tiles(rng: np.random.Generator, g: Street, base) -> Texture:
    """Sidewalk paving: a perspective grid of ``tile``-metre slabs on blotchy stone."""
    tile, dark = rng.uniform(0.3, 0.8), rng.uniform(12, 30)
    stone = texture(rng, base, low=8, high=5, cell=10)

    def make(h, w, x0, y0):
        out = stone(h, w, x0, y0)
        d = np.maximum(np.arange(y0, y0 + h + 1, dtype=np.float64) - g.yh, 0.5)
        z = np.floor(g.focal * CAMERA_HEIGHT / d / tile)
        lat = np.floor((np.arange(x0, x0 + w + 1) - g.vx)[None, :] * CAMERA_HEIGHT / d[:, None] / tile)
        edge = (z[1:] != z[:-1])[:, None] | (lat[:-1, 1:] != lat[:-1, :-1])
        edge &= (d[:-1] > 3 * CAMERA_HEIGHT / tile)[:, None]  # no grid where slabs < 3 px
        out[edge] -= dark
        return out

    return make


def _ground(c: Canvas, rng: np.random.Generator, g: Street) -> None:
    v = (g.vx, g.yh)
    for x0, x1, bottom_out, bottom_road in ((-2, g.vx, g.out_l, g.road_l),
                                            (g.vx, c.w + 2, g.out_r, g.road_r)):
        beyond = c.rect(x0, g.yh, x1, c.h + 2)
        if rng.random() < 0.5:
            c.paint(beyond, TERRAIN, texture(rng, jitter(rng, (120, 140, 75), 25), low=12, high=8,
                                             cell=6, chroma=6))
        else:
            c.paint(beyond, SIDEWALK, _tiles(rng, g, jitter(rng, (165, 155, 150), 20)))
        c.paint(c.poly([v, (bottom_out, c.h + 2), (bottom_road, c.h + 2)]), SIDEWALK,
                _tiles(rng, g, jitter(rng, (160, 150, 150), 25)))
        if rng.random() < 0.3:  # a grass verge between curb and sidewalk
            strip = (bottom_out - bottom_road) * rng.uniform(0.15, 0.35)
            c.paint(c.poly([v, (bottom_road + strip, c.h + 2), (bottom_road, c.h + 2)]), TERRAIN,
                    texture(rng, jitter(rng, (110, 140, 70), 20), low=10, high=8, cell=5))
    grey = rng.uniform(70, 115)
    c.paint(c.poly([v, (g.road_l, c.h + 2), (g.road_r, c.h + 2)]), ROAD,
            texture(rng, jitter(rng, (grey, grey, grey + 3), 6), low=7, high=6, cell=14))
    if rng.random() < 0.15:
        side = g.road_l if rng.random() < 0.5 else g.road_r
        inner = side + (g.vx - side) * rng.uniform(0.15, 0.3)
        c.paint(c.poly([v, (side, c.h + 2), (inner, c.h + 2)]), PARKING,
                texture(rng, jitter(rng, (grey + 20, grey + 15, grey + 10), 10), low=6, high=10))
    _markings(c, rng, g)


def _depth_row(g: Street, z: float) -> float:
    return g.yh + g.focal * CAMERA_HEIGHT / z


def _markings(c: Canvas, rng: np.random.Generator, g: Street) -> None:
    """Dashed centre line, optional edge lines and zebra crossing (all road)."""
    paint = jitter(rng, (215, 215, 205), 20)
    z_near = g.focal * CAMERA_HEIGHT / (c.h + 2 - g.yh)
    half_m = 0.075
    centre = g.road_l + (g.road_r - g.road_l) * rng.uniform(0.3, 0.7)
    z, dash = z_near - rng.uniform(0, 6), rng.uniform(2, 4)
    while z < 150:
        ya, yb = _depth_row(g, max(z + dash, 0.1)), _depth_row(g, max(z, 0.1))
        quad = [(g.x_at(centre, y) + s * g.px(half_m, y), y) for y, s in
                ((ya, -1), (ya, 1), (yb, 1), (yb, -1))]
        c.paint(c.poly(quad), ROAD, paint)
        z += dash * rng.uniform(1.5, 2.5)
    for edge, inward in ((g.road_l, 1), (g.road_r, -1)):
        if rng.random() < 0.5:
            x_in = edge + inward * g.px(0.35, c.h)  # 35 cm inside the curb
            c.paint(c.poly([(g.vx, g.yh), (x_in, c.h + 2),
                            (x_in + inward * g.px(0.12, c.h), c.h + 2)]), ROAD, paint)
    if rng.random() < 0.25:
        z0 = rng.uniform(z_near + 2, 25)
        ya, yb = _depth_row(g, z0 + 3.5), _depth_row(g, z0)
        lat = (g.road_l - g.vx) * CAMERA_HEIGHT / (c.h - g.yh)
        end = (g.road_r - g.vx) * CAMERA_HEIGHT / (c.h - g.yh)
        while lat < end:
            xs = [g.vx + m * (y - g.yh) / CAMERA_HEIGHT for m, y in
                  ((lat, ya), (lat + 0.5, ya), (lat + 0.5, yb), (lat, yb))]
            c.paint(c.poly(list(zip(xs, (ya, ya, yb, yb)))), ROAD, paint)
            lat += 1.0


def _along(g: Street, bottom_x: float, z0: float, z1: float, h0: float, h1: float) -> np.ndarray:
    """Quad of a vertical plane on the line ``bottom_x`` from depth z0 to z1, from
    height h0 to h1 metres: near-bottom, far-bottom, far-top, near-top."""
    pts = []
    for z, hm in ((z0, h0), (z1, h0), (z1, h1), (z0, h1)):
        y = _depth_row(g, z)
        pts.append((g.x_at(bottom_x, y), y - g.px(hm, y)))
    return np.array(pts)


def _warped(tex: np.ndarray, quad: np.ndarray):
    """Texture callable mapping the frontal image ``tex`` onto ``quad`` (perspective)."""
    th, tw = tex.shape[:2]
    src = np.float32([(0, th), (tw, th), (tw, 0), (0, 0)])
    m = cv2.getPerspectiveTransform(src, quad.astype(np.float32))

    def make(h, w, x0, y0):
        shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
        return cv2.warpPerspective(tex, shift @ m, (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)

    return make


def _facades(c: Canvas, rng: np.random.Generator, g: Street, bottom_x: float) -> None:
    """1-3 buildings standing on the sidewalk's outer line, near to far."""
    z = g.focal * CAMERA_HEIGHT / (c.h - g.yh) * 0.7
    for _ in range(int(rng.integers(1, 4))):
        length, height = rng.uniform(8, 40), rng.uniform(6, 25)
        quad = _along(g, bottom_x, z, z + length, 0, height)
        px_m = 10.0  # texture pixels per metre: sharp windows on near facades
        size = (max(8, int(height * px_m)), max(8, int(length * px_m)))
        tex = windows_texture(rng, jitter(rng, _FACADE_COLOURS[rng.integers(7)], 20),
                              jitter(rng, _GLASS[rng.integers(3)], 15), size,
                              (rng.uniform(2.5, 4) * px_m, rng.uniform(3, 3.6) * px_m),
                              (rng.uniform(0.35, 0.6), rng.uniform(0.4, 0.6)))
        c.paint(c.poly(quad), BUILDING, _warped(tex, quad))
        z += length
        if rng.random() < 0.3:
            z += rng.uniform(3, 15)  # a gap: what lies behind shows through


def _wall_or_fence(c: Canvas, rng: np.random.Generator, g: Street, bottom_x: float) -> None:
    z0 = g.focal * CAMERA_HEIGHT / (c.h - g.yh) * rng.uniform(0.7, 3)
    z1 = z0 + rng.uniform(5, 40)
    if rng.random() < 0.5:
        quad = _along(g, bottom_x, z0, z1, 0, rng.uniform(0.8, 2.5))
        c.paint(c.poly(quad), WALL, texture(rng, jitter(rng, (155, 150, 140), 25), low=10, high=6,
                                            cell=8))
        return
    top, colour = rng.uniform(1.0, 2.0), jitter(rng, (90, 95, 85), 30)
    step = rng.uniform(0.12, 0.4)
    for z in np.arange(z0, z1, step):
        q = _along(g, bottom_x, z, z, 0, top)
        c.paint(c.line(q[0], q[3], max(1.0, g.px(0.04, q[0][1]))), FENCE, colour)
    for hm in (0.1, top * 0.5, top):
        q = _along(g, bottom_x, z0, z1, hm, hm)
        c.paint(c.line(q[0], q[1], max(1.0, g.px(0.06, q[0][1]))), FENCE, colour)


def _shadows(c: Canvas, rng: np.random.Generator, g: Street) -> None:
    for _ in range(int(rng.integers(0, 4))):
        ya = rng.uniform(g.yh, c.h)
        yb = ya + c.h * rng.uniform(0.03, 0.25)
        s1, s2 = rng.uniform(-0.2, 0.2, 2) * c.h
        c.shade(c.poly([(-2, ya), (c.w + 2, ya + s1), (c.w + 2, yb + s2), (-2, yb)]),
                rng.uniform(0.45, 0.8))


def render_street(rng: np.random.Generator, image_size: tuple[int, int],
                  flat: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One street scene.

    Args:
        rng: the scene's generator (everything drawn comes from it).
        image_size: (H, W).
        flat: paint class colours without texture or lighting (for checks).

    Returns:
        (uint8 HxWx3 RGB image, uint8 HxW Cityscapes labelIds).
    """
    h, w = image_size
    c, g = Canvas(h, w, flat), make_street(rng, h, w)
    _sky(c, rng, g)
    _skyline(c, rng, g)
    _background_trees(c, rng, g)
    _ground(c, rng, g)
    for bottom_x in (g.out_l, g.out_r):
        if rng.random() < 0.65:
            _facades(c, rng, g, bottom_x)
        if rng.random() < 0.5:
            _wall_or_fence(c, rng, g, bottom_x)
    _shadows(c, rng, g)
    add_objects(c, rng, g)
    return finish(c, rng), c.lab
