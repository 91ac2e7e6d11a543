"""Rendering of the synthetic pose images and their COCO keypoint annotations.

Each image shows 1-3 articulated figures (a kinematic tree: torso, head, two-segment
arms and legs with joint angles in human ranges and human limb proportions) over a
cluttered background (gradients, low-frequency noise, shapes, lines, limb-like
distractor sticks), with occluders in front of some figures.

Left and right: a costume that tints left limbs differently from right limbs would
contradict horizontal-flip augmentation and flip testing (a mirrored figure keeps its
tint but swaps labels). So the cue is the one real people give, which survives a
mirror: the facing direction. Front-facing figures show a face (skin, eyes, nose, a
hair cap) and a bright shirt placket and collar; back-facing figures show a hair-covered
head and a square patch on the back, and their face keypoints are unlabelled (v=0), as
COCO does for people seen from behind. Given the facing and the torso, the sides follow.

Joint legibility: dark pads at elbows and knees and light gloves and shoes at the limb
ends (a costume that is the same on both sides, so it survives a mirror), and eyes and
nose drawn large enough for their few-pixel OKS tolerance. Without them a tiny network
mostly put wrists on elbows and ankles on knees.

Visibility follows COCO: 2 visible, 1 labelled but hidden (under another figure or an
occluder), 0 unlabelled (outside the image, stored as 0,0). About one image in ten
also holds a tiny unlabelled background figure (``num_keypoints`` 0), which loaders
and COCOeval must ignore.

Every image draws from its own generator seeded by (seed, split, index), so the output
does not depend on the number of worker processes.
"""
from __future__ import annotations

import cv2
import numpy as np

from hrnet_edge.data.keypoints import NUM_KEYPOINTS, PERSON_CATEGORY_ID

# Anything that changes what is drawn must bump synthetic_pose.GENERATOR_VERSION, so that
# datasets on disk are regenerated instead of silently reused.

# Segment lengths, and limb widths at (start, end), in torso lengths (hip to shoulder
# centre), after adult proportions: a figure is about 3.4 torso lengths tall.
_UPPER_ARM, _FOREARM, _THIGH, _SHIN = 0.62, 0.52, 0.88, 0.82
_W_UPPER_ARM, _W_FOREARM = (0.21, 0.16), (0.16, 0.11)
_W_THIGH, _W_SHIN = (0.31, 0.22), (0.22, 0.15)
_HEAD_RX, _HEAD_RY = 0.2, 0.25


def _unit(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)])


