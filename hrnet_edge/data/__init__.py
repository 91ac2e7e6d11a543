"""Datasets, synthetic generators, crops and heatmap targets."""
from hrnet_edge.data.coco_keypoints import CocoKeypoints, box_to_center_scale, load_coco_json
from hrnet_edge.data.heatmaps import (
    affine_points,
    decode_heatmaps,
    flip_heatmaps,
    gaussian_targets,
    get_affine_transform,
    heatmap_to_image,
    heatmap_to_input,
    input_to_heatmap,
)
from hrnet_edge.data.keypoints import (
    FLIP_PAIRS,
    KEYPOINT_NAMES,
    NUM_KEYPOINTS,
    OKS_SIGMAS,
    SKELETON,
    coco_person_category,
    flip_permutation,
)
from hrnet_edge.data.synthetic_pose import generate_synthetic_pose

__all__ = [
    "CocoKeypoints", "box_to_center_scale", "load_coco_json",
    "affine_points", "decode_heatmaps", "flip_heatmaps", "gaussian_targets",
    "get_affine_transform", "heatmap_to_image", "heatmap_to_input", "input_to_heatmap",
    "FLIP_PAIRS", "KEYPOINT_NAMES", "NUM_KEYPOINTS", "OKS_SIGMAS", "SKELETON",
    "coco_person_category", "flip_permutation", "generate_synthetic_pose",
]
