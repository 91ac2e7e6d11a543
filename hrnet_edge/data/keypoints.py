"""COCO person keypoint constants: names, skeleton, flip pairs and OKS sigmas.

These are facts of the COCO keypoint format (the 2017 person_keypoints files and
the COCO evaluation code), written out once here so that the data loader, the
evaluation, the synthetic generator and the exported metadata all agree.
"""
from __future__ import annotations

import numpy as np

# A person box grows by this factor around its centre before cropping (HRNet's 1.25);
# exported pose metadata states it (output.person_crop.padding).
CROP_PADDING = 1.25

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)

# COCO's 19 limbs, 0-based (the annotation files store them 1-based).
SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12),
    (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2),
    (1, 3), (2, 4), (3, 5), (4, 6),
)

# Left/right pairs swapped by a horizontal flip.
FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16),
)

# Per-keypoint falloff of the OKS similarity, from the COCO evaluation code.
OKS_SIGMAS = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72,
     0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89],
    dtype=np.float64,
) / 10.0

PERSON_CATEGORY_ID = 1


def flip_permutation(num_joints: int = NUM_KEYPOINTS,
                     flip_pairs=FLIP_PAIRS) -> np.ndarray:
    """Index array ``p`` such that ``flipped[..., j] = original[..., p[j]]`` swaps sides."""
    perm = np.arange(num_joints)
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return perm


def coco_person_category() -> dict:
    """The ``categories`` entry of a COCO keypoints file (skeleton 1-based, as COCO has it)."""
    return {
        "supercategory": "person",
        "id": PERSON_CATEGORY_ID,
        "name": "person",
        "keypoints": list(KEYPOINT_NAMES),
        "skeleton": [[a + 1, b + 1] for a, b in SKELETON],
    }