def _rot(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _sample_limb(rng, root, down, side, length1, length2, lift_range, bend_max):
    """Two-segment limb from ``root``: lift from ``down`` toward ``side``, then a bend."""
    lift = np.deg2rad(rng.uniform(*lift_range))
    d1 = np.cos(lift) * down + np.sin(lift) * side
    # Foreshortening stands in for limbs pointing toward or away from the camera.
    mid = root + d1 * length1 * rng.uniform(0.8, 1.0)
    d2 = _rot(d1, rng.choice([-1.0, 1.0]) * np.deg2rad(rng.uniform(0.0, bend_max)))
    end = mid + d2 * length2 * rng.uniform(0.8, 1.0)
    return mid, end


def _sample_figure(rng, hip_mid: np.ndarray, torso: float) -> dict:
    """Joint positions (17, 2), facing and head pose of one figure."""
    front = rng.random() < 0.75
    s = 1.0 if front else -1.0  # the person's left lies toward +s * right
    lean = np.deg2rad(rng.normal(0.0, 10.0) if rng.random() < 0.85 else rng.uniform(-55, 55))
    up = _rot(np.array([0.0, -1.0]), lean)
    right = _rot(np.array([1.0, 0.0]), lean)
    narrow = rng.uniform(0.75, 1.0)  # a small body turn narrows the shoulders
    sh_mid = hip_mid + up * torso
    j = np.zeros((NUM_KEYPOINTS, 2))
    half_sh, half_hip = s * right * 0.4 * torso * narrow, s * right * 0.24 * torso * narrow
    j[5], j[6] = sh_mid + half_sh, sh_mid - half_sh
    j[11], j[12] = hip_mid + half_hip, hip_mid - half_hip
    relaxed = rng.random() < 0.6
    arm_lift = (-15, 45) if relaxed else (-40, 170)
    leg_lift = (-8, 25) if relaxed else (-30, 95)
    for sh, el, wr, side in ((5, 7, 9, s), (6, 8, 10, -s)):
        j[el], j[wr] = _sample_limb(rng, j[sh], -up, side * right, _UPPER_ARM * torso,
                                    _FOREARM * torso, arm_lift, 40 if relaxed else 135)
    for hp, kn, an, side in ((11, 13, 15, s), (12, 14, 16, -s)):
        j[kn], j[an] = _sample_limb(rng, j[hp], -up, side * right, _THIGH * torso,
                                    _SHIN * torso, leg_lift, 25 if relaxed else 110)
    tilt = np.deg2rad(rng.normal(0.0, 12.0))
    hup, hright = _rot(up, tilt), _rot(right, tilt)
    head = sh_mid + up * 0.16 * torso + hup * _HEAD_RY * torso
    rx, ry = _HEAD_RX * torso, _HEAD_RY * torso
    yaw = rng.uniform(-0.25, 0.25)
    j[0] = head - hup * 0.15 * ry + hright * yaw * rx
    j[1], j[2] = (head + hup * 0.2 * ry + hright * (yaw * rx + k * s * 0.42 * rx) for k in (1, -1))
    j[3], j[4] = (head + hright * (0.2 * yaw * rx + k * s * 0.9 * rx) for k in (1, -1))
    return {"joints": j, "front": front, "s": s, "up": up, "right": right, "head": head,
            "hup": hup, "hright": hright, "rx": rx, "ry": ry, "torso": torso, "yaw": yaw}


def _shade(color, factor):
    return tuple(min(255, max(0, int(c * factor))) for c in color)


def _poly(canvases, pts, color, owner_id):
    """Fill a convex polygon on the image (antialiased) and the owner map (exact)."""
    img, owner = canvases
    p = np.round(np.asarray(pts) * 16).astype(np.int32)  # 4 fractional bits
    cv2.fillConvexPoly(img, p, color, cv2.LINE_AA, shift=4)
    if owner is not None:
        cv2.fillConvexPoly(owner, p, owner_id, cv2.LINE_8, shift=4)


def _ellipse(canvases, center, axes, angle_deg, color, owner_id):
    img, owner = canvases
    c = tuple(int(round(v * 16)) for v in center)
    a = tuple(max(1, int(round(v * 16))) for v in axes)
    cv2.ellipse(img, c, a, angle_deg, 0, 360, color, -1, cv2.LINE_AA, shift=4)
    if owner is not None:
        cv2.ellipse(owner, c, a, angle_deg, 0, 360, owner_id, -1, cv2.LINE_8, shift=4)


def _limb(canvases, p0, p1, w0, w1, color, owner_id):
    """A tapered, rounded, shaded limb from p0 (width w0) to p1 (width w1)."""
    d = p1 - p0
    n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-6)
    _ellipse(canvases, p0, (w0 / 2, w0 / 2), 0, color, owner_id)
    _ellipse(canvases, p1, (w1 / 2, w1 / 2), 0, color, owner_id)
    _poly(canvases, [p0 + n * w0 / 2, p1 + n * w1 / 2, p1 - n * w1 / 2, p0 - n * w0 / 2],
          color, owner_id)
    # Highlight along one side and shadow along the other give the limb volume.
    _poly((canvases[0], None), [p0 + n * w0 * 0.35, p1 + n * w1 * 0.35, p1 + n * w1 * 0.05,
                                p0 + n * w0 * 0.05], _shade(color, 1.25), 0)
    _poly((canvases[0], None), [p0 - n * w0 * 0.3, p1 - n * w1 * 0.3, p1 - n * w1 * 0.48,
                                p0 - n * w0 * 0.48], _shade(color, 0.7), 0)


