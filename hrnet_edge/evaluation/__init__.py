"""Task metrics for models and exported artifacts alike (NumPy in, metrics out)."""
from hrnet_edge.evaluation.pose import (
    PoseEvalResult,
    evaluate_pose,
    keypoint_agreement,
    oks_ap,
    pck,
    predict_heatmaps,
    to_coco_results,
)

__all__ = ["PoseEvalResult", "evaluate_pose", "keypoint_agreement", "oks_ap", "pck",
           "predict_heatmaps", "to_coco_results"]