def _random_color(rng, lo=20, hi=235):
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def _draw_head(canvases, f, colors, owner_id):
    ang = float(np.degrees(np.arctan2(f["hright"][1], f["hright"][0])))
    rx, ry, head, hup, hright = f["rx"], f["ry"], f["head"], f["hup"], f["hright"]
    # Ears first, so the head overlaps their inner half; a darker shade keeps them
    # visible against a face of the same skin.
    for k in (1, -1):
        _ellipse(canvases, head + hright * k * 0.9 * rx, (0.24 * rx, 0.35 * ry), ang,
                 _shade(colors["skin"], 0.7), owner_id)
    if not f["front"]:
        _ellipse(canvases, head, (rx, ry), ang, colors["hair"], owner_id)
        return
    _ellipse(canvases, head, (rx, ry), ang, colors["skin"], owner_id)
    img = canvases[0]
    # Hair cap: the top of the head, as a polygon over the upper half-ellipse.
    t = np.linspace(0, np.pi, 12)
    cap = [head + hup * (0.25 * ry) + hright * np.cos(a) * rx * 1.02 + hup * np.sin(a) * ry * 0.8
           for a in t]
    _poly((img, None), cap, colors["hair"], 0)
    # Eyes and nose drawn large enough to be seen at crop resolution: their OKS
    # tolerance is a few pixels, and a face turned by ``yaw`` must show where they went.
    j = f["joints"]
    for e in (1, 2):
        _ellipse((img, None), j[e], (max(0.8, 0.17 * rx),) * 2, 0, (25, 20, 20), 0)
    _ellipse((img, None), j[0], (max(0.7, 0.14 * rx), max(0.8, 0.18 * ry)), ang,
             _shade(colors["skin"], 0.5), 0)


def _draw_torso(canvases, f, colors, owner_id):
    j, t, up = f["joints"], f["torso"], f["up"]
    mid_sh, mid_hip = (j[5] + j[6]) / 2, (j[11] + j[12]) / 2
    out_sh = (j[5] - j[6]) / (np.linalg.norm(j[5] - j[6]) + 1e-6)
    neck = mid_sh + up * 0.12 * t
    _limb(canvases, neck, mid_sh, 0.16 * t, 0.18 * t, colors["skin"], owner_id)
    quad = [j[5] + out_sh * 0.1 * t + up * 0.06 * t, j[6] - out_sh * 0.1 * t + up * 0.06 * t,
            j[12] - out_sh * 0.1 * t - up * 0.05 * t, j[11] + out_sh * 0.1 * t - up * 0.05 * t]
    _poly(canvases, quad, colors["shirt"], owner_id)
    side = [quad[0], quad[3], quad[3] * 0.8 + quad[2] * 0.2, quad[0] * 0.8 + quad[1] * 0.2]
    _poly((canvases[0], None), side, _shade(colors["shirt"], 0.75), 0)
    if f["front"]:
        # Placket and V collar: the mirror-invariant "seen from the front" cue.
        _limb((canvases[0], None), mid_sh, mid_hip, 0.07 * t, 0.07 * t, colors["mark"], 0)
        _poly((canvases[0], None), [mid_sh + out_sh * 0.14 * t, mid_sh - out_sh * 0.14 * t,
                                    mid_sh - up * 0.2 * t], colors["mark"], 0)
    else:  # a square back patch: "seen from behind"
        c, a, b = mid_sh - up * 0.32 * t, out_sh * 0.16 * t, up * 0.14 * t
        _poly((canvases[0], None), [c + a + b, c - a + b, c - a - b, c + a - b], colors["mark"], 0)


def _draw_figure(canvases, f, rng, owner_id):
    j, t = f["joints"], f["torso"]
    colors = {"skin": _random_color(rng, 60, 240), "hair": _random_color(rng, 10, 120),
              "shirt": _random_color(rng), "pants": _random_color(rng),
              "mark": _random_color(rng, 170, 255)}
    sleeve = colors["shirt"] if rng.random() < 0.5 else colors["skin"]
    pad, glove = _random_color(rng, 0, 90), _random_color(rng, 190, 256)
    # Straight limbs hide where the knee or elbow is; dark pads mark it, as seams and
    # kneecaps do on real people. Light gloves and shoes mark the limb ends, so that a
    # wrist is not taken for the elbow one segment up the chain.
    for hp, kn, an in ((11, 13, 15), (12, 14, 16)):
        _limb(canvases, j[hp], j[kn], _W_THIGH[0] * t, _W_THIGH[1] * t, colors["pants"], owner_id)
        _limb(canvases, j[kn], j[an], _W_SHIN[0] * t, _W_SHIN[1] * t, colors["pants"], owner_id)
        _ellipse(canvases, j[kn], (0.13 * t, 0.13 * t), 0, pad, owner_id)
        _ellipse(canvases, j[an] - f["up"] * 0.05 * t, (0.16 * t, 0.1 * t), 0, (30, 25, 25),
                 owner_id)
        _ellipse(canvases, j[an] - f["up"] * 0.05 * t, (0.14 * t, 0.08 * t), 0, glove, owner_id)
    _draw_torso(canvases, f, colors, owner_id)
    _draw_head(canvases, f, colors, owner_id)
    for sh, el, wr in ((5, 7, 9), (6, 8, 10)):
        _limb(canvases, j[sh], j[el], _W_UPPER_ARM[0] * t, _W_UPPER_ARM[1] * t, colors["shirt"],
              owner_id)
        _limb(canvases, j[el], j[wr], _W_FOREARM[0] * t, _W_FOREARM[1] * t, sleeve, owner_id)
        _ellipse(canvases, j[el], (0.09 * t, 0.09 * t), 0, pad, owner_id)
        _ellipse(canvases, j[wr], (0.14 * t, 0.14 * t), 0, (30, 25, 25), owner_id)  # outline
        _ellipse(canvases, j[wr], (0.12 * t, 0.12 * t), 0, glove, owner_id)


def _background(rng, h: int, w: int) -> np.ndarray:
    """A linear gradient plus low-frequency colour blobs, built small and upsampled."""
    c0, c1 = np.array(_random_color(rng, 0, 255)), np.array(_random_color(rng, 0, 255))
    ang = rng.uniform(0, 2 * np.pi)
    gy, gx = np.mgrid[0:6, 0:8].astype(np.float32)
    ramp = ((gx / 7 - 0.5) * np.cos(ang) + (gy / 5 - 0.5) * np.sin(ang)) * 0.7 + 0.5
    small = c0 * (1 - ramp[..., None]) + c1 * ramp[..., None] + rng.normal(0, 30, (6, 8, 3))
    # Bilinear interpolation reproduces the linear ramp exactly, so one resize does both.
    small = np.clip(small, 0, 255).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


_NOISE_PAD = 64
_noise_banks: dict[tuple[int, int], np.ndarray] = {}


def _add_noise(img: np.ndarray, rng, sigma: float) -> np.ndarray:
    """Add Gaussian pixel noise cut at a random offset from a fixed bank.

    Drawing 200k normals per image was the slowest step of the generator; a random
    window of one fixed bank is as good for training and costs nothing.
    """
    h, w = img.shape[:2]
    bank = _noise_banks.get((h, w))
    if bank is None:
        shape = (h + _NOISE_PAD, w + _NOISE_PAD, 3)
        bank = np.random.default_rng(12345).standard_normal(shape, dtype=np.float32)
        _noise_banks[(h, w)] = bank
    dy, dx = (int(v) for v in rng.integers(0, _NOISE_PAD, 2))
    return cv2.add(img, bank[dy:dy + h, dx:dx + w] * np.float32(sigma), dtype=cv2.CV_8U)


def _clutter(img, rng, count: int, owner=None, near=None, size=(0.05, 0.3)):
    """Random shapes; with ``owner``/``near`` they are occluders placed near a point."""
    h, w = img.shape[:2]
    canv = (img, owner)
    for _ in range(count):
        r = rng.uniform(*size) * min(h, w)
        c = near + rng.normal(0, r, 2) if near is not None else rng.uniform([0, 0], [w, h])
        col, kind = _random_color(rng, 0, 255), rng.integers(0, 5)
        if kind == 0:
            _ellipse(canv, c, (r, r * rng.uniform(0.3, 1.0)), rng.uniform(0, 180), col, 255)
        elif kind == 1:
            ang = rng.uniform(0, np.pi)
            a, b = _unit(ang) * r, _unit(ang + np.pi / 2) * r * rng.uniform(0.3, 1.0)
            _poly(canv, [c + a + b, c - a + b, c - a - b, c + a - b], col, 255)
        elif kind == 2 and near is None:
            p = c + rng.normal(0, r, 2)
            cv2.line(img, tuple(int(v) for v in c), tuple(int(v) for v in p), col,
                     int(rng.integers(1, 5)), cv2.LINE_AA)
        elif kind == 3:
            _poly(canv, c + rng.normal(0, r * 0.6, (3, 2)), col, 255)
        else:  # a limb-like stick, so that "a thick shaded bar" alone is not a limb
            p = c + _unit(rng.uniform(0, 2 * np.pi)) * r
            _limb(canv, c, p, r * rng.uniform(0.15, 0.4), r * rng.uniform(0.1, 0.3), col, 255)


def _place_figures(rng, h: int, w: int) -> list[tuple[np.ndarray, float]]:
    n = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
    placed: list[tuple[np.ndarray, float]] = []
    for _ in range(n * 8):
        if len(placed) == n:
            break
        torso = rng.uniform(0.42, 0.85) * h / 3.4  # a figure is about 3.4 torso lengths tall
        hip = np.array([rng.uniform(0.08, 0.92) * w,
                        rng.uniform(h * 0.12 + 1.5 * torso, h - 0.8 * torso)])
        # Keep hips apart: overlap of limbs is welcome, one figure hiding another is not.
        if all(np.linalg.norm(hip - p) > 1.0 * (t + torso) for p, t in placed):
            placed.append((hip, torso))
    return placed


def _annotation(f, owner: np.ndarray, owner_id: int, silhouette: np.ndarray) -> dict:
    h, w = owner.shape
    kps = []
    for k, (x, y) in enumerate(f["joints"]):
        xi, yi = int(round(x)), int(round(y))
        if not (0 <= xi < w and 0 <= yi < h) or (not f["front"] and k < 3):
            kps += [0.0, 0.0, 0]
        else:
            kps += [round(float(x), 2), round(float(y), 2), 2 if owner[yi, xi] == owner_id else 1]
    return {"keypoints": kps, "num_keypoints": sum(1 for v in kps[2::3] if v > 0),
            **_box_area(silhouette), "iscrowd": 0, "category_id": PERSON_CATEGORY_ID}


def _box_area(mask: np.ndarray) -> dict:
    """COCO ``bbox`` [x, y, w, h] and ``area`` (pixel count) of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    x0, y0 = float(xs.min()), float(ys.min())
    return {"bbox": [x0, y0, float(xs.max()) - x0 + 1, float(ys.max()) - y0 + 1],
            "area": float(len(xs))}


def render_image(rng: np.random.Generator,
                 image_size: tuple[int, int]) -> tuple[np.ndarray, list[dict]]:
    """Render one RGB image and the COCO annotations (without ids) of its figures."""
    h, w = image_size
    img = _background(rng, h, w)
    _clutter(img, rng, int(rng.integers(3, 11)))
    owner = np.zeros((h, w), np.uint8)
    figures, silhouettes = [], []
    if rng.random() < 0.1:  # a tiny, unlabelled person far away, as COCO leaves them
        at = rng.uniform([0.1 * w, 0.3 * h], [0.9 * w, 0.9 * h])
        small = _sample_figure(rng, at, rng.uniform(3, 5))
        _draw_figure((img, owner), small, rng, 200)
    for i, (hip, torso) in enumerate(_place_figures(rng, h, w), start=1):
        f = _sample_figure(rng, hip, torso)
        _draw_figure((img, owner), f, rng, i)
        figures.append(f)
        silhouettes.append(owner == i)
    for f in figures:
        if rng.random() < 0.25:
            part = f["joints"][rng.integers(5, NUM_KEYPOINTS)]
            size = 0.6 * f["torso"] / min(h, w)
            _clutter(img, rng, int(rng.integers(1, 3)), owner, part, (size, size))
    anns = [_annotation(f, owner, i, s)
            for i, (f, s) in enumerate(zip(figures, silhouettes), start=1) if s.any()]
    if (owner == 200).any():
        anns.append({"keypoints": [0] * (3 * NUM_KEYPOINTS), "num_keypoints": 0, "iscrowd": 0,
                     **_box_area(owner == 200), "category_id": PERSON_CATEGORY_ID})
    img = _add_noise(img, rng, rng.uniform(2, 8))
    if rng.random() < 0.4:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    return img, anns
